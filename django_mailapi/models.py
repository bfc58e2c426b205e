"""The outbox and its records. Models know nothing of HTTP."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

from django.db import connections, models
from django.utils import timezone

from .errors import resolve, suggested_action


class Status(models.TextChoices):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: States a worker may pick up (when due).
CLAIMABLE = (Status.QUEUED, Status.DEFERRED)
#: States ``mailapi_retry`` and the admin's "retry now" may re-queue.
RETRYABLE = (Status.FAILED, Status.DEFERRED, Status.QUEUED)


#: States a batch member may be in and still be sent with its batch.
UNSETTLED = (Status.QUEUED, Status.DEFERRED, Status.SENDING, Status.FAILED)
#: States no worker will move on by itself; the search indexes cover these (migration 0009).
SETTLED = (Status.SENT, Status.FAILED, Status.CANCELLED)


_M = TypeVar("_M", bound=models.Model)


class BrowsableQuerySet(models.QuerySet[_M]):
    """Questions the admin asks of a table of millions of rows, answered cheaply."""

    def distinct_values(self, field: str, limit: int) -> list[str]:
        """Up to ``limit`` distinct non-empty values of ``field``, in order.

        On PostgreSQL this is a "loose index scan": a recursive query that asks the
        field's index for the next value greater than the last one found, so it reads
        one index entry per distinct value instead of every row (PostgreSQL has no skip
        scan of its own before version 18). Elsewhere it is a DISTINCT with a LIMIT.
        Only the queryset's table and database are used, not its filters.
        """
        connection = connections[self.db]
        if connection.vendor != "postgresql":
            values = (
                self.model._default_manager.using(self.db)
                .exclude(**{field: ""})
                .exclude(**{f"{field}__isnull": True})
                .order_by(field)
                .values_list(field, flat=True)
                .distinct()[:limit]
            )
            return [str(v) for v in values]
        quote = connection.ops.quote_name
        table = quote(self.model._meta.db_table)
        column = quote(self._column(field))
        # Only identifiers from the model's own metadata are interpolated; the limit is a
        # parameter. Both steps say "> ''" so that a partial index WHERE column > '' (as
        # last_error_code has) can serve them.
        sql = (
            f"WITH RECURSIVE found(value) AS ("  # noqa: S608
            f" (SELECT {column} FROM {table} WHERE {column} > '' ORDER BY {column} LIMIT 1)"
            f" UNION ALL"
            f" SELECT (SELECT {column} FROM {table} WHERE {column} > found.value"
            f" AND {column} > '' ORDER BY {column} LIMIT 1) FROM found"
            f" WHERE found.value IS NOT NULL"
            f") SELECT value FROM found WHERE value IS NOT NULL LIMIT %s"
        )
        return self._walk(sql, limit)

    def distinct_values_after(self, lead: str, field: str, limit: int) -> list[str]:
        """The distinct values of ``field`` where an index leads with ``lead`` then ``field``.

        On PostgreSQL a loose index scan walks the distinct (lead, field) pairs of that
        index, one entry per pair (a few providers times six statuses), so a status that
        occurs nowhere costs nothing to rule out, however many rows there are. Elsewhere
        it is a DISTINCT. ``limit`` bounds the pairs walked. Filters are not applied.
        """
        connection = connections[self.db]
        if connection.vendor != "postgresql":
            values = (
                self.model._default_manager.using(self.db)
                .order_by(field)
                .values_list(field, flat=True)
                .distinct()[:limit]
            )
            return [str(v) for v in values]
        quote = connection.ops.quote_name
        table = quote(self.model._meta.db_table)
        first, second = (quote(self._column(name)) for name in (lead, field))
        sql = (
            f"WITH RECURSIVE found(lead, value) AS ("  # noqa: S608
            f" (SELECT {first}, {second} FROM {table} ORDER BY {first}, {second} LIMIT 1)"
            f" UNION ALL"
            f" SELECT next.lead, next.value FROM found CROSS JOIN LATERAL"
            f" (SELECT {first} AS lead, {second} AS value FROM {table}"
            f" WHERE ({first}, {second}) > (found.lead, found.value)"
            f" ORDER BY {first}, {second} LIMIT 1) next"
            f") SELECT DISTINCT value FROM (SELECT value FROM found LIMIT %s) walked"
            f" ORDER BY value"
        )
        return self._walk(sql, limit)

    def _walk(self, sql: str, limit: int) -> list[str]:
        """Run a loose index scan (one column of values) bounded by ``limit``."""
        with connections[self.db].cursor() as cursor:
            cursor.execute(sql, [limit])
            return [str(row[0]) for row in cursor.fetchall()]

    def _column(self, field: str) -> str:
        concrete = self.model._meta.get_field(field)
        if not isinstance(concrete, models.Field) or not concrete.column:
            raise TypeError(f"{self.model.__name__}.{field} is not a column")
        return concrete.column

    def count_by(self, field: str) -> dict[Any, int]:
        """How many rows of this queryset hold each value of ``field`` (one GROUP BY)."""
        rows = self.order_by().values(field).annotate(n=models.Count("pk")).values_list(field, "n")
        return dict(rows)

    def estimated_count(self) -> int | None:
        """The database's estimate of the table's row count (PostgreSQL), else None."""
        connection = connections[self.db]
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [self.model._meta.db_table],
            )
            row: Any = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


class OutboundEmailQuerySet(BrowsableQuerySet["OutboundEmail"]):
    """The outbox's states, named. Every method that changes rows carries its
    precondition in its own UPDATE, so a row that moved on in between is left alone."""

    def due(self, now: dt.datetime) -> OutboundEmailQuerySet:
        """Waiting rows whose time has come, and rows whose worker lost its lease."""
        return self.filter(
            models.Q(status__in=CLAIMABLE, next_attempt_at__lte=now)
            | models.Q(status=Status.SENDING, leased_until__lt=now)
        )

    def waiting(self, now: dt.datetime) -> OutboundEmailQuerySet:
        """Rows a worker may take now or later: waiting rows, due or not, and lost leases."""
        return self.filter(
            models.Q(status__in=CLAIMABLE) | models.Q(status=Status.SENDING, leased_until__lt=now)
        )

    def stranded(self, now: dt.datetime, grace: dt.timedelta) -> OutboundEmailQuerySet:
        """Due rows that should have been picked up ``grace`` ago: their task was lost."""
        return self.filter(
            models.Q(status__in=CLAIMABLE, next_attempt_at__lte=now - grace)
            | models.Q(status=Status.SENDING, leased_until__lt=now)
        )

    def search(self, term: str) -> OutboundEmailQuerySet:
        """Emails whose recipients or subject contain ``term``, in any case.

        Said once per index that serves it on PostgreSQL: the trigram indexes hold
        settled emails only (a row is indexed once, not at each step on its way out;
        migration 0009), and the partial indexes of waiting and sending emails bring the
        others. One arm per (statuses, column), each carrying its index's condition; no
        condition is common to all arms, which PostgreSQL would pull out of the OR and
        then read no index for it.
        """
        where = models.Q()
        for statuses in (SETTLED, CLAIMABLE, (Status.SENDING,)):
            for column in ("recipients", "subject"):
                where |= models.Q(status__in=statuses, **{f"{column}__icontains": term})
        return self.filter(where)

    def in_doubt(self) -> OutboundEmailQuerySet:
        """Unsent rows the API may already have accepted: they still hold quota units."""
        return self.exclude(status=Status.SENT).filter(quota_units__gt=0)

    def retry_now(self, now: dt.datetime) -> int:
        """failed / deferred / queued -> queued, due now, attempts counted afresh."""
        return self.filter(status__in=RETRYABLE, payload__isnull=False).update(
            status=Status.QUEUED, next_attempt_at=now, attempts=0, updated_at=now
        )

    def cancel(self, now: dt.datetime) -> int:
        """queued / deferred / failed -> cancelled."""
        return self.filter(status__in=CANCELLABLE).update(
            status=Status.CANCELLED, next_attempt_at=None, updated_at=now
        )


#: States "cancel" may stop.
CANCELLABLE = (Status.QUEUED, Status.DEFERRED, Status.FAILED)


class DeliveryStatus(models.TextChoices):
    """What the provider reported after accepting an email (``delivery_status``)."""

    NONE = "", "nothing reported"
    DELIVERED = "delivered"
    DELIVERY_DELAYED = "delivery_delayed"
    SUPPRESSED = "suppressed"
    FAILED = "failed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class OutboundEmail(models.Model):
    """One message on its way to the API."""

    org = models.CharField(max_length=100)
    provider = models.CharField(max_length=200)
    #: The Django 6.1 MAILERS alias the message was sent through ("" = MAILAPI).
    mailer = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    #: Unique through Meta.constraints (a unique field would add a second, LIKE index).
    idempotency_key = models.CharField(max_length=256)
    #: The provider-neutral message (see backend.serialize_message). JSON, never pickle.
    payload = models.JSONField(null=True, blank=True)
    from_email = models.CharField(max_length=320, blank=True, default="")
    recipients = models.TextField(blank=True, default="", help_text="to, cc and bcc")
    recipient_count = models.PositiveIntegerField(default=0)
    #: Bodies and base64 attachments, in bytes (message.payload_bytes): bounds a task.
    payload_bytes = models.PositiveIntegerField(default=0)
    #: ``message.tags`` and ``message.metadata`` (also in the payload, for the provider).
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    #: ``message.send_at``: not sent before then (next_attempt_at starts there).
    send_at = models.DateTimeField(null=True, blank=True)
    #: The recipients the application asked for, when OVERRIDE_RECIPIENTS replaced them.
    original_recipients = models.TextField(blank=True, default="")
    subject = models.TextField(blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    #: What happened after the API accepted it, from delivery events (see events.py).
    delivery_status = models.CharField(
        max_length=20, choices=DeliveryStatus.choices, blank=True, default=DeliveryStatus.NONE
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True, default="")
    #: Idempotency-Key of the batch request that carried this email, once it was sent in
    #: one; its retries go out together under the same key.
    batch_key = models.CharField(max_length=100, blank=True, default="")
    last_error_code = models.CharField(max_length=100, blank=True, default="")
    #: HTTP status of the last error; None when it arose locally or in transport.
    last_error_status = models.PositiveSmallIntegerField(null=True, blank=True)
    #: Quota units this email holds on its org's counters, and the UTC day they are on.
    quota_units = models.PositiveIntegerField(default=0)
    quota_day = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = OutboundEmailQuerySet.as_manager()

    class Meta:
        verbose_name = "outbound email"
        ordering = ("-created_at", "-id")
        # Every index is written again each time a row changes state, so the ones only
        # waiting, sending or failed rows need leave sent rows out (partial indexes).
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=CLAIMABLE),
                name="mailapi_email_waiting",
            ),
            models.Index(
                fields=["leased_until"],
                condition=models.Q(status=Status.SENDING),
                name="mailapi_email_leased",
            ),
            models.Index(fields=["org", "status"], name="mailapi_email_org_status"),
            models.Index(
                fields=["last_error_code"],
                condition=models.Q(last_error_code__gt=""),
                name="mailapi_email_error_code",
            ),
            models.Index(fields=["provider", "status"], name="mailapi_email_provider"),
            models.Index(fields=["-created_at", "-id"], name="mailapi_email_created"),
            # Delivery events find their email by the API's id.
            models.Index(
                fields=["provider_message_id"],
                condition=models.Q(provider_message_id__gt=""),
                name="mailapi_email_message_id",
            ),
            # The admin's "scheduled" filter: the few emails that have a send_at.
            models.Index(
                fields=["send_at"],
                condition=models.Q(send_at__isnull=False),
                name="mailapi_email_send_at",
            ),
            models.Index(
                fields=["delivery_status", "-created_at"],
                condition=models.Q(delivery_status__gt=""),
                name="mailapi_email_delivery",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="mailapi_email_idempotency")
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject[:60]!r} to {self.recipients[:60]}"

    @property
    def in_doubt(self) -> bool:
        """Not sent, yet the API may have accepted it: an attempt's outcome is unknown."""
        return self.status != Status.SENT and self.quota_units > 0

    @property
    def error_source(self) -> str:
        """Which catalog ``last_error_code`` belongs to."""
        return self.provider if self.last_error_status is not None else "mailapi"

    @property
    def suggested_action(self) -> str:
        if not self.last_error_code:
            return ""
        return suggested_action(self.error_source, self.last_error_code, self.last_error_status)


