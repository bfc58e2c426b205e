"""Writing outcomes: sent, retry, deferral, failure, quota given back.

Every write is fenced by the writer's lease (see ``lease.py``): one UPDATE carries the
token and ``status = 'sending'``, and quota releases, failure records and signals follow
only for the rows that statement changed. A worker that lost its rows writes nothing
about them and logs that it did not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import router, transaction
from django.utils import timezone

from .. import quota, signals, sql, suppression
from ..conf import MailapiSettings
from ..dispatch import schedule
from ..exceptions import ImproperlyConfigured, MailapiError, SendError
from ..models import FailedSend, OutboundEmail, Status
from ..providers import resolve_provider_class
from ..providers.base import Provider
from ..text import plural
from . import policy
from .lease import Lease

logger = logging.getLogger("django_mailapi")


def provider_class_for(row: OutboundEmail, conf: MailapiSettings) -> type[Provider]:
    """The configured provider class, which must be the one the row was queued for.

    An API key belongs to one provider: a row queued for another (``PROVIDER`` changed
    while it waited, or options the workers never saw) is refused with
    ``provider_mismatch`` instead of being sent with this configuration's key.
    """
    configured = resolve_provider_class(conf.PROVIDER)
    if configured.name != row.provider:
        where = f"MAILERS[{conf.mailer!r}]" if conf.mailer else "MAILAPI"
        raise ImproperlyConfigured(
            f"Email #{row.pk} was queued for the {row.provider!r} provider, but "
            f"{where}['PROVIDER'] is now {configured.name!r}; its API key and base URL "
            f"belong to {configured.name!r}, so the email is not sent with them.",
            code="provider_mismatch",
        )
    return configured


def catalog_name(row: OutboundEmail, conf: MailapiSettings) -> str:
    """The catalog of the API that answered for ``row`` (its own provider's by default)."""
    try:
        return provider_class_for(row, conf).catalog or row.provider
    except MailapiError:
        try:
            return resolve_provider_class(row.provider).catalog or row.provider
        except MailapiError:
            return row.provider


def as_send_error(exc: Exception) -> SendError:
    """Any exception met while sending, as the SendError to record for it."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, MailapiError):  # quota, invalid message, unsupported, configuration
        return SendError(exc.message, code=exc.code, local=True)
    return SendError(f"{type(exc).__name__}: {exc}", code="unexpected_error", local=True)


def _late(lease: Lease, pks: Iterable[int], what: str) -> None:
    late = sorted(pks)
    if late:
        lease.lost.update(late)
        logger.warning(
            "django-mailapi: not recording %s for email(s) %s: their lease passed to "
            "another worker, whose outcome stands.",
            what,
            ", ".join(f"#{pk}" for pk in late),
        )


def record_sent(
    lease: Lease, sent: Sequence[tuple[OutboundEmail, str]], conf: MailapiSettings
) -> list[OutboundEmail]:
    """Mark emails sent with their API ids, in one fenced statement. Returns the rows
    recorded (a row another worker had taken meanwhile is left out): their delivery
    events that came first are matched by the caller (``events.match_sent``)."""
    if not sent:
        return []
    now = timezone.now()
    shared: dict[str, Any] = {
        "status": Status.SENT,
        "sent_at": now,
        "updated_at": now,
        "leased_until": None,
        "lease_token": "",
        "next_attempt_at": None,
        "last_error_code": "",
        "last_error_status": None,
    }
    if not conf.KEEP_SENT_PAYLOAD:
        shared["payload"] = None
    ids: dict[int, tuple[str]] = {}
    for row, message_id in sent:
        ids[row.pk] = (message_id[:255],)
    changed = set(sql.update_each(OutboundEmail, ["provider_message_id"], ids, shared, lease.fence))
    lease.close(ids)
    _late(lease, set(ids) - changed, "a send")
    for row, _ in sent:
        if row.pk in changed:
            row.provider_message_id = ids[row.pk][0]
            for name, value in shared.items():
                setattr(row, name, value)
            signals.message_sent.send(sender=OutboundEmail, email=row)
    return [row for row, _ in sent if row.pk in changed]


#: Written on each failed row with its own values.
_FAILURE_FIELDS = [
    "status",
    "next_attempt_at",
    "attempts",
    "last_error_code",
    "last_error_status",
    "quota_units",
    "quota_day",
    "batch_key",
]


def record_failures(
    lease: Lease,
    pairs: Sequence[tuple[OutboundEmail, SendError]],
    conf: MailapiSettings,
    *,
    carried: set[int],
    together: bool = False,
    resolved: bool = False,
) -> Counter[str]:
    """Write a FailedSend per attempt and move each row on, in one transaction.

    ``carried``: rows that held quota units before this claim (in doubt already).
    ``together``: the rows failed as one batch request; those that will be retried get
    one shared time and one task, so the batch goes out again whole under its key.
    ``resolved``: the API answered the request (a batch's per-email errors), so what it
    said about these emails settles any doubt from earlier attempts.
    """
    if not pairs:
        return Counter()
    now = timezone.now()
    planned: list[tuple[OutboundEmail, SendError, str, policy.Decision, tuple[int, Any]]] = []
    # A batch that failed as one request is decided as one: its members may have used
    # different numbers of attempts (one was tried alone before), and if some ran out
    # while others did not, a batch in doubt would be split between failed and queued
    # under one key, which no claim could ever take whole again. So the member with the
    # most retries left decides for all of them.
    floor = min(row.attempts for row, _ in pairs) if together else None
    for row, error in pairs:
        source = "mailapi" if error.local else catalog_name(row, conf)
        decision = policy.decide(
            error,
            source,
            attempts=row.attempts if floor is None else floor,
            was_in_doubt=row.pk in carried and not resolved,
            conf=conf,
            now=now,
        )
        if floor is not None:  # each row keeps its own count
            own = max(0, row.attempts - 1) if decision.outcome == "deferred" else row.attempts
            decision = dataclasses.replace(decision, attempts=own)
        planned.append((row, error, source, decision, (row.quota_units, row.quota_day)))
    if together:  # one time for a batch's retry
        retrying = [d.next_attempt_at for _r, _e, _s, d, _h in planned if d.outcome == "retry"]
        shared_time = min((t for t in retrying if t is not None), default=None)
    values: dict[int, list[Any]] = {}
    for row, _error, _source, d, (units, day) in planned:
        keep = d.in_doubt
        when = shared_time if together and d.outcome == "retry" else d.next_attempt_at
        values[row.pk] = [
            d.status,
            when,
            d.attempts,
            d.error_code,
            d.error_status,
            units if keep else 0,
            day if keep else None,
            row.batch_key if keep else "",
        ]
    shared = {"leased_until": None, "lease_token": "", "updated_at": now}
    using = router.db_for_write(OutboundEmail)
    with transaction.atomic(using=using):
        changed = set(sql.update_each(OutboundEmail, _FAILURE_FIELDS, values, shared, lease.fence))
        releases: dict[tuple[str, dt.date, bool], int] = defaultdict(int)
        failures: list[FailedSend] = []
        for row, error, source, d, (units, day) in planned:
            if row.pk not in changed:
                continue
            for name, value in zip(_FAILURE_FIELDS, values[row.pk], strict=True):
                setattr(row, name, value)
            row.leased_until, row.lease_token, row.updated_at = None, "", now
            if units and day is not None and not d.in_doubt:
                releases[(row.org, day, not d.will_retry)] += units
            failures.append(_failure(row, error, source, d.will_retry, now))
            if d.exhausted:
                gave_up = SendError(
                    f"Gave up after {row.attempts} attempts; the last error was "
                    f"{error.code}: {error.message}"[:2000],
                    code="retries_exhausted",
                    local=True,
                )
                failures.append(_failure(row, gave_up, "mailapi", False, now))
        # Counters are locked day before month, as every reservation locks them.
        for (org, day, failed), units in sorted(releases.items()):
            quota.release(org, units, day, failed=failed)
        FailedSend.objects.using(using).bulk_create(failures)
    lease.close(values)
    _late(lease, set(values) - changed, "a failure")

    outcomes: Counter[str] = Counter()
    by_row: dict[int, FailedSend] = {}
    for failure in failures:
        by_row.setdefault(failure.email_id, failure)  # the attempt's own record
    waiting: list[OutboundEmail] = []
    for row, error, _source, d, _held in planned:
        if row.pk not in changed:
            continue
        outcomes[d.outcome] += 1
        log = logger.info if d.will_retry else logger.warning
        log(
            "django-mailapi: email #%s %s: %s %s (%s)",
            row.pk,
            d.outcome,
            error.code,
            error.http_status or "local",
            error.message[:200],
        )
        signals.send_failed.send(sender=OutboundEmail, email=row, failure=by_row[row.pk])
        if d.retry.is_quota:
            signals.quota_exceeded.send(
                sender=OutboundEmail, email=row, org=row.org, code=error.code
            )
        if d.will_retry:
            waiting.append(row)
    groups = [waiting] if together else [[row] for row in waiting]
    for group in groups:
        if group:
            due = min(row.next_attempt_at or now for row in group)
            schedule([row.pk for row in group], conf, (due - now).total_seconds())
    return outcomes


def _failure(
    row: OutboundEmail, error: SendError, source: str, will_retry: bool, now: dt.datetime
) -> FailedSend:
    return FailedSend(
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


def record_narrowed(
    narrowed: Sequence[tuple[OutboundEmail, list[suppression.LeftOut]]], now: dt.datetime
) -> None:
    """Store the emails that go to fewer recipients than asked: their narrowed payload
    and recipient count, and a FailedSend (``recipient_suppressed``, not retried) naming
    who was left out.

    Runs in the claim's transaction, on rows it holds locked and has not handed to
    anyone yet, so it needs no fence: the payload written is the one every later attempt
    sends, under the same key. No ``send_failed`` signal: the email is not failed.
    """
    if not narrowed:
        return
    using = router.db_for_write(OutboundEmail)
    sql.update_each(
        OutboundEmail,
        ["payload", "recipient_count"],
        {row.pk: [row.payload, row.recipient_count] for row, _ in narrowed},
        {},
    )
    failures = []
    for row, left_out in narrowed:
        error = SendError(
            f"Left out {plural(len(left_out), 'suppressed recipient')}: "
            f"{suppression.describe(left_out)}; sent to the other {row.recipient_count}.",
            code="recipient_suppressed",
            local=True,
            details={"left_out": [item.as_json() for item in left_out]},
        )
        failures.append(_failure(row, error, "mailapi", False, now))
    FailedSend.objects.using(using).bulk_create(failures)
    for row, left_out in narrowed:
        logger.info(
            "django-mailapi: email #%s leaves out suppressed %s",
            row.pk,
            suppression.describe(left_out),
        )


def abandon(lease: Lease, rows: Sequence[OutboundEmail]) -> int:
    """Give rows back untried (their batch could not go whole): queued again, due now,
    the attempt not counted; units and batch key stay. Fenced like every outcome."""
    if not rows:
        return 0
    now = timezone.now()
    values = {row.pk: [max(0, row.attempts - 1)] for row in rows}
    shared = {
        "status": Status.QUEUED,
        "next_attempt_at": now,
        "leased_until": None,
        "lease_token": "",
        "updated_at": now,
    }
    changed = sql.update_each(OutboundEmail, ["attempts"], values, shared, lease.fence)
    lease.close(values)
    return len(changed)


def record_rejected(rejected: Iterable[tuple[OutboundEmail, MailapiError]]) -> None:
    """Store messages the backend refused (with ``fail_silently``) as failed rows."""
    pairs = list(rejected)
    using = router.db_for_write(OutboundEmail)
    with transaction.atomic(using=using):
        rows = [row for row, _ in pairs]
        # Keys read back where the database returns none (MySQL): the failures need them.
        sql.bulk_insert(OutboundEmail, rows, key="idempotency_key", using=using)
        FailedSend.objects.using(using).bulk_create(
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
