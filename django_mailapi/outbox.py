"""The state machine of a send: claim, send, record the outcome, sweep.

queued ──claim──▶ sending ──API 2xx──▶ sent
   ▲                 │
   │   transient     ├──────────────▶ queued (next_attempt_at = now + backoff)
   │   quota         ├──────────────▶ deferred (next UTC day / month) or failed
   │   permanent     └──────────────▶ failed
   └──── sweeper / mailapi_retry / admin "retry now"

A claim is one conditional UPDATE that takes a lease, so two workers can never both
send the same row; a worker that dies leaves a lease that runs out, and the row is
claimed again. Every retry reuses the row's Idempotency-Key, so if the first worker's
request did reach the API, the API answers the retry with the original email instead
of sending a second one. No lock is held during an HTTP call.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from . import errors, quota, ratelimit, signals
from .conf import MailapiSettings, get_settings
from .exceptions import MailapiError, QuotaExceeded, SendError
from .models import FailedSend, OutboundEmail, Status
from .providers import BUILTIN, get_provider, resolve_provider_class
from .providers.base import Provider

logger = logging.getLogger("django_mailapi")


# --- claim -------------------------------------------------------------------------------
def claim(ids: Sequence[int], now: dt.datetime, lease_seconds: int) -> list[OutboundEmail]:
    """Take a lease on those of ``ids`` that are due; return the rows now ours."""
    token = uuid.uuid4().hex
    taken = (
        OutboundEmail.objects.due(now)
        .filter(pk__in=list(ids))
        .update(
            status=Status.SENDING,
            lease_token=token,
            leased_until=now + dt.timedelta(seconds=lease_seconds),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
    )
    if not taken:
        return []
    return list(OutboundEmail.objects.filter(pk__in=list(ids), lease_token=token).order_by("pk"))


# --- send ----------------------------------------------------------------------------------
def process(ids: Sequence[int]) -> dict[str, int]:
    """Send the due emails among ``ids``. Returns a count per outcome."""
    now = timezone.now()
    outcomes: dict[str, int] = defaultdict(int)
    lease = get_settings().LEASE_SECONDS
    for row in claim(ids, now, lease):
        outcomes[send_one(row)] += 1
    return dict(outcomes)


def provider_class_for(row: OutboundEmail, conf: MailapiSettings) -> type[Provider]:
    """The configured provider class, unless the row was queued for another built-in one."""
    configured = resolve_provider_class(conf.PROVIDER)
    if configured.name == row.provider or row.provider not in BUILTIN:
        return configured
    return resolve_provider_class(row.provider)


def provider_for(row: OutboundEmail, conf: MailapiSettings) -> tuple[Provider, str]:
    """The provider instance for the row, and the API key it sends with."""
    api_key = conf.api_key_for(row.org)
    provider = get_provider(
        provider_class_for(row, conf),
        api_key=api_key,
        base_url=conf.BASE_URL,
        timeout=conf.TIMEOUT,
    )
    return provider, api_key


def send_one(row: OutboundEmail) -> str:
    """Reserve quota, call the API, record what happened. Never raises for a send error."""
    conf = get_settings(row.mailer)
    try:
        if row.payload is None:
            raise SendError(
                "The email's payload is gone (KEEP_SENT_PAYLOAD=False or purged).",
                code="payload_missing",
                local=True,
            )
        provider, api_key = provider_for(row, conf)
        if not row.quota_units:
            reserve(row, conf)
        ratelimit.wait_for_slot(api_key, conf.RATE_LIMIT)
        message_id = provider.send(row.payload, row.idempotency_key)
    except QuotaExceeded as exc:
        return record_failure(row, SendError(exc.message, code=exc.code, local=True), conf)
    except SendError as exc:
        return record_failure(row, exc, conf)
    except MailapiError as exc:  # invalid message, unsupported feature, configuration
        return record_failure(row, SendError(exc.message, code=exc.code, local=True), conf)
    except Exception as exc:  # a bug must not lose the email or kill the worker loop
        logger.exception("django-mailapi: unexpected error sending email #%s", row.pk)
        error = SendError(f"{type(exc).__name__}: {exc}", code="unexpected_error", local=True)
        return record_failure(row, error, conf)
    record_sent(row, message_id, conf)
    return "sent"


def reserve(row: OutboundEmail, conf: MailapiSettings) -> None:
    """Book the row's units on its org's counters and note that on the row, atomically."""
    units = quota.units_for(row.recipient_count, conf)
    with transaction.atomic():
        day = quota.reserve(row.org, units, timezone.now(), conf)
        OutboundEmail.objects.filter(pk=row.pk).update(quota_units=units, quota_day=day)
    row.quota_units, row.quota_day = units, day


# --- outcomes ------------------------------------------------------------------------------
def record_sent(row: OutboundEmail, message_id: str, conf: MailapiSettings) -> None:
    now = timezone.now()
    changes: dict[str, Any] = {
        "status": Status.SENT,
        "provider_message_id": message_id[:255],
        "sent_at": now,
        "updated_at": now,
        "leased_until": None,
        "lease_token": "",
        "next_attempt_at": None,
        "last_error_code": "",
        "last_error_status": None,
    }
    if not conf.KEEP_SENT_PAYLOAD:
        changes["payload"] = None
    OutboundEmail.objects.filter(pk=row.pk).update(**changes)
    for name, value in changes.items():
        setattr(row, name, value)
    signals.message_sent.send(sender=OutboundEmail, email=row)


def backoff(attempt: int, conf: MailapiSettings) -> float:
    """Exponential backoff with full jitter in its upper half, capped."""
    ceiling = min(conf.RETRY_MAX_DELAY, conf.RETRY_BASE_DELAY * 2 ** max(0, attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


def record_failure(row: OutboundEmail, error: SendError, conf: MailapiSettings) -> str:
    """Write a FailedSend for this attempt and move the row on. Returns the outcome."""
    now = timezone.now()
    source = "mailapi" if error.local else _catalog_name(row, conf)
    spec = errors.resolve(source, error.code, error.http_status, error.message)
    retry = spec.retry
    changes: dict[str, Any] = {
        "updated_at": now,
        "leased_until": None,
        "lease_token": "",
        "last_error_code": error.code[:100],
        "last_error_status": error.http_status,
    }
    exhausted = False
    if retry.is_transient and row.attempts <= conf.MAX_RETRIES:
        outcome, will_retry = "retry", True
        delay = backoff(row.attempts, conf)
        if retry is errors.RetryClass.RETRY_AFTER and error.retry_after is not None:
            delay = max(error.retry_after, 0.5) + random.uniform(0, 0.5)
        changes.update(status=Status.QUEUED, next_attempt_at=now + dt.timedelta(seconds=delay))
    elif retry.is_quota and conf.ON_QUOTA_EXCEEDED == "defer":
        outcome, will_retry = "deferred", True
        until = (
            quota.next_day(now) if retry is errors.RetryClass.DEFER_DAY else quota.next_month(now)
        )
        # Spread the wake-up over a minute so a backlog does not arrive at once.
        until += dt.timedelta(seconds=random.uniform(0, 60))
        # A deferral is not a failed try: it does not count against MAX_RETRIES.
        changes.update(
            status=Status.DEFERRED, next_attempt_at=until, attempts=max(0, row.attempts - 1)
        )
    else:
        outcome, will_retry = "failed", False
        exhausted = retry.is_transient
        changes.update(status=Status.FAILED, next_attempt_at=None)
        if exhausted:
            changes.update(last_error_code="retries_exhausted", last_error_status=None)

    with transaction.atomic():
        if row.quota_units and row.quota_day is not None:
            quota.release(row.org, row.quota_units, row.quota_day, failed=not will_retry)
            changes.update(quota_units=0, quota_day=None)
        failure = FailedSend.objects.create(
            email=row,
            org=row.org,
            provider=row.provider,
            source=source,
            error_code=error.code[:100],
            http_status=error.http_status,
            message=error.message,
            details=error.details,
            request_id=(error.request_id or "")[:255],
            attempt=row.attempts,
            will_retry=will_retry,
            created_at=now,
        )
        if exhausted:
            FailedSend.objects.create(
                email=row,
                org=row.org,
                provider=row.provider,
                source="mailapi",
                error_code="retries_exhausted",
                message=f"Gave up after {row.attempts} attempts; the last error was "
                f"{error.code}: {error.message}"[:2000],
                attempt=row.attempts,
                will_retry=False,
                created_at=now,
            )
        OutboundEmail.objects.filter(pk=row.pk, lease_token=row.lease_token).update(**changes)
    for name, value in changes.items():
        setattr(row, name, value)

    log = logger.info if will_retry else logger.warning
    log(
        "django-mailapi: email #%s %s: %s %s (%s)",
        row.pk,
        outcome,
        error.code,
        error.http_status or "local",
        error.message[:200],
    )
    signals.send_failed.send(sender=OutboundEmail, email=row, failure=failure)
    if retry.is_quota:
        signals.quota_exceeded.send(sender=OutboundEmail, email=row, org=row.org, code=error.code)
    if will_retry and row.next_attempt_at is not None:
        schedule(row, conf, now)
    return outcome


def _catalog_name(row: OutboundEmail, conf: MailapiSettings) -> str:
    try:
        return provider_class_for(row, conf).catalog or row.provider
    except MailapiError:
        return row.provider


def schedule(row: OutboundEmail, conf: MailapiSettings, now: dt.datetime) -> None:
    """Publish a delayed task for the row's next attempt, if it is near enough.

    Celery keeps delayed tasks in the worker's memory and, on Redis/SQS, re-delivers
    them after the broker's visibility timeout; so long delays are left to the sweeper.
    """
    from .tasks import send_emails

    assert row.next_attempt_at is not None
    delay = (row.next_attempt_at - now).total_seconds()
    if delay > conf.MAX_ETA_SECONDS:
        return
    options: dict[str, Any] = {"countdown": max(0.0, delay)}
    if conf.QUEUE:
        options["queue"] = conf.QUEUE
    try:
        send_emails.apply_async(args=[[row.pk]], **options)
    except Exception as exc:  # the sweeper will pick it up
        logger.warning("django-mailapi could not schedule email #%s: %s", row.pk, exc)


def record_rejected(rejected: Iterable[tuple[OutboundEmail, MailapiError]]) -> None:
    """Store messages the backend refused (with ``fail_silently``) as failed rows."""
    pairs = list(rejected)
    with transaction.atomic():
        rows = OutboundEmail.objects.bulk_create([row for row, _ in pairs])
        FailedSend.objects.bulk_create(
            FailedSend(
                email=row,
                org=row.org,
                provider=row.provider,
                source="mailapi",
                error_code=error.code,
                message=error.message.replace("\x00", "\ufffd"),
                created_at=row.created_at,
            )
            for row, (_, error) in zip(rows, pairs, strict=True)
        )
    for row, (_, error) in zip(rows, pairs, strict=True):
        logger.warning("django-mailapi refused email #%s: %s", row.pk, error)


# --- sweep and retry -----------------------------------------------------------------------
def sweep(now: dt.datetime | None = None, limit: int = 10_000) -> int:
    """Dispatch due rows whose task seems lost. Returns how many were dispatched."""
    from .backend import dispatch

    now = now or timezone.now()
    conf = get_settings()
    grace = dt.timedelta(seconds=conf.SWEEP_AFTER_SECONDS)
    rows = list(
        OutboundEmail.objects.stranded(now, grace)
        .order_by("next_attempt_at")
        .values_list("pk", "mailer")[:limit]
    )
    if not rows:
        return 0
    # Don't sweep the same rows again until another grace period has passed.
    OutboundEmail.objects.filter(
        pk__in=[pk for pk, _ in rows], status__in=[Status.QUEUED, Status.DEFERRED]
    ).update(next_attempt_at=now)
    return _dispatch_by_mailer(rows, dispatch)


def _dispatch_by_mailer(rows: Iterable[tuple[int, str]], dispatch: Any) -> int:
    by_mailer: dict[str, list[int]] = defaultdict(list)
    for pk, mailer in rows:
        by_mailer[mailer].append(pk)
    return sum(dispatch(ids, get_settings(mailer)) for mailer, ids in by_mailer.items())


def retry_now(queryset: QuerySet[OutboundEmail]) -> int:
    """Re-queue failed, deferred or stuck-queued emails and dispatch them now."""
    from .backend import dispatch

    now = timezone.now()
    rows = list(
        queryset.filter(status__in=[Status.FAILED, Status.DEFERRED, Status.QUEUED])
        .exclude(payload=None)
        .values_list("pk", "mailer")
    )
    if not rows:
        return 0
    OutboundEmail.objects.filter(pk__in=[pk for pk, _ in rows]).update(
        status=Status.QUEUED, next_attempt_at=now, attempts=0, updated_at=now
    )
    transaction.on_commit(lambda: _dispatch_by_mailer(rows, dispatch))
    return len(rows)


def cancel(queryset: QuerySet[OutboundEmail]) -> int:
    """Cancel emails that have not been sent yet."""
    now = timezone.now()
    return queryset.filter(status__in=[Status.QUEUED, Status.DEFERRED, Status.FAILED]).update(
        status=Status.CANCELLED, next_attempt_at=None, updated_at=now
    )