class FailedSendQuerySet(BrowsableQuerySet["FailedSend"]):
    def for_org(self, org: str) -> FailedSendQuerySet:
        return self.filter(org=org)


class FailedSend(models.Model):
    """One failed attempt to send an email, with what the API (or we) said."""

    email = models.ForeignKey(OutboundEmail, on_delete=models.CASCADE, related_name="failures")
    org = models.CharField(max_length=100)
    provider = models.CharField(max_length=200)
    #: The catalog the code comes from: the provider's, or "mailapi" for local codes.
    source = models.CharField(max_length=200)
    error_code = models.CharField(max_length=100)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    message = models.TextField(blank=True, default="")
    details = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=255, blank=True, default="")
    attempt = models.PositiveIntegerField(default=0)
    will_retry = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    objects = FailedSendQuerySet.as_manager()

    class Meta:
        verbose_name = "failed send"
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="mailapi_failed_created"),
            models.Index(fields=["error_code", "-created_at"], name="mailapi_failed_code"),
            models.Index(fields=["org", "-created_at"], name="mailapi_failed_org"),
            models.Index(fields=["provider", "-created_at"], name="mailapi_failed_provider"),
        ]

    def __str__(self) -> str:
        return f"{self.error_code} ({self.http_status or 'local'}) for email #{self.email_id}"

    @property
    def suggested_action(self) -> str:
        return suggested_action(self.source, self.error_code, self.http_status, self.message)

    @property
    def retry_class(self) -> str:
        return resolve(self.source, self.error_code, self.http_status, self.message).retry.value


