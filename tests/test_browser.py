"""The Mail API admin in a real headless Chromium: filter, read, retry.

The README's admin-tour screenshots are taken by tests/screenshots.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from django_mailapi import errors
from django_mailapi.models import OutboundEmail, Status
from tests.admin_tour import seed_tour
from tests.factories import fail, make_email
from tests.helpers import headless_chromium, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

PASSWORD = "browser-test-pw"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = headless_chromium(
        tmp_path / "chromium",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
    )
    yield driver
    driver.quit()


@pytest.fixture
def quiet_queue(settings: Any) -> Iterator[str]:
    """A queue no worker reads, so re-queued emails stay queued for the assertions."""
    queue = f"{settings.MAILAPI['QUEUE']}-browser"
    settings.MAILAPI = {**settings.MAILAPI, "QUEUE": queue}
    yield queue
    try:
        import redis

        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1).delete(queue)
    except Exception:  # no Redis: the dispatch failed quietly and left nothing behind
        pass


def realistic_failures() -> OutboundEmail:
    """A morning's worth of failures across orgs and codes; returns the 500 one."""
    now = timezone.now().replace(microsecond=0)
    rows = [
        ("acme", "invoices@acme.test", "Invoice #4411", "invalid_from_address", 422),
        ("acme", "ops@acme.test", "Weekly report", "daily_quota_exceeded", None),
        ("globex", "ann@globex.test", "Password reset", "validation_error", 403),
        ("globex", "bob@globex.test", "Welcome to Globex", "rate_limit_exceeded", 429),
        ("initech", "tps@initech.test", "TPS reports", "security_error", 451),
        ("initech", "peter@initech.test", "Your order has shipped", "invalid_attachment", 422),
        ("acme", "cfo@acme.test", "Quarterly statement", "retries_exhausted", None),
        ("globex", "hank@globex.test", "Receipt", "missing_required_field", 422),
    ]
    for minutes, (org, to, subject, code, status) in enumerate(rows, start=2):
        at = now - dt.timedelta(minutes=minutes * 7)
        email = make_email(org=org, to=to, subject=subject, created_at=at)
        fail(email, code, status, created_at=at)
    target = make_email(org="acme", to="dana@acme.test", subject="Order confirmation")
    fail(target, "application_error", 500, created_at=now, attempt=1, will_retry=True)
    fail(target, "application_error", 500, created_at=now, attempt=2)
    return target


def test_an_admin_filters_failed_sends_by_code_and_retries_the_email(
    live_server: Any, browser: Any, quiet_queue: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
    target = realistic_failures()
    changelist = "/admin/django_mailapi/failedsend/"

    browser.get(f"{live_server.url}/admin/login/?next={changelist}")
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: browser.find_elements(By.ID, "changelist-filter"), 10)

    browser.find_element(
        By.CSS_SELECTOR, "#changelist-filter a[href*='error_code=application_error']"
    ).click()
    wait_for(lambda: "error_code=application_error" in browser.current_url, 10)
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 2
    action = errors.suggested_action("resend", "application_error", 500)
    shown = browser.find_elements(By.CSS_SELECTOR, "td.field-suggested_action_short span")
    assert {span.get_attribute("title") for span in shown} == {action}

    browser.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("retry_emails")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()

    message = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".messagelist .success"))
    assert message[0].text == "Re-queued 1 email."
    target.refresh_from_db()
    assert target.status == Status.QUEUED
    assert target.attempts == 0
    others = OutboundEmail.objects.exclude(pk=target.pk)
    assert set(others.values_list("status", flat=True)) == {Status.FAILED}


def login(browser: Any, live_server: Any, next_url: str) -> None:
    from selenium.webdriver.common.by import By

    get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
    browser.get(f"{live_server.url}/admin/login/?next={next_url}")
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def sideways_overflow(browser: Any) -> dict[str, int]:
    """How many pixels the page, and the changelist's results box (it scrolls on its own),
    are wider than their windows: {} when neither scrolls sideways."""
    widths = browser.execute_script(
        "const page = document.documentElement;"
        "const results = document.querySelector('#changelist .results') || page;"
        "return {page: page.scrollWidth - page.clientWidth,"
        " results: results.scrollWidth - results.clientWidth};"
    )
    return {box: pixels for box, pixels in widths.items() if pixels > 0}


@pytest.mark.services
def test_on_call_from_home_to_a_failed_emails_cause_and_one_click_retry_that_delivers(
    live_server: Any, browser: Any, sandbox: Any, celery_worker: Any, server_db: None
) -> None:
    from selenium.webdriver.common.by import By

    target = seed_tour()
    browser.set_window_size(1280, 800)
    assert browser.execute_script("return window.innerWidth") <= 1280
    login(browser, live_server, "/admin/django_mailapi/")

    # Home: today's failed emails, one click into the filtered list.
    failed = wait_for(
        lambda: browser.find_elements(
            By.CSS_SELECTOR, "#mailapi-health a[href*='status__exact=failed']"
        ),
        10,
    )
    failed[0].click()
    wait_for(lambda: browser.find_elements(By.ID, "result_list"), 10)
    assert sideways_overflow(browser) == {}, "the email list scrolls sideways at 1,280 px"
    browser.find_element(
        By.CSS_SELECTOR, f"#result_list a[href*='/outboundemail/{target.pk}/change/']"
    ).click()

    # The email page: the cause and what to do, without scrolling.
    summary = wait_for(lambda: browser.find_elements(By.ID, "mailapi-summary"), 10)[0]
    assert "rate_limit_exceeded (429) \u00d7 9" in summary.text
    action = browser.find_element(By.CSS_SELECTOR, "#mailapi-summary .mailapi-action")
    assert errors.suggested_action("resend", "rate_limit_exceeded", 429) in action.text
    bottom = browser.execute_script("return arguments[0].getBoundingClientRect().bottom", action)
    assert bottom <= browser.execute_script("return window.innerHeight")
    retry = browser.find_element(By.ID, "mailapi-retry")
    assert browser.execute_script("return arguments[0].getBoundingClientRect().bottom", retry) <= (
        browser.execute_script("return window.innerHeight")
    )

    retry.click()
    message = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".messagelist .success"))
    assert message[0].text == f"Re-queued email #{target.pk}: a worker sends it now."
    # Queued again, then delivered by the worker to the sandbox.
    wait_for(lambda: OutboundEmail.objects.get(pk=target.pk).status == Status.SENT, 30)
    (delivered,) = [e for e in sandbox.emails if e["payload"]["to"] == ["dana@umbrella.test"]]
    assert delivered["payload"]["subject"] == "Your order has shipped"

    # The failed sends list fits too, and "Show counts" works on both lists.
    for changelist in ("failedsend", "outboundemail"):
        browser.get(f"{live_server.url}/admin/django_mailapi/{changelist}/")
        wait_for(lambda: browser.find_elements(By.ID, "result_list"), 10)
        assert sideways_overflow(browser) == {}, f"the {changelist} list scrolls sideways"
        if django.VERSION < (5, 0):
            continue  # facet counts ("Show counts") arrived in Django 5.0
        browser.find_element(By.PARTIAL_LINK_TEXT, "Show counts").click()
        wait_for(lambda: "_facets=" in browser.current_url, 10)
        assert browser.find_elements(By.ID, "changelist-filter")
        assert "Server Error" not in browser.page_source
