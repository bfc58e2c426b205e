"""Typed, lazily read settings over ``settings.MAILAPI``.

Nothing is cached: every attribute reads Django's settings at the moment it is used,
so ``override_settings(MAILAPI=...)`` works in tests without any reset.

Options can also come from a Django 6.1 ``MAILERS`` entry's ``OPTIONS`` (passed to the
backend as keyword arguments, in either case: ``api_key`` or ``API_KEY``). Those
override ``MAILAPI`` for the messages sent through that mailer; the worker finds them
again by the mailer's alias, which is stored on the row (the key itself never is).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from .exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    "PROVIDER": "resend",
    "API_KEY": None,
    "API_KEY_RESOLVER": None,
    "BASE_URL": None,
    "TIMEOUT": 10.0,
    "DEFAULT_ORG": "default",
    "ORG_RESOLVER": None,
    "DAILY_LIMIT": None,
    "MONTHLY_LIMIT": None,
    "QUOTA_UNIT": "recipient",
    "ON_QUOTA_EXCEEDED": "defer",
    "MAX_RETRIES": 8,
    "QUEUE": None,
    "BATCH_SIZE": 100,
    "RATE_LIMIT": None,
    "CHECK_QUOTA_ON_ENQUEUE": False,
    "KEEP_SENT_PAYLOAD": True,
    # Not in the SPEC table; the implementation needs them (listed in the README).
    "LEASE_SECONDS": 30,
    "SWEEP_AFTER_SECONDS": 30,
    "RETRY_BASE_DELAY": 2.0,
    "RETRY_MAX_DELAY": 900.0,
    "MAX_ETA_SECONDS": 3000,
}

QUOTA_UNITS = ("recipient", "message")
ON_QUOTA_EXCEEDED_CHOICES = ("defer", "fail")


class MailapiSettings:
    """Read-only view of the MAILAPI setting (plus optional per-mailer overrides)."""

    def __init__(self, overrides: Mapping[str, Any] | None = None, mailer: str = "") -> None:
        self._overrides = {k.upper(): v for k, v in (overrides or {}).items()}
        self.mailer = mailer

    def raw(self) -> dict[str, Any]:
        """The user's MAILAPI dict merged with overrides (no defaults)."""
        user = getattr(django_settings, "MAILAPI", None) or {}
        if not isinstance(user, Mapping):
            raise ImproperlyConfigured(
                "settings.MAILAPI must be a dict.", code="configuration_error"
            )
        merged = dict(user)
        merged.update(self._overrides)
        return merged

    def get(self, name: str) -> Any:
        raw = self.raw()
        return raw[name] if name in raw else DEFAULTS[name]

    # --- typed accessors -------------------------------------------------------------
    @property
    def PROVIDER(self) -> str:
        return str(self.get("PROVIDER"))

    @property
    def API_KEY(self) -> str | None:
        value = self.get("API_KEY")
        return str(value) if value else None

    @property
    def API_KEY_RESOLVER(self) -> Callable[[str], str | None] | None:
        return _callable(self.get("API_KEY_RESOLVER"))

    @property
    def BASE_URL(self) -> str | None:
        value = self.get("BASE_URL")
        return str(value).rstrip("/") if value else None

    @property
    def TIMEOUT(self) -> float:
        return float(self.get("TIMEOUT"))

    @property
    def DEFAULT_ORG(self) -> str:
        return str(self.get("DEFAULT_ORG"))

    @property
    def ORG_RESOLVER(self) -> Callable[[Any], str | None] | None:
        return _callable(self.get("ORG_RESOLVER"))

    @property
    def DAILY_LIMIT(self) -> int | None:
        return _optional_int(self.get("DAILY_LIMIT"))

    @property
    def MONTHLY_LIMIT(self) -> int | None:
        return _optional_int(self.get("MONTHLY_LIMIT"))

    @property
    def QUOTA_UNIT(self) -> str:
        return str(self.get("QUOTA_UNIT"))

    @property
    def ON_QUOTA_EXCEEDED(self) -> str:
        return str(self.get("ON_QUOTA_EXCEEDED"))

    @property
    def MAX_RETRIES(self) -> int:
        return int(self.get("MAX_RETRIES"))

    @property
    def QUEUE(self) -> str | None:
        value = self.get("QUEUE")
        return str(value) if value else None

    @property
    def BATCH_SIZE(self) -> int:
        return max(1, int(self.get("BATCH_SIZE")))

    @property
    def RATE_LIMIT(self) -> float | None:
        value = self.get("RATE_LIMIT")
        return float(value) if value else None

    @property
    def CHECK_QUOTA_ON_ENQUEUE(self) -> bool:
        return bool(self.get("CHECK_QUOTA_ON_ENQUEUE"))

    @property
    def KEEP_SENT_PAYLOAD(self) -> bool:
        return bool(self.get("KEEP_SENT_PAYLOAD"))

    @property
    def LEASE_SECONDS(self) -> int:
        return int(self.get("LEASE_SECONDS"))

    @property
    def SWEEP_AFTER_SECONDS(self) -> int:
        return int(self.get("SWEEP_AFTER_SECONDS"))

    @property
    def RETRY_BASE_DELAY(self) -> float:
        return float(self.get("RETRY_BASE_DELAY"))

    @property
    def RETRY_MAX_DELAY(self) -> float:
        return float(self.get("RETRY_MAX_DELAY"))

    @property
    def MAX_ETA_SECONDS(self) -> int:
        return int(self.get("MAX_ETA_SECONDS"))

    def api_key_for(self, org: str) -> str:
        """The API key to use for ``org``: the resolver's answer, else API_KEY."""
        resolver = self.API_KEY_RESOLVER
        key = resolver(org) if resolver is not None else None
        key = key or self.API_KEY
        if not key:
            raise ImproperlyConfigured(
                "No API key: set MAILAPI['API_KEY'] (or an API_KEY_RESOLVER that "
                f"returns a key for org {org!r}).",
                code="configuration_error",
            )
        return key


def _callable(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"Cannot import {value!r}: {exc}", code="configuration_error"
            ) from exc
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def mailer_options(alias: str) -> dict[str, Any]:
    """OPTIONS of a Django 6.1 MAILERS entry, or {} when there is none."""
    if not alias:
        return {}
    mailers = getattr(django_settings, "MAILERS", None) or {}
    entry = mailers.get(alias) or {}
    return dict(entry.get("OPTIONS") or {})


def get_settings(mailer: str = "") -> MailapiSettings:
    """Settings for messages sent through ``mailer`` (a MAILERS alias, or "")."""
    return MailapiSettings(mailer_options(mailer), mailer=mailer)


#: The settings as configured in MAILAPI; read lazily on every attribute access.
mailapi_settings = MailapiSettings()
