"""Every malformed MAILAPI setting is reported by its own system check id."""

from __future__ import annotations

import pytest

from django_mailapi.checks import check_settings, summaries
from django_mailapi.conf import SETTINGS
from tests.helpers import check_ids as ids

BASE = {"API_KEY": "re_x"}


def test_valid_settings_pass(settings):
    assert ids(settings, {**BASE, "DAILY_LIMIT": 100, "RATE_LIMIT": 5}) == []


def test_missing_api_key_is_e001_with_a_hint(settings):
    settings.MAILAPI = {}
    (message,) = check_settings()
    assert message.id == "mailapi.E001"
    assert "MAILAPI_API_KEY" in message.hint


def test_api_key_resolver_replaces_the_key(settings):
    assert ids(settings, {"API_KEY_RESOLVER": "os.getenv"}) == []


def test_mailapi_must_be_a_dict(settings):
    assert ids(settings, ["nope"]) == ["mailapi.E000"]


@pytest.mark.parametrize(
    ("key", "value", "check_id"),
    [
        ("PROVIDER", "carrier-pigeon", "mailapi.E002"),
        ("PROVIDER", "os.path.join", "mailapi.E002"),
        ("BASE_URL", "ftp://api.example.com", "mailapi.E003"),
        ("TIMEOUT", 0, "mailapi.E005"),
        ("TIMEOUT", "10", "mailapi.E005"),
        ("DEFAULT_ORG", "", "mailapi.E006"),
        ("ORG_RESOLVER", "no.such.function", "mailapi.E007"),
        ("DAILY_LIMIT", -1, "mailapi.E008"),
        ("MONTHLY_LIMIT", "lots", "mailapi.E009"),
        ("QUOTA_UNIT", "byte", "mailapi.E010"),
        ("ON_QUOTA_EXCEEDED", "panic", "mailapi.E011"),
        ("MAX_RETRIES", -2, "mailapi.E012"),
        ("QUEUE", "", "mailapi.E013"),
        ("BATCH_SIZE", 101, "mailapi.E014"),
        ("BATCH_SIZE", 0, "mailapi.E014"),
        ("RATE_LIMIT", -5, "mailapi.E015"),
        ("API_KEY_RESOLVER", 42, "mailapi.E016"),
        ("CHECK_QUOTA_ON_ENQUEUE", "yes", "mailapi.E017"),
        ("KEEP_SENT_PAYLOAD", 1, "mailapi.E018"),
        ("LEASE_SECONDS", 0, "mailapi.E019"),
        ("SWEEP_AFTER_SECONDS", 1.5, "mailapi.E020"),
        ("MAX_ETA_SECONDS", 0, "mailapi.E021"),
        ("RETRY_BASE_DELAY", "2", "mailapi.E022"),
        ("RETRY_MAX_DELAY", -1, "mailapi.E023"),
        ("API_KEY", 42, "mailapi.E001"),
        ("SPEED", "fast", "mailapi.W001"),
        ("LEASE_SECONDS", 14, "mailapi.W003"),
    ],
)
def test_each_malformed_setting_has_its_own_id(settings, key, value, check_id):
    assert ids(settings, {**BASE, key: value}) == [check_id]


def test_a_lease_shorter_than_a_request_is_w003_with_the_length_to_set(settings):
    settings.MAILAPI = {**BASE, "LEASE_SECONDS": 20, "TIMEOUT": 30.0}
    (message,) = check_settings()
    assert message.id == "mailapi.W003"
    assert "at least 35" in message.hint
    assert ids(settings, {**BASE, "LEASE_SECONDS": 35, "TIMEOUT": 30.0}) == []


def test_every_setting_has_a_check_id_of_its_own():
    declared = [setting.check_id for setting in SETTINGS.values()]
    assert len(declared) == len(set(declared)) == len(SETTINGS)
    assert len({check_id for check_id, _ in summaries()}) == len(summaries())


def test_mailers_options_are_checked_too(settings):
    settings.MAILERS = {
        "bulk": {"BACKEND": "django_mailapi.backend.EmailBackend", "OPTIONS": {"batch_size": 500}},
        "smtp": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"},
    }
    messages = check_settings()
    assert [(m.id, m.obj) for m in messages] == [("mailapi.E014", "settings.MAILERS['bulk']")]


# Django 6.1's `check` runs the model checks against every database, and asking SQLite
# (tests/settings.py's "outbox") whether it has JSON support is a query.
@pytest.mark.django_db(databases="__all__")
def test_checks_run_through_manage_py_check(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.MAILAPI = {}
    with pytest.raises(SystemCheckError, match=r"mailapi\.E001"):
        call_command("check")