class EventType(models.TextChoices):
    """Normalized delivery event types (``providers.base.EVENT_TYPES``)."""

    SENT = "sent"
    DELIVERED = "delivered"
    DELIVERY_DELAYED = "delivery_delayed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    SCHEDULED = "scheduled"
    UNKNOWN = "unknown"


class DeliveryEventQuerySet(BrowsableQuerySet["DeliveryEvent"]):
    def unmatched(self) -> DeliveryEventQuerySet:
        """Events not (yet) tied to an email: its id may not have been recorded yet."""
        return self.filter(email__isnull=True)


class DeliveryEvent(models.Model):
    """One event a provider reported about an email it had accepted (a webhook).

    Stored once per (provider, provider_event_id). ``email`` is null while no email
    with the event's ``provider_message_id`` is known; the event is matched when that
    email's send is recorded.
    """

    email = models.ForeignKey(
        OutboundEmail,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="events",
        # The (email, occurred_at) index below serves the foreign key too.
        db_index=False,
    )
    #: The email's org once matched; "" while unmatched.
    org = models.CharField(max_length=100, blank=True, default="")
    provider = models.CharField(max_length=200)
    #: Svix's svix-id, Emitlo's delivery id, an id in the body, or the body's SHA-256.
    provider_event_id = models.CharField(max_length=255)
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    type = models.CharField(max_length=20, choices=EventType.choices)
    #: The address(es) the event is about, comma-separated.
    recipient = models.TextField(blank=True, default="")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    #: raw_type, bounce_type, reason, link, ... (see providers.base.DeliveryReport).
    details = models.JSONField(default=dict, blank=True)

    objects = DeliveryEventQuerySet.as_manager()

    class Meta:
        verbose_name = "delivery event"
        ordering = ("-received_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_event_id"], name="mailapi_event_unique"
            )
        ]
        indexes = [
            models.Index(fields=["email", "occurred_at"], name="mailapi_event_email"),
            models.Index(
                fields=["provider", "provider_message_id"],
                condition=models.Q(email__isnull=True),
                name="mailapi_event_unmatched",
            ),
            # The sweeper's look at the last hour's unmatched events (events.match_stranded).
            models.Index(
                fields=["received_at"],
                condition=models.Q(email__isnull=True),
                name="mailapi_event_unmatched_at",
            ),
            models.Index(fields=["-received_at", "-id"], name="mailapi_event_received"),
            models.Index(fields=["type", "-received_at"], name="mailapi_event_type"),
            models.Index(fields=["provider", "-received_at"], name="mailapi_event_provider"),
            models.Index(fields=["org", "-received_at"], name="mailapi_event_org"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.type} for {self.provider_message_id or '?'}"

    @property
    def recipients(self) -> list[str]:
        return [item for item in self.recipient.split(", ") if item]


class SuppressionReason(models.TextChoices):
    """Why an address is on the suppression list."""

    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class SuppressionQuerySet(BrowsableQuerySet["Suppression"]):
    def applying_to(self, org: str) -> SuppressionQuerySet:
        """Rows that stop ``org``'s emails: its own and those for every org."""
        return self.filter(models.Q(org__isnull=True) | models.Q(org=org))


class Suppression(models.Model):
    """An address that must not be mailed: for one org, or for every org (``org`` null).

    Rows are unique per (org, address), every-org rows per address: two partial unique
    constraints, because NULLs never collide in a plain one (PostgreSQL, SQLite).
    """

    #: None: every org (a hard bounce: the mailbox does not exist for anyone). NULL and
    #: not "", as SPEC §5 names it, so "every org" can never be mistaken for an org name.
    org = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    #: The bare address, lower-case (``suppression.normalize``).
    address = models.CharField(max_length=320)
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    #: The delivery event that added the row, for automatic rows.
    event = models.ForeignKey(
        DeliveryEvent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="suppressions",
    )
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        verbose_name = "suppression"
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["org", "address"],
                condition=models.Q(org__isnull=False),
                name="mailapi_suppression_org",
            ),
            models.UniqueConstraint(
                fields=["address"],
                condition=models.Q(org__isnull=True),
                name="mailapi_suppression_every_org",
            ),
        ]
        indexes = [
            # The worker's lookup (address = ANY(...)) and the admin's prefix search
            # (address LIKE 'x%'): the pattern operator class serves both on PostgreSQL.
            models.Index(
                fields=["address"],
                name="mailapi_suppression_address",
                opclasses=["varchar_pattern_ops"],
            ),
            models.Index(fields=["-created_at", "-id"], name="mailapi_suppression_created"),
            models.Index(fields=["reason", "-created_at"], name="mailapi_suppression_reason"),
            models.Index(fields=["org", "-created_at"], name="mailapi_suppression_org_new"),
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.org or 'every org'}, {self.reason})"


