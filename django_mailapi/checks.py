"""System checks for the MAILAPI setting. Every id is listed in the README.

Each setting's own check (a malformed value, a missing required key) comes from its
declaration in :mod:`django_mailapi.conf`, one id per setting. The checks below it,
in ``RULES``, look at settings together or at the rest of the project.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Info, Tags, Warning, register
from django.urls import reverse

from .conf import DEFAULTS, SETTINGS, mailer_options
from .ratelimit import is_shared

#: Keys a MAILERS entry's OPTIONS may carry besides the settings.
NOT_SETTINGS = frozenset({"ALIAS"})


@dataclass(frozen=True)
class Rule:
    """A check on settings taken together (or on the project around them)."""

    id: str
    #: The README's "what is wrong" entry.
    summary: str
    #: Given the raw config, the message and hint of what is wrong, or None.
    test: Callable[[Mapping[str, Any]], tuple[str, str] | None]
    #: False for a rule about the project as a whole, reported once and not again for
    #: each MAILERS entry.
    per_mailer: bool = True

    @property
    def level(self) -> type[Error] | type[Warning] | type[Info]:
        if self.id.startswith("mailapi.I"):
            return Info
        return Warning if self.id.startswith("mailapi.W") else Error


def _value(config: Mapping[str, Any], name: str) -> Any:
    return config.get(name, DEFAULTS[name])


def _generic_without_base_url(config: Mapping[str, Any]) -> tuple[str, str] | None:
    if _value(config, "PROVIDER") != "generic" or config.get("BASE_URL"):
        return None
    return (
        "The generic provider needs MAILAPI['BASE_URL'].",
        "Set BASE_URL to the API's base URL, e.g. 'https://api.example.com/v1'.",
    )


def _rate_limit_not_shared(config: Mapping[str, Any]) -> tuple[str, str] | None:
    if not config.get("RATE_LIMIT") or is_shared():
        return None
    return (
        "MAILAPI['RATE_LIMIT'] is set but the default cache is not Redis, so each worker "
        "process keeps to the limit on its own and together they can exceed it.",
        "Use Redis for CACHES['default'] (django.core.cache.backends.redis.RedisCache), "
        "or divide RATE_LIMIT by the number of worker processes.",
    )


def _lease_shorter_than_a_request(config: Mapping[str, Any]) -> tuple[str, str] | None:
    lease, timeout = _value(config, "LEASE_SECONDS"), _value(config, "TIMEOUT")
    well_formed = all(SETTINGS[k].valid(_value(config, k)) for k in ("LEASE_SECONDS", "TIMEOUT"))
    if not well_formed or lease >= timeout + 5:
        return None
    return (
        f"MAILAPI['LEASE_SECONDS'] ({lease}) is shorter than one request may take "
        f"(TIMEOUT {timeout:g} s plus 5 s for clock differences), so another worker "
        "could take an email while its request is still on the way.",
        f"Set LEASE_SECONDS to at least {math.ceil(timeout + 5)}, or lower TIMEOUT.",
    )


def _recipients_overridden(config: Mapping[str, Any]) -> tuple[str, str] | None:
    override = config.get("OVERRIDE_RECIPIENTS")
    if not override or not SETTINGS["OVERRIDE_RECIPIENTS"].valid(override):
        return None
    return (
        "MAILAPI['OVERRIDE_RECIPIENTS'] is set: every email goes to "
        f"{', '.join(override)} instead of its own recipients.",
        "Right for a staging server; remove it before this configuration mails real people.",
    )


def _webhooks_without_secret(config: Mapping[str, Any]) -> tuple[str, str] | None:
    if config.get("WEBHOOK_SECRET"):
        return None
    try:
        path = reverse("mailapi-webhook", kwargs={"provider": "resend"})
    except Exception:  # not mounted (NoReverseMatch), or a URLconf Django reports itself
        return None
    return (
        f"django_mailapi.urls is mounted (webhooks at {path}) but MAILAPI['WEBHOOK_SECRET'] "
        "is not set, so every delivery event is answered 404 and none is recorded.",
        "Set MAILAPI['WEBHOOK_SECRET'] to the signing secret your provider shows for the "
        "endpoint (e.g. env('MAILAPI_WEBHOOK_SECRET')), or remove the include.",
    )


#: RabbitMQ's default consumer_timeout: a consumer holding an unacknowledged message (a
#: task waiting for its countdown) longer than this is cancelled and the message requeued.
RABBITMQ_CONSUMER_TIMEOUT = 1800
#: Kombu's default Redis visibility_timeout: a message not acknowledged within it is
#: delivered again, to any worker.
REDIS_VISIBILITY_TIMEOUT = 3600


def broker_redelivery_limit() -> tuple[int, str] | None:
    """(seconds, what sets it) after which the broker hands an unacknowledged task out
    again or cancels its consumer; None for a broker this does not know."""
    url = getattr(settings, "CELERY_BROKER_URL", None)
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None)
    if url is None:  # configured on the Celery app itself rather than in settings
        from celery import current_app

        url = current_app.conf.broker_url
        options = options or current_app.conf.broker_transport_options
    scheme = str(url or "").split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in ("redis", "rediss", "sentinel"):
        timeout = (options or {}).get("visibility_timeout", REDIS_VISIBILITY_TIMEOUT)
        return int(timeout), "Redis's visibility_timeout"
    if scheme in ("amqp", "amqps", "pyamqp", "librabbitmq"):
        return RABBITMQ_CONSUMER_TIMEOUT, "RabbitMQ's default consumer_timeout"
    return None


def _countdown_outlives_the_broker(config: Mapping[str, Any]) -> tuple[str, str] | None:
    eta = _value(config, "MAX_ETA_SECONDS")
    limit = broker_redelivery_limit()
    if limit is None or not SETTINGS["MAX_ETA_SECONDS"].valid(eta) or eta < limit[0]:
        return None
    seconds, name = limit
    return (
        f"MAILAPI['MAX_ETA_SECONDS'] ({eta}) is not under {name} ({seconds} s): a task "
        "waiting that long for its countdown may be delivered to a second worker, or its "
        "worker's consumer cancelled.",
        f"Set MAX_ETA_SECONDS below {seconds} (the default, "
        f"{DEFAULTS['MAX_ETA_SECONDS']}, is under both Redis's and RabbitMQ's defaults), or "
        "raise the broker's limit (CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'] "
        "on Redis, consumer_timeout in rabbitmq.conf) and silence this check.",
    )


def _unknown_keys(config: Mapping[str, Any]) -> tuple[str, str] | None:
    unknown = sorted(set(config) - set(SETTINGS) - NOT_SETTINGS)
    if not unknown:
        return None
    return (
        f"Unknown MAILAPI keys: {', '.join(unknown)}.",
        "Check the spelling against the settings table in the README.",
    )


RULES = (
    Rule(
        "mailapi.E004",
        "the `generic` provider has no `BASE_URL`",
        _generic_without_base_url,
    ),
    Rule(
        "mailapi.W001",
        "`MAILAPI` has a key this version does not know (a typo?)",
        _unknown_keys,
    ),
    Rule(
        "mailapi.W002",
        "`RATE_LIMIT` is set but the default cache is not Redis, so each worker process "
        "limits itself separately",
        _rate_limit_not_shared,
    ),
    Rule(
        "mailapi.W003",
        "`LEASE_SECONDS` is shorter than one request may take (`TIMEOUT` + 5 s), so a "
        "second worker could take an email while its request is on the way",
        _lease_shorter_than_a_request,
    ),
    Rule(
        "mailapi.W004",
        "`django_mailapi.urls` is mounted but `WEBHOOK_SECRET` is not set, so every delivery "
        "event is answered 404",
        _webhooks_without_secret,
        per_mailer=False,
    ),
    Rule(
        "mailapi.W005",
        "`MAX_ETA_SECONDS` is not under the broker's redelivery limit (Redis's "
        "`visibility_timeout`, RabbitMQ's 30-minute `consumer_timeout`), so a scheduled "
        "task could run twice or lose its consumer",
        _countdown_outlives_the_broker,
    ),
    Rule(
        "mailapi.I001",
        "`OVERRIDE_RECIPIENTS` is set, so no email reaches its own recipients (right for "
        "staging, not for production)",
        _recipients_overridden,
    ),
)

#: The check for MAILAPI itself, before any key can be looked at.
NOT_A_DICT = ("mailapi.E000", "`MAILAPI` is not a dict")


def check_config(
    config: Mapping[str, Any], where: str, *, mailer: bool = False
) -> list[CheckMessage]:
    """Every problem with one configuration (MAILAPI, or MAILAPI merged with OPTIONS)."""
    messages: list[CheckMessage] = []
    for setting in SETTINGS.values():
        problem = setting.problem(config)
        if problem is not None:
            messages.append(Error(problem, hint=setting.hint, id=setting.check_id, obj=where))
    for rule in RULES:
        if mailer and not rule.per_mailer:
            continue
        found = rule.test(config)
        if found is not None:
            message, hint = found
            messages.append(rule.level(message, hint=hint, id=rule.id, obj=where))
    return messages


def summaries() -> list[tuple[str, str]]:
    """(id, what is wrong) of every check, by id: the README's system checks table."""
    rows = [NOT_A_DICT]
    rows += [(s.check_id, s.problem_summary) for s in SETTINGS.values()]
    rows += [(rule.id, rule.summary) for rule in RULES]
    return sorted(rows)


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
                id=NOT_A_DICT[0],
            )
        ]
    messages = check_config(raw, "settings.MAILAPI")
    for alias, entry in (getattr(settings, "MAILERS", None) or {}).items():
        if not isinstance(entry, dict) or not str(entry.get("BACKEND", "")).startswith(
            "django_mailapi."
        ):
            continue
        merged = dict(raw)
        merged.update({k.upper(): v for k, v in mailer_options(alias).items()})
        for message in check_config(merged, f"settings.MAILERS[{alias!r}]", mailer=True):
            if message not in messages:
                messages.append(message)
    return messages
