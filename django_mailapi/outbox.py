"""The state machine of a send: claim, send, record the outcome, sweep.

queued ──claim──▶ sending ──API 2xx──▶ sent
   ▲                 │
   │   transient     ├──────────────▶ queued (next_attempt_at = now + backoff)
   │   quota         ├──────────────▶ deferred (next UTC day / month) or failed
   │   permanent     └──────────────▶ failed
   └──── sweeper / mailapi_retry / admin "retry now"

A claim takes a lease on the due rows, so two workers can never both send the same row:
on PostgreSQL the rows are read FOR UPDATE SKIP LOCKED and leased, booked and batched in
one transaction (claim_and_plan); elsewhere one conditional UPDATE … RETURNING takes the
lease. A worker that dies leaves a lease that runs out, and the row is claimed again.
Every retry reuses the row's Idempotency-Key, so if the first worker's request did
reach the API, the API answers the retry with the original email instead of sending a
second one. Emails sent in one batch request share that request's key
(``batch_key``) and are retried together under it. No lock is held during an HTTP call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import errors, quota, ratelimit, signals, sql
from .conf import MailapiSettings, get_settings
from .exceptions import MailapiError, QuotaExceeded, SendError
from .models import RETRYABLE, FailedSend, OutboundEmail, Status
from .providers import BUILTIN, get_provider, resolve_provider_class
from .providers.base import Provider

logger = logging.getLogger("django_mailapi")


# --- claim -------------------------------------------------------------------------------
def claim(
    ids: Sequence[int], now: dt.datetime, lease_seconds: int, *, batch_keys: Iterable[str] = ()
) -> list[OutboundEmail]:
    """Take a lease on those of ``ids`` (or of the batches ``batch_keys``) that are due.

    One ``UPDATE … RETURNING`` on PostgreSQL and SQLite; an UPDATE and a SELECT elsewhere.
    """
    token = uuid.uuid4().hex
    keys = [key for key in batch_keys if key]
    lease = {
        "status": Status.SENDING,
        "lease_token": token,
        "leased_until": now + dt.timedelta(seconds=lease_seconds),
        "updated_at": now,
    }
    if not keys and sql.native(OutboundEmail):
        when = sql.prep(OutboundEmail, "next_attempt_at", now)
        return sql.update_returning(
            OutboundEmail,
            list(ids),
            _DUE_SQL,
            [Status.QUEUED, Status.DEFERRED, when, Status.SENDING, when],
            lease,
            increment="attempts",
        )
    where = Q(pk__in=list(ids)) if not keys else Q(batch_key__in=keys)
    taken = OutboundEmail.objects.due(now).filter(where).update(**lease, attempts=F("attempts") + 1)
    if not taken:
        return []
    return list(OutboundEmail.objects.filter(where, lease_token=token).order_by("pk"))


#: OutboundEmailQuerySet.due() in SQL, for claim's single statement.
_DUE_SQL = "(status IN (%s, %s) AND next_attempt_at <= %s) OR (status = %s AND leased_until < %s)"


# --- send ----------------------------------------------------------------------------------
def process(ids: Sequence[int]) -> dict[str, int]:
    """Send the due emails among ``ids``. Returns a count per outcome."""
    now = timezone.now()
    lease = get_settings().LEASE_SECONDS
    if _plans_while_claiming():
        deliveries = claim_and_plan(ids, now, lease)
    else:
        rows = claim(ids, now, lease)
        # A batch that failed as a whole is retried whole: bring in its other due members.
        batch_keys = {row.batch_key for row in rows if row.batch_key}
        if batch_keys:
            rows += claim(ids, now, lease, batch_keys=batch_keys)
        deliveries = _deliveries(rows, write=True)
        for delivery in deliveries:
            delivery.prepare()
    outcomes: Counter[str] = Counter()
    for delivery in deliveries:
        outcomes.update(delivery.send())
    return dict(outcomes)


def _deliveries(rows: list[OutboundEmail], *, write: bool) -> list[Delivery]:
    groups: dict[tuple[str, str, str], list[OutboundEmail]] = defaultdict(list)
    for row in rows:
        groups[(row.mailer, row.org, row.provider)].append(row)
    return [
        Delivery(get_settings(mailer), group, write=write)
        for (mailer, _org, _provider), group in groups.items()
    ]


def _plans_while_claiming() -> bool:
    from django.db import connections, router

    return connections[router.db_for_write(OutboundEmail)].vendor == "postgresql"


#: Written on every row claim_and_plan takes, each with its own values.
_PLANNED = ["attempts", "quota_units", "quota_day", "batch_key"]


def claim_and_plan(ids: Sequence[int], now: dt.datetime, lease_seconds: int) -> list[Delivery]:
    """Claim the due emails among ``ids`` and plan their sending, in one transaction.

    PostgreSQL: the rows are read ``FOR UPDATE SKIP LOCKED`` (rows another worker is
    claiming right now are left to it), quota is booked and batches are formed in
    memory, and one ``UPDATE`` writes the lease with each row's units, day and batch
    key. Either all of that is committed or none of it. Batch siblings of a row that
    failed with its batch are brought in, as ``process`` does elsewhere.
    """
    token = uuid.uuid4().hex
    until = now + dt.timedelta(seconds=lease_seconds)
    with transaction.atomic():
        due = OutboundEmail.objects.due(now).select_for_update(skip_locked=True).order_by("pk")
        rows = list(due.filter(pk__in=list(ids)))
        keys = {row.batch_key for row in rows if row.batch_key}
        if keys:
            rows += list(due.filter(batch_key__in=keys).exclude(pk__in=[r.pk for r in rows]))
        if not rows:
            return []
        for row in rows:
            row.status, row.lease_token, row.leased_until = Status.SENDING, token, until
            row.updated_at = now
            row.attempts += 1
        deliveries = _deliveries(rows, write=False)
        for delivery in deliveries:
            delivery.prepare()
        sql.update_each(
            OutboundEmail,
            _PLANNED,
            {row.pk: [getattr(row, name) for name in _PLANNED] for row in rows},
            {
                "status": Status.SENDING,
                "lease_token": token,
                "leased_until": until,
                "updated_at": now,
            },
        )
    return deliveries


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


def as_send_error(exc: Exception) -> SendError:
    """Any exception met while sending, as the SendError to record for it."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, MailapiError):  # quota, invalid message, unsupported, configuration
        return SendError(exc.message, code=exc.code, local=True)
    return SendError(f"{type(exc).__name__}: {exc}", code="unexpected_error", local=True)


