"""Sending one claimed group: check, book quota, plan the requests, send, record.

A ``Delivery`` is made by the claim for the rows of one (mailer, org, provider) and
prepared inside the claim's transaction (no HTTP there): every email is checked, its
suppressed recipients are left out, quota is booked in one operation (or booking unit by
booking unit when not all fit) for the recipients left, and the requests are planned.
After the claim commits, ``steps()`` makes the requests one by one, each only while the
lease still holds all of its rows, and records what happened.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, cast

from django.db import router
from django.utils import timezone

from .. import events, quota, ratelimit, sql, suppression
from ..conf import MailapiSettings
from ..exceptions import MailapiError, QuotaExceeded, SendError
from ..message import Message
from ..models import OutboundEmail
from ..providers import get_provider
from ..providers.base import Provider
from . import batching
from .lease import Lease
from .record import (
    abandon,
    as_send_error,
    provider_class_for,
    record_failures,
    record_sent,
)

logger = logging.getLogger("django_mailapi")


def checkable(row: OutboundEmail) -> bool:
    """Whether the suppression check may change this email before sending.

    Not when it holds quota units from an earlier attempt (or a batch key, which only
    such emails have): the API may have it already, under that key with that payload,
    and a changed payload under the same key would be refused (409) or sent twice.
    """
    return not row.quota_units and not row.batch_key and row.payload is not None


def suppression_wanted(rows: Iterable[OutboundEmail]) -> list[tuple[str, list[str]]]:
    """(org, recipients) of the rows the suppression check looks at: one lookup's input."""
    recipients = suppression.recipients_of
    return [(row.org, recipients(cast(Message, row.payload))) for row in rows if checkable(row)]


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