class OrgQuota(models.Model):
    """Per-org limits. A null limit means: use the MAILAPI default."""

    org = models.CharField(max_length=100, unique=True)
    daily_limit = models.PositiveIntegerField(null=True, blank=True)
    monthly_limit = models.PositiveIntegerField(null=True, blank=True)
    paused = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "org quota"
        ordering = ("org",)

    def __str__(self) -> str:
        return self.org


class Period(models.TextChoices):
    DAY = "day"
    MONTH = "month"


class UsageCounter(models.Model):
    """Units an org used in one UTC day or month."""

    org = models.CharField(max_length=100)
    period = models.CharField(max_length=5, choices=Period.choices)
    period_start = models.DateField()
    units_sent = models.PositiveBigIntegerField(default=0)
    units_failed = models.PositiveBigIntegerField(default=0)

    objects = BrowsableQuerySet["UsageCounter"].as_manager()

    class Meta:
        verbose_name = "usage counter"
        ordering = ("-period_start", "org", "period")
        constraints = [
            models.UniqueConstraint(
                fields=["org", "period", "period_start"], name="mailapi_usage_unique"
            )
        ]
        indexes = [models.Index(fields=["period", "period_start"], name="mailapi_usage_period")]

    def __str__(self) -> str:
        return f"{self.org} {self.period} {self.period_start}: {self.units_sent}"