class Delivery:
    """Sends one claimed group (same mailer, org and provider) and records the outcomes.

    Per group: one quota reservation for all its emails, one request per batch of
    batchable emails (one per email otherwise), and bulk writes for what happened.
    """

    #: Sent emails are written down at least this often, so a crash re-sends few.
    FLUSH_EVERY = 20

    def __init__(
        self, conf: MailapiSettings, rows: list[OutboundEmail], *, write: bool = True
    ) -> None:
        self.conf = conf
        self.rows = rows
        #: False: prepare() books quota without writing it; the caller writes the plan.
        self.write = write
        self.sent: list[tuple[OutboundEmail, str]] = []
        self.outcomes: Counter[str] = Counter()
        #: Rows that will not be sent this time, recorded first thing in send().
        self.refused: list[tuple[OutboundEmail, SendError]] = []
        self.plan: tuple[Provider, str, int, list[OutboundEmail], list[OutboundEmail]] | None
        self.plan = None

    def run(self) -> Counter[str]:
        self.prepare()
        return self.send()

    def prepare(self) -> None:
        """Check the rows, book their quota and put them in batches. No HTTP."""
        try:
            provider, api_key = provider_for(self.rows[0], self.conf)
        except Exception as exc:  # no key, unknown provider: every email fails the same way
            self.refused = [(row, as_send_error(exc)) for row in self.rows]
            return
        ready = self.checked(provider)
        size = min(self.conf.BATCH_SIZE, provider.max_batch)

        def fits(row: OutboundEmail) -> bool:
            return size > 1 and row.payload is not None and provider.can_batch(row.payload)

        # Batches are formed as quota is booked, and written down with it.
        ready = self.reserved(
            ready, lambda rows: self.assign_batches(list(filter(fits, rows)), size)
        )
        batchable = [row for row in ready if fits(row)]
        singles = [row for row in ready if not fits(row)]
        self.plan = (provider, api_key, size, batchable, singles)

    def send(self) -> Counter[str]:
        """Record what prepare() refused, then send the rest and record the outcomes."""
        self.fail(self.refused)
        self.refused = []
        if self.plan is None:
            return self.outcomes
        provider, api_key, size, batchable, singles = self.plan
        self.plan = None
        for batch_key, chunk in self.batches(batchable, size):
            self.send_batch(provider, api_key, batch_key, chunk)
        for row in singles:
            self.send_single(provider, api_key, row)
            if len(self.sent) >= self.FLUSH_EVERY:
                self.flush()
        self.flush()
        return self.outcomes

    def checked(self, provider: Provider) -> list[OutboundEmail]:
        """Rows the provider accepts as they are; the rest are refused with a local code."""
        ready = []
        for row in self.rows:
            try:
                if row.payload is None:
                    raise SendError(
                        "The email's payload is gone (KEEP_SENT_PAYLOAD=False or purged).",
                        code="payload_missing",
                        local=True,
                    )
                provider.validate(row.payload)
            except Exception as exc:
                self.refused.append((row, as_send_error(exc)))
            else:
                ready.append(row)
        return ready

    def reserved(
        self, rows: list[OutboundEmail], assign: Callable[[list[OutboundEmail]], list[int]]
    ) -> list[OutboundEmail]:
        """Rows that hold quota (reserved now in one operation, or before a crash)."""
        granted, refused = reserve_rows(rows, self.conf, assign, write=self.write)
        self.refused += [(row, as_send_error(exc)) for row, exc in refused]
        return granted

    @staticmethod
    def assign_batches(rows: list[OutboundEmail], size: int) -> list[int]:
        """Give rows not yet in a batch one of ``size`` (in memory); returns their pks.

        The key is a digest of the members' own keys, so it names this batch alone.
        """
        fresh = [row for row in rows if not row.batch_key]
        keyed: list[int] = []
        for start in range(0, len(fresh), size):
            chunk = fresh[start : start + size]
            if len(chunk) == 1:
                continue  # a batch of one is just a send
            digest = hashlib.sha256("\n".join(r.idempotency_key for r in chunk).encode())
            key = f"mailapi-batch/{digest.hexdigest()[:48]}"
            for row in chunk:
                row.batch_key = key
            keyed += [row.pk for row in chunk]
        return keyed

    def batches(
        self, rows: list[OutboundEmail], size: int
    ) -> Iterator[tuple[str, list[OutboundEmail]]]:
        """Rows by batch key ("" for an email sent alone); earlier batches keep theirs."""
        # Rows booked one by one, or holding quota from before a crash, have no batch yet.
        fresh = [row for row in rows if not row.batch_key]
        if self.assign_batches(fresh, size):
            by_key: dict[str, list[int]] = defaultdict(list)
            for row in fresh:
                if row.batch_key:
                    by_key[row.batch_key].append(row.pk)
            for key, pks in by_key.items():
                OutboundEmail.objects.filter(pk__in=pks).update(batch_key=key)
        grouped: dict[str, list[OutboundEmail]] = defaultdict(list)
        for row in rows:
            if row.batch_key:
                grouped[row.batch_key].append(row)
            else:
                yield "", [row]
        yield from grouped.items()

    def send_single(self, provider: Provider, api_key: str, row: OutboundEmail) -> None:
        try:
            ratelimit.wait_for_slot(api_key, self.conf.RATE_LIMIT)
            assert row.payload is not None
            message_id = provider.deliver(row.payload, row.idempotency_key)
        except Exception as exc:
            if not isinstance(exc, MailapiError):
                logger.exception("django-mailapi: unexpected error sending email #%s", row.pk)
            self.fail([(row, as_send_error(exc))])
        else:
            self.sent.append((row, message_id))

    def send_batch(
        self, provider: Provider, api_key: str, batch_key: str, rows: list[OutboundEmail]
    ) -> None:
        if not batch_key:
            self.send_single(provider, api_key, rows[0])
            return
        try:
            ratelimit.wait_for_slot(api_key, self.conf.RATE_LIMIT)
            results = provider.send_batch([row.payload or {} for row in rows], batch_key)
            if len(results) != len(rows):
                raise SendError(
                    f"The API answered a batch of {len(rows)} with {len(results)} results.",
                    code="invalid_response",
                    local=True,
                )
        except Exception as exc:
            if not isinstance(exc, MailapiError):
                logger.exception("django-mailapi: unexpected error sending batch %s", batch_key)
            self.fail([(row, as_send_error(exc)) for row in rows], together=True)
            return
        failed = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, SendError):
                failed.append((row, result))
            else:
                self.sent.append((row, result))
        self.flush()
        self.fail(failed)

    def flush(self) -> None:
        if self.sent:
            record_sent_many(self.sent, self.conf)
            self.outcomes["sent"] += len(self.sent)
            self.sent = []

    def fail(self, pairs: list[tuple[OutboundEmail, SendError]], together: bool = False) -> None:
        if pairs:
            self.outcomes.update(record_failures(pairs, self.conf, together=together))