class Delivery:
    """One claimed group (same mailer, org and provider): its plan and its sending."""

    #: Sent emails are written down at least this often, so a crash re-sends few.
    FLUSH_EVERY = 20

    def __init__(self, conf: MailapiSettings, rows: list[OutboundEmail], lease: Lease) -> None:
        self.conf = conf
        self.rows = rows
        self.lease = lease
        #: Rows that held quota units before this claim: an earlier attempt's outcome is
        #: unknown, so they keep their units and their batch whatever happens now.
        self.carried = {row.pk for row in rows if row.quota_units}
        self.sent: list[tuple[OutboundEmail, str]] = []
        #: Rows recorded as sent, whose early delivery events are matched at the end.
        self.recorded: list[OutboundEmail] = []
        self.outcomes: Counter[str] = Counter()
        #: Rows that will not be sent this time, recorded first thing in steps().
        self.refused: list[tuple[OutboundEmail, SendError]] = []
        self.requests: list[batching.Request] = []
        #: Rows that go to fewer recipients than asked, with who was left out; the claim
        #: stores their narrowed payloads (``record.record_narrowed``).
        self.narrowed: list[tuple[OutboundEmail, list[suppression.LeftOut]]] = []
        self.provider: Provider | None = None
        self.api_key = ""

    # --- planning (inside the claim's transaction) ------------------------------------
    def prepare(self, blocked: suppression.Blocked | None = None) -> None:
        """Check the rows, leave out suppressed recipients, book quota and plan the
        requests. No HTTP. ``blocked``: the claim's suppression lookup (made here when
        not given)."""
        try:
            self.provider, self.api_key = provider_for(self.rows[0], self.conf)
        except Exception as exc:  # no key, unknown provider: every email fails the same way
            self.refused = [(row, as_send_error(exc)) for row in self.rows]
            return
        if blocked is None:
            blocked = suppression.lookup(suppression_wanted(self.rows))
        ready = self.booked(self.unsuppressed(self.checked(self.provider), blocked))
        size = batching.batch_size(type(self.provider), self.conf)
        self.requests = batching.plan_requests(ready, self.provider, size, self.carried)

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
        # A keyed batch goes whole or not at all: a refused member holds back the rest.
        refused_keys = {row.batch_key for row, _ in self.refused if row.batch_key}
        if refused_keys:
            held_back = [row for row in ready if row.batch_key in refused_keys]
            ready = [row for row in ready if row.batch_key not in refused_keys]
            self.refused += [
                (
                    row,
                    SendError(
                        "Another email of its batch was refused, and a batch is only sent whole.",
                        code="batch_member_refused",
                        local=True,
                    ),
                )
                for row in held_back
            ]
        return ready

    def unsuppressed(
        self, rows: list[OutboundEmail], blocked: suppression.Blocked
    ) -> list[OutboundEmail]:
        """Rows without their suppressed recipients (to, cc and bcc), before quota is
        booked and batches are planned, so both count the recipients actually mailed.

        An email left with nobody, or with no ``to`` where the provider needs one, is
        refused with ``recipient_suppressed``; one left with some goes to them, and the
        claim stores its narrowed payload and a FailedSend naming who was left out.
        Only emails the API cannot have yet are changed (``checkable``): one in doubt
        goes again exactly as it went, payload and key, since the API may have it.
        """
        if not blocked:
            return rows
        assert self.provider is not None
        kept = []
        for row in rows:
            if not checkable(row):
                kept.append(row)
                continue
            payload, left_out = suppression.narrow(cast(Message, row.payload), row.org, blocked)
            if not left_out:
                kept.append(row)
            elif not payload["to"] and (
                self.provider.requires_to or not suppression.recipients_of(payload)
            ):
                self.refused.append((row, self._all_suppressed(payload, left_out)))
            else:
                row.payload = payload
                row.recipient_count = len(suppression.recipients_of(payload))
                self.narrowed.append((row, left_out))
                kept.append(row)
        return kept

    def _all_suppressed(self, left: Message, left_out: list[suppression.LeftOut]) -> SendError:
        others = suppression.recipients_of(left)
        message = f"Every {'to ' if others else ''}recipient is on the suppression list: "
        message += suppression.describe(left_out) + "."
        if others:
            message += (
                f" The {self.provider.name if self.provider else ''} API needs an address in "
                f"to, so the email was not sent to its other recipients ({', '.join(others)}) "
                "either."
            )
        else:
            message += " Nothing was sent."
        return SendError(
            message,
            code="recipient_suppressed",
            local=True,
            details={
                "left_out": [item.as_json() for item in left_out],
                "not_sent": others,
            },
        )

    def booked(self, rows: list[OutboundEmail]) -> list[OutboundEmail]:
        """Rows that hold quota: carried over, or booked now (all at once if they fit,
        else booking unit by booking unit, in order). The rest are refused."""
        needing = [row for row in rows if row.pk not in self.carried]
        if not needing:
            return rows
        units = {row.pk: quota.units_for(row.recipient_count, self.conf) for row in needing}
        try:
            self._book(needing, units)
            return rows
        except QuotaExceeded:
            pass
        granted: set[int] = set()
        for group in batching.units_of_booking(needing):
            try:
                self._book(group, units)
                granted.update(row.pk for row in group)
            except QuotaExceeded as exc:
                self.refused += [(row, as_send_error(self._never_fits(row, exc))) for row in group]
        return [row for row in rows if row.pk in self.carried or row.pk in granted]

    def _book(self, rows: list[OutboundEmail], units: dict[int, int]) -> None:
        org = rows[0].org
        # quota.reserve raises after its own statement, leaving the transaction usable.
        day = quota.reserve(org, sum(units[row.pk] for row in rows), timezone.now(), self.conf)
        for row in rows:
            row.quota_units, row.quota_day = units[row.pk], day

    def _never_fits(self, row: OutboundEmail, exc: QuotaExceeded) -> QuotaExceeded:
        """A refusal, made permanent when the email alone is bigger than the limit."""
        if exc.code not in ("daily_quota_exceeded", "monthly_quota_exceeded"):
            return exc
        limits = quota.limits_for(row.org, self.conf, router.db_for_write(OutboundEmail))
        limit = limits.daily if exc.code == "daily_quota_exceeded" else limits.monthly
        units = quota.units_for(row.recipient_count, self.conf)
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

    # --- sending (after the claim committed) ------------------------------------------
    def send(self) -> Counter[str]:
        for _ in self.steps():
            pass
        return self.outcomes

    def steps(self) -> Iterator[batching.Request | None]:
        """Record what prepare() refused, then make the requests one by one, yielding
        after each (a test can interleave other workers there)."""
        self.fail(self.refused)
        self.refused = []
        yield None
        requests, self.requests = self.requests, []
        for request in requests:
            self.make(request)
            if len(self.sent) >= self.FLUSH_EVERY:
                self.flush()
            yield request
        self.flush()
        # Delivery events can arrive before a send is recorded; they wait for these ids.
        # One lookup for the whole delivery, after its last record. Should the worker
        # die before it, the sweeper matches them (events.match_stranded).
        recorded, self.recorded = self.recorded, []
        events.match_sent(recorded)

    def make(self, request: batching.Request) -> None:
        """One request, if the lease still holds all its rows; its outcome recorded."""
        assert self.provider is not None
        try:
            ratelimit.wait_for_slot(self.api_key, self.conf.RATE_LIMIT)
        except Exception as exc:  # the shared rate limiter is unreachable: nothing was sent
            self.fail([(row, as_send_error(exc)) for row in request.rows], together=True)
            return
        if not self.lease.hold(request.pks):
            # Another worker took some of these rows; give back the ones still ours.
            mine = [row for row in request.rows if row.pk not in self.lease.lost]
            abandon(self.lease, mine)
            self.outcomes["lost_lease"] += len(request.rows)
            return
        if request.key:
            self.send_batch(request)
        else:
            self.send_single(request.rows[0])

    def send_single(self, row: OutboundEmail) -> None:
        assert self.provider is not None and row.payload is not None
        try:
            message_id = self.provider.deliver(row.payload, row.idempotency_key)
        except Exception as exc:
            if not isinstance(exc, MailapiError):
                logger.exception("django-mailapi: unexpected error sending email #%s", row.pk)
            self.fail([(row, as_send_error(exc))])
        else:
            self.sent.append((row, message_id))

    def send_batch(self, request: batching.Request) -> None:
        assert self.provider is not None
        rows = request.rows
        payloads: list[Any] = [row.payload or {} for row in rows]
        try:
            built = self.provider.build_batch_request(payloads, request.key)
        except MailapiError:
            # Nothing went out: one email the batch cannot carry fails alone.
            self.split(request)
            return
        try:
            results = self.provider.parse_batch_response(self.provider.call(built))
            if len(results) != len(rows):
                raise SendError(
                    f"The API answered a batch of {len(rows)} with {len(results)} results.",
                    code="invalid_response",
                    local=True,
                )
        except Exception as exc:
            if not isinstance(exc, MailapiError):
                logger.exception("django-mailapi: unexpected error sending batch %s", request.key)
            self.fail([(row, as_send_error(exc)) for row in rows], together=True)
            return
        failed = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, SendError):
                failed.append((row, result))
            else:
                self.sent.append((row, result))
        self.flush()
        # The API answered for each email: one it rejected is settled, whatever an
        # earlier attempt did, and leaves the batch.
        self.fail(failed, resolved=True)

    def split(self, request: batching.Request) -> None:
        """A batch that could not be built: fail the emails that cannot travel in one,
        and send the others in new batches under new keys (written before sending)."""
        assert self.provider is not None
        bad, rest = [], []
        for row in request.rows:
            try:
                self.provider.build_batch_request([cast(Message, row.payload)], request.key)
            except MailapiError as exc:
                bad.append((row, as_send_error(exc)))
            else:
                rest.append(row)
        if not bad or any(row.pk in self.carried for row in request.rows):
            # Every email builds alone, or the batch may be at the API already: a fault
            # of the batch as a whole, recorded for all of it.
            error = SendError(
                "The provider could not build this batch request.",
                code="unexpected_error",
                local=True,
            )
            self.fail([(row, error) for row in request.rows], together=True)
            return
        self.fail(bad)
        for row in rest:
            row.batch_key = ""
        size = batching.batch_size(type(self.provider), self.conf)
        requests = batching.plan_requests(rest, self.provider, size, self.carried)
        keys = {row.pk: [row.batch_key] for row in rest}
        held = set(sql.update_each(OutboundEmail, ["batch_key"], keys, {}, self.lease.fence))
        for again in requests:
            if set(again.pks) <= held:
                self.make(again)

    def flush(self) -> None:
        if self.sent:
            recorded = record_sent(self.lease, self.sent, self.conf)
            self.outcomes["sent"] += len(recorded)
            self.recorded += recorded
            self.sent = []

    def fail(
        self,
        pairs: list[tuple[OutboundEmail, SendError]],
        *,
        together: bool = False,
        resolved: bool = False,
    ) -> None:
        if pairs:
            self.outcomes.update(
                record_failures(
                    self.lease,
                    pairs,
                    self.conf,
                    carried=self.carried,
                    together=together,
                    resolved=resolved,
                )
            )
