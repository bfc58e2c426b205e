"""The failed-sends admin in a real headless Chromium: filter, read, retry.

Set MAILAPI_SCREENSHOT=docs/admin-failed-sends.png to also save the screenshot the
README shows (the changelist with the rows this test creates).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from django_mailapi import errors
from django_mailapi.models import OutboundEmail, Status
from tests.factories import fail, make_email
from tests.helpers import ROOT, service_missing, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

PASSWORD = "browser-test-pw"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        service_missing("Selenium")
    if not (chromium and driver_path):
        service_missing("Chromium and chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
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

    if os.environ.get("MAILAPI_SCREENSHOT"):
        browser.find_element(By.ID, "toggle-nav-sidebar").click()  # room for the columns
        browser.save_screenshot(str(ROOT / os.environ["MAILAPI_SCREENSHOT"]))

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