def reserve_rows(
    rows: list[OutboundEmail],
    conf: MailapiSettings,
    assign: Callable[[list[OutboundEmail]], list[int]] | None = None,
    *,
    write: bool = True,
) -> tuple[list[OutboundEmail], list[tuple[OutboundEmail, QuotaExceeded]]]:
    """Book units for rows of one org: all in one operation, else as many as fit.

    Rows that already hold units (reserved before their worker died) keep them. What was
    booked is written on the rows in the same transaction, so it is never booked twice.
    When all fit, ``assign`` (if given) puts rows in batches in memory and returns the
    pks it changed; their batch keys are written in that same statement. ``write=False``
    (inside claim_and_plan's transaction): book, and leave the writing to the caller.
    """
    holding = [row for row in rows if row.quota_units]
    needing = [row for row in rows if not row.quota_units]
    if not needing:
        return rows, []
    granted: list[OutboundEmail] = []
    refused: list[tuple[OutboundEmail, QuotaExceeded]] = []
    org = needing[0].org
    units = [quota.units_for(row.recipient_count, conf) for row in needing]

    def book(batch: list[OutboundEmail], amounts: list[int], *, batches: bool) -> None:
        # quota.reserve raises after its own statement, leaving the transaction usable.
        day = quota.reserve(org, sum(amounts), timezone.now(), conf)
        for row, n in zip(batch, amounts, strict=True):
            row.quota_units, row.quota_day = n, day
        changed = {row.pk for row in batch}
        if batches and assign:
            changed.update(assign(holding + needing))
        if write:
            _note_reservations([row for row in rows if row.pk in changed])

    def together() -> contextlib.AbstractContextManager[Any]:
        return transaction.atomic() if write else contextlib.nullcontext()

    try:
        with together():
            book(needing, units, batches=True)
        granted = needing
    except QuotaExceeded as exc:
        if len(needing) == 1:
            refused = [(needing[0], exc)]
        else:  # not all fit: take them one by one, in order
            for row, n in zip(needing, units, strict=True):
                try:
                    with together():
                        book([row], [n], batches=False)
                    granted.append(row)
                except QuotaExceeded as one:
                    refused.append((row, one))
        refused = [(row, _never_fits(row, exc, conf)) for row, exc in refused]
    order = {row.pk: i for i, row in enumerate(rows)}
    return sorted(holding + granted, key=lambda r: order[r.pk]), refused


