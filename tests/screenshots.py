"""Take the README's admin-tour screenshots again::

    .venv/bin/python -m pytest -p no:randomly tests/screenshots.py

It seeds the tour's data (tests/admin_tour.py) in the test database, serves the admin on
a live server and saves, from headless Chromium at 1,280 px wide, docs/admin-home.png,
docs/admin-email.png, docs/admin-failed-sends.png and docs/admin-usage-chart.png.
Not part of the suite (its name does not start with test_).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from tests.admin_tour import seed_tour
from tests.helpers import ROOT, headless_chromium, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

PASSWORD = "screenshots-pw"
WIDTH = 1280


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    driver = headless_chromium(
        tmp_path / "chromium",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},800",
    )
    yield driver
    driver.quit()


def shoot(driver: Any, name: str, height: int | None = None) -> None:
    """Save the page at 1,280 px wide, ``height`` px tall (the whole page if None)."""
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(height or full, 2400))
    driver.save_screenshot(str(ROOT / "docs" / name))
    driver.set_window_size(WIDTH, 800)


def test_take_the_admin_tour_screenshots(live_server: Any, chromium: Any) -> None:
    from selenium.webdriver.common.by import By

    target = seed_tour()
    get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
    (ROOT / "docs").mkdir(exist_ok=True)
    chromium.get(f"{live_server.url}/admin/login/?next=/admin/django_mailapi/")
    chromium.find_element(By.ID, "id_username").send_keys("admin")
    chromium.find_element(By.ID, "id_password").send_keys(PASSWORD)
    chromium.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: chromium.find_elements(By.ID, "mailapi-health"), 10)
    shoot(chromium, "admin-home.png", 900)

    chromium.get(f"{live_server.url}/admin/django_mailapi/outboundemail/{target.pk}/change/")
    wait_for(lambda: chromium.find_elements(By.ID, "mailapi-summary"), 10)
    shoot(chromium, "admin-email.png", 1500)

    chromium.get(f"{live_server.url}/admin/django_mailapi/failedsend/")
    wait_for(lambda: chromium.find_elements(By.ID, "result_list"), 10)
    shoot(chromium, "admin-failed-sends.png", 800)

    chromium.get(f"{live_server.url}/admin/django_mailapi/orgquota/usage-chart/?org=acme")
    wait_for(lambda: chromium.find_elements(By.CSS_SELECTOR, ".mailapi-usage-chart-page"), 10)
    shoot(chromium, "admin-usage-chart.png", 800)
