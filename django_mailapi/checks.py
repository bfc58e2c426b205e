"""System checks for the MAILAPI setting. Every id is listed in the README."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .conf import DEFAULTS, ON_QUOTA_EXCEEDED_CHOICES, QUOTA_UNITS, mailer_options
from .providers import resolve_provider_class
from .ratelimit import is_shared


def _is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: Any, positive: bool = True) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value > 0 if positive else value >= 0


def _importable_callable(value: Any) -> bool:
    if callable(value):
        return True
    if not isinstance(value, str):
        return False
    try:
        return callable(import_string(value))
    except ImportError:
        return False


def _provider_ok(value: Any) -> bool:
    try:
        resolve_provider_class(value)
    except Exception:
        return False
    return True


# (id, key, test on a present value, message, hint). The test gets the raw value.
_RULES: list[tuple[str, str, Callable[[Any], bool], str, str]] = [
    (
        "mailapi.E002",
        "PROVIDER",
        _provider_ok,
        "MAILAPI['PROVIDER'] is not a known provider or importable provider class.",
        "Use 'resend', 'sendr', 'emitlo', 'generic' or a dotted path to a subclass of "
        "django_mailapi.providers.base.Provider.",
    ),
    (
        "mailapi.E003",
        "BASE_URL",
        lambda v: (
            v is None
            or (
                isinstance(v, str)
                and urlparse(v).scheme in ("http", "https")
                and bool(urlparse(v).netloc)
            )
        ),
        "MAILAPI['BASE_URL'] is not an http(s) URL.",
        "Set it to the API's base URL, e.g. 'https://api.resend.com', or None for the "
        "provider's public URL.",
    ),
    (
        "mailapi.E005",
        "TIMEOUT",
        _is_number,
        "MAILAPI['TIMEOUT'] must be a positive number of seconds.",
        "Use a float such as 10.0.",
    ),
    (
        "mailapi.E006",
        "DEFAULT_ORG",
        lambda v: isinstance(v, str) and 0 < len(v) <= 100,
        "MAILAPI['DEFAULT_ORG'] must be a non-empty string of at most 100 characters.",
        "Use a short org name such as 'default'.",
    ),
    (
        "mailapi.E007",
        "ORG_RESOLVER",
        lambda v: v is None or _importable_callable(v),
        "MAILAPI['ORG_RESOLVER'] is not a callable or an importable dotted path to one.",
        "Point it at a function taking an EmailMessage and returning an org name or None.",
    ),
    (
        "mailapi.E008",
        "DAILY_LIMIT",
        lambda v: v is None or _is_int(v),
        "MAILAPI['DAILY_LIMIT'] must be None or a non-negative integer.",
        "Use None for no daily cap, or a number of units per UTC day.",
    ),
    (
        "mailapi.E009",
        "MONTHLY_LIMIT",
        lambda v: v is None or _is_int(v),
        "MAILAPI['MONTHLY_LIMIT'] must be None or a non-negative integer.",
        "Use None for no monthly cap, or a number of units per UTC month.",
    ),
    (
        "mailapi.E010",
        "QUOTA_UNIT",
        lambda v: v in QUOTA_UNITS,
        "MAILAPI['QUOTA_UNIT'] must be 'recipient' or 'message'.",
        "'recipient' counts to+cc+bcc as Resend does; 'message' counts one per email.",
    ),
    (
        "mailapi.E011",
        "ON_QUOTA_EXCEEDED",
        lambda v: v in ON_QUOTA_EXCEEDED_CHOICES,
        "MAILAPI['ON_QUOTA_EXCEEDED'] must be 'defer' or 'fail'.",
        "'defer' waits for the next UTC day or month; 'fail' records a failure at once.",
    ),
    (
        "mailapi.E012",
        "MAX_RETRIES",
        _is_int,
        "MAILAPI['MAX_RETRIES'] must be a non-negative integer.",
        "Use a small number such as 8.",
    ),
    (
        "mailapi.E013",
        "QUEUE",
        lambda v: v is None or (isinstance(v, str) and v != ""),
        "MAILAPI['QUEUE'] must be None or a Celery queue name.",
        "Use None for Celery's default queue, or the name your workers consume (-Q).",
    ),
    (
        "mailapi.E014",
        "BATCH_SIZE",
        lambda v: _is_int(v, 1) and v <= 100,
        "MAILAPI['BATCH_SIZE'] must be an integer from 1 to 100.",
        "Use 100 (the batch endpoints' maximum) or 1 to send one email per request.",
    ),
    (
        "mailapi.E015",
        "RATE_LIMIT",
        lambda v: v is None or _is_number(v),
        "MAILAPI['RATE_LIMIT'] must be None or a positive number of requests per second.",
        "Use your plan's limit, e.g. 5 for Resend's default.",
    ),
    (
        "mailapi.E016",
        "API_KEY_RESOLVER",
        lambda v: v is None or _importable_callable(v),
        "MAILAPI['API_KEY_RESOLVER'] is not a callable or an importable dotted path to one.",
        "Point it at a function taking an org name and returning an API key.",
    ),
    (
        "mailapi.E017",
        "CHECK_QUOTA_ON_ENQUEUE",
        lambda v: isinstance(v, bool),
        "MAILAPI['CHECK_QUOTA_ON_ENQUEUE'] must be True or False.",
        "Use a boolean.",
    ),
    (
        "mailapi.E018",
        "KEEP_SENT_PAYLOAD",
        lambda v: isinstance(v, bool),
        "MAILAPI['KEEP_SENT_PAYLOAD'] must be True or False.",
        "Use a boolean.",
    ),
]

for _key in ("LEASE_SECONDS", "SWEEP_AFTER_SECONDS", "MAX_ETA_SECONDS"):
    _RULES.append(
        (
            "mailapi.E019",
            _key,
            lambda v: _is_int(v, 1),
            f"MAILAPI['{_key}'] must be a positive integer number of seconds.",
            f"Remove it to use the default ({DEFAULTS[_key]}).",
        )
    )
for _key in ("RETRY_BASE_DELAY", "RETRY_MAX_DELAY"):
    _RULES.append(
        (
            "mailapi.E019",
            _key,
            _is_number,
            f"MAILAPI['{_key}'] must be a positive number of seconds.",
            f"Remove it to use the default ({DEFAULTS[_key]}).",
        )
    )


def check_config(config: dict[str, Any], where: str) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for check_id, key, test, msg, hint in _RULES:
        if key in config and not test(config[key]):
            messages.append(Error(msg, hint=hint, id=check_id, obj=where))
    api_key = config.get("API_KEY")
    if not api_key and not config.get("API_KEY_RESOLVER"):
        messages.append(
            Error(
                "MAILAPI['API_KEY'] is not set.",
                hint="Set MAILAPI['API_KEY'] to your provider's API key, e.g. "
                "env('MAILAPI_API_KEY'), or set an API_KEY_RESOLVER.",
                id="mailapi.E001",
                obj=where,
            )
        )
    elif api_key is not None and not isinstance(api_key, str):
        messages.append(
            Error(
                "MAILAPI['API_KEY'] must be a string.",
                hint="Read it from the environment, e.g. env('MAILAPI_API_KEY').",
                id="mailapi.E001",
                obj=where,
            )
        )
    provider = config.get("PROVIDER", DEFAULTS["PROVIDER"])
    if provider == "generic" and not config.get("BASE_URL"):
        messages.append(
            Error(
                "The generic provider needs MAILAPI['BASE_URL'].",
                hint="Set BASE_URL to the API's base URL, e.g. 'https://api.example.com/v1'.",
                id="mailapi.E004",
                obj=where,
            )
        )
    if config.get("RATE_LIMIT") and not is_shared():
        messages.append(
            Warning(
                "MAILAPI['RATE_LIMIT'] is set but the default cache is not Redis, so each "
                "worker process keeps to the limit on its own and together they can "
                "exceed it.",
                hint="Use Redis for CACHES['default'] (django.core.cache.backends.redis."
                "RedisCache), or divide RATE_LIMIT by the number of worker processes.",
                id="mailapi.W002",
                obj=where,
            )
        )
    lease, timeout = (config.get(k, DEFAULTS[k]) for k in ("LEASE_SECONDS", "TIMEOUT"))
    if _is_int(lease, 1) and _is_number(timeout) and lease < timeout + 5:
        messages.append(
            Warning(
                f"MAILAPI['LEASE_SECONDS'] ({lease}) is shorter than one request may take "
                f"(TIMEOUT {timeout:g} s plus 5 s for clock differences), so another worker "
                "could take an email while its request is still on the way.",
                hint=f"Set LEASE_SECONDS to at least {math.ceil(timeout + 5)}, or lower TIMEOUT.",
                id="mailapi.W003",
                obj=where,
            )
        )
    unknown = sorted(set(config) - set(DEFAULTS) - {"ALIAS"})
    if unknown:
        messages.append(
            Warning(
                f"Unknown MAILAPI keys: {', '.join(unknown)}.",
                hint="Check the spelling against the settings table in the README.",
                id="mailapi.W001",
                obj=where,
            )
        )
    return messages


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    raw = getattr(settings, "MAILAPI", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return [
            Error(
                "settings.MAILAPI must be a dict.",
                hint="See the settings table in the README.",
                id="mailapi.E000",
            )
        ]
    messages = check_config(dict(raw), "settings.MAILAPI")
    for alias, entry in (getattr(settings, "MAILERS", None) or {}).items():
        if not isinstance(entry, dict) or not str(entry.get("BACKEND", "")).startswith(
            "django_mailapi."
        ):
            continue
        merged = dict(raw)
        merged.update({k.upper(): v for k, v in mailer_options(alias).items()})
        for message in check_config(merged, f"settings.MAILERS[{alias!r}]"):
            if message not in messages:
                messages.append(message)
    return messages