def _never_fits(row: OutboundEmail, exc: QuotaExceeded, conf: MailapiSettings) -> QuotaExceeded:
    """A refusal, made permanent when the email alone is bigger than the limit."""
    if exc.code not in ("daily_quota_exceeded", "monthly_quota_exceeded"):
        return exc
    limits = quota.limits_for(row.org, conf)
    limit = limits.daily if exc.code == "daily_quota_exceeded" else limits.monthly
    units = quota.units_for(row.recipient_count, conf)
    # A limit of 0 means "nothing for now" (like a pause): waiting for it to rise is right.
    if not limit or units <= limit:
        return exc
    period = "daily" if exc.code == "daily_quota_exceeded" else "monthly"
    return QuotaExceeded(
        f"This email needs {units} units but org {row.org!r} has a {period} limit of "
        f"{limit}: it can never be sent under that limit.",
        code="quota_too_small",
        org=row.org,
        period=exc.period,
    )


def _note_reservations(rows: list[OutboundEmail]) -> None:
    """Write the rows' quota units, quota day and batch key: one UPDATE per combination
    (usually one in all: a task's emails mostly have as many recipients)."""
    same: dict[tuple[int, dt.date | None, str], list[int]] = defaultdict(list)
    for row in rows:
        same[(row.quota_units, row.quota_day, row.batch_key)].append(row.pk)
    for (units, day, key), pks in same.items():
        OutboundEmail.objects.filter(pk__in=pks).update(
            quota_units=units, quota_day=day, batch_key=key
        )


def reserve(row: OutboundEmail, conf: MailapiSettings) -> None:
    """Book one row's units (see reserve_rows); raises QuotaExceeded if they do not fit."""
    _granted, refused = reserve_rows([row], conf)
    if refused:
        raise refused[0][1]


# --- outcomes ------------------------------------------------------------------------------
def record_sent_many(sent: list[tuple[OutboundEmail, str]], conf: MailapiSettings) -> None:
    """Mark emails sent with their API ids: one statement on PostgreSQL and SQLite."""
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
        row.provider_message_id = message_id[:255]
        ids[row.pk] = (row.provider_message_id,)
        for name, value in shared.items():
            setattr(row, name, value)
    sql.update_each(OutboundEmail, ["provider_message_id"], ids, shared)
    for row, _ in sent:
        signals.message_sent.send(sender=OutboundEmail, email=row)


def backoff(attempt: int, conf: MailapiSettings) -> float:
    """Exponential backoff with full jitter in its upper half, capped."""
    ceiling = min(conf.RETRY_MAX_DELAY, conf.RETRY_BASE_DELAY * 2 ** max(0, attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


_FAILURE_FIELDS = [
    "status",
    "next_attempt_at",
    "attempts",
    "updated_at",
    "leased_until",
    "lease_token",
    "last_error_code",
    "last_error_status",
    "quota_units",
    "quota_day",
]


def _plan(
    row: OutboundEmail, error: SendError, source: str, conf: MailapiSettings, now: dt.datetime
) -> tuple[str, bool, bool, errors.RetryClass]:
    """Set the row's next state; returns (outcome, will_retry, exhausted, retry class).

    ``source`` is the catalog the error's code belongs to.
    """
    retry = errors.resolve(source, error.code, error.http_status, error.message).retry
    row.updated_at = now
    row.leased_until = None
    row.lease_token = ""
    row.last_error_code = error.code[:100]
    row.last_error_status = error.http_status
    if retry.is_transient and row.attempts <= conf.MAX_RETRIES:
        delay = backoff(row.attempts, conf)
        if retry is errors.RetryClass.RETRY_AFTER and error.retry_after is not None:
            delay = max(error.retry_after, 0.5) + random.uniform(0, 0.5)
        row.status = Status.QUEUED
        row.next_attempt_at = now + dt.timedelta(seconds=delay)
        return "retry", True, False, retry
    if retry.is_quota and conf.ON_QUOTA_EXCEEDED == "defer":
        until = (
            quota.next_day(now) if retry is errors.RetryClass.DEFER_DAY else quota.next_month(now)
        )
        # Spread the wake-up over a minute so a backlog does not arrive at once.
        row.next_attempt_at = until + dt.timedelta(seconds=random.uniform(0, 60))
        row.status = Status.DEFERRED
        # A deferral is not a failed try: it does not count against MAX_RETRIES.
        row.attempts = max(0, row.attempts - 1)
        return "deferred", True, False, retry
    row.status = Status.FAILED
    row.next_attempt_at = None
    if retry.is_transient:
        row.last_error_code, row.last_error_status = "retries_exhausted", None
        return "failed", False, True, retry
    return "failed", False, False, retry


def record_failures(
    pairs: list[tuple[OutboundEmail, SendError]],
    conf: MailapiSettings,
    *,
    together: bool = False,
) -> Counter[str]:
    """Write a FailedSend per attempt and move each row on, in one transaction.

    ``together``: the rows failed as one batch request; those that will be retried get
    one shared time and one task, so the batch goes out again whole under its key.
    """
    now = timezone.now()
    outcomes: Counter[str] = Counter()
    failures: list[FailedSend] = []
    releases: dict[tuple[str, dt.date, bool], int] = defaultdict(int)
    planned = []
    tokens: dict[int, str] = {}
    for row, error in pairs:
        held = (row.quota_units, row.quota_day)
        tokens[row.pk] = row.lease_token
        source = "mailapi" if error.local else _catalog_name(row, conf)
        outcome, will_retry, exhausted, retry = _plan(row, error, source, conf, now)
        planned.append((row, error, outcome, will_retry, retry))
        outcomes[outcome] += 1
        if held[0] and held[1] is not None:
            releases[(row.org, held[1], not will_retry)] += held[0]
            row.quota_units, row.quota_day = 0, None
        failures.append(_failure(row, error, source, will_retry, now))
        if exhausted:
            gave_up = SendError(
                f"Gave up after {row.attempts} attempts; the last error was "
                f"{error.code}: {error.message}"[:2000],
                code="retries_exhausted",
                local=True,
            )
            failures.append(_failure(row, gave_up, "mailapi", False, now))
    if together:
        retrying = [row for row, *_ in planned if row.status == Status.QUEUED]
        if retrying:
            shared = min(row.next_attempt_at for row in retrying if row.next_attempt_at)
            for row in retrying:
                row.next_attempt_at = shared

    with transaction.atomic():
        for (org, day, failed), units in releases.items():
            quota.release(org, units, day, failed=failed)
        FailedSend.objects.bulk_create(failures)
        # A worker whose lease ran out must not overwrite what the next one did.
        current = dict(
            OutboundEmail.objects.filter(pk__in=list(tokens)).values_list("pk", "lease_token")
        )
        same: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for row, *_ in planned:
            if current.get(row.pk) == tokens[row.pk]:
                same[tuple(getattr(row, name) for name in _FAILURE_FIELDS)].append(row.pk)
        for values, pks in same.items():  # one UPDATE for a batch that failed as one
            OutboundEmail.objects.filter(pk__in=pks).update(
                **dict(zip(_FAILURE_FIELDS, values, strict=True))
            )

    by_row: dict[int, FailedSend] = {}
    for failure in failures:
        by_row.setdefault(failure.email_id, failure)  # the attempt's own record
    for row, error, outcome, will_retry, retry in planned:
        log = logger.info if will_retry else logger.warning
        log(
            "django-mailapi: email #%s %s: %s %s (%s)",
            row.pk,
            outcome,
            error.code,
            error.http_status or "local",
            error.message[:200],
        )
        signals.send_failed.send(sender=OutboundEmail, email=row, failure=by_row[row.pk])
        if retry.is_quota:
            signals.quota_exceeded.send(
                sender=OutboundEmail, email=row, org=row.org, code=error.code
            )
    waiting = [row for row, _error, _outcome, will_retry, _retry in planned if will_retry]
    if together:
        schedule(waiting, conf, now)
    else:
        for row in waiting:
            schedule([row], conf, now)
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


def _catalog_name(row: OutboundEmail, conf: MailapiSettings) -> str:
    try:
        return provider_class_for(row, conf).catalog or row.provider
    except MailapiError:
        return row.provider


def schedule(rows: list[OutboundEmail], conf: MailapiSettings, now: dt.datetime) -> None:
    """Publish one delayed task for the rows' next attempt, if it is near enough.

    Celery keeps delayed tasks in the worker's memory and, on Redis/SQS, re-delivers
    them after the broker's visibility timeout; so long delays are left to the sweeper.
    """
    from .tasks import send_emails

    if not rows:
        return
    due = min(row.next_attempt_at or now for row in rows)
    delay = (due - now).total_seconds()
    if delay > conf.MAX_ETA_SECONDS:
        return
    options: dict[str, Any] = {"countdown": max(0.0, delay)}
    if conf.QUEUE:
        options["queue"] = conf.QUEUE
    try:
        send_emails.apply_async(args=[[row.pk for row in rows]], **options)
    except Exception as exc:  # the sweeper will pick them up
        logger.warning("django-mailapi could not schedule %d email(s): %s", len(rows), exc)


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
        queryset.filter(status__in=RETRYABLE)
        .filter(payload__isnull=False)
        .values_list("pk", "mailer")
    )
    if not rows:
        return 0
    OutboundEmail.objects.filter(pk__in=[pk for pk, _ in rows]).update(
        status=Status.QUEUED, next_attempt_at=now, attempts=0, batch_key="", updated_at=now
    )
    transaction.on_commit(lambda: _dispatch_by_mailer(rows, dispatch))
    return len(rows)


def cancel(queryset: QuerySet[OutboundEmail]) -> int:
    """Cancel emails that have not been sent yet."""
    now = timezone.now()
    return queryset.filter(status__in=[Status.QUEUED, Status.DEFERRED, Status.FAILED]).update(
        status=Status.CANCELLED, next_attempt_at=None, updated_at=now
    )
