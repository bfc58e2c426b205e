"""A worker's lease on the rows it claimed: the fence on every write it makes.

A claim writes a fresh token and a time on its rows. Until that time no other worker
may take them; after it, anyone may, and the new claim writes a new token. So every
write of an outcome carries ``lease_token = <ours> AND status = 'sending'`` in its own
UPDATE and acts only on the rows that statement changed: a worker that lost its rows
changes nothing (and says so in the log).

Before each API request the worker makes sure its lease outlives the request: when
less than ``margin`` is left, it renews the lease of every row it still holds in one
fenced UPDATE and learns, from the rows that statement changed, which it has lost.
A request is only made for rows still held, so no row is sent by two workers at once,
however long a task runs, as long as the hosts' clocks agree within a few seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from django.utils import timezone

from .. import sql
from ..models import OutboundEmail, Status

logger = logging.getLogger("django_mailapi")


class Lease:
    """The token, expiry and rows of one claim, as its worker knows them."""

    def __init__(
        self,
        token: str,
        until: dt.datetime,
        pks: Iterable[int],
        *,
        seconds: float,
        margin: float,
    ) -> None:
        self.token = token
        self.until = until
        self.seconds = seconds
        #: Renew when less than this many seconds are left (at least one request's time).
        self.margin = margin
        #: Rows claimed and not yet recorded: the ones a renewal extends.
        self.open: set[int] = set(pks)
        #: Rows another worker has taken since (their lease ran out before we renewed).
        self.lost: set[int] = set()

    @property
    def fence(self) -> dict[str, object]:
        """The conditions every write of this worker's outcomes carries."""
        return {"lease_token": self.token, "status": Status.SENDING}

    def hold(self, pks: Iterable[int], now: dt.datetime | None = None) -> bool:
        """Whether all of ``pks`` are still ours for at least ``margin`` seconds.

        Renews the lease first when it is about to run out. False means at least one
        of the rows went to another worker: the caller must not send them.
        """
        wanted = set(pks)
        now = now or timezone.now()
        if not wanted & self.lost and (self.until - now).total_seconds() < self.margin:
            self.renew(now)
        return not wanted & self.lost

    def renew(self, now: dt.datetime) -> None:
        until = now + dt.timedelta(seconds=self.seconds)
        ours = sorted(self.open - self.lost)
        held = set(sql.update_fenced(OutboundEmail, ours, {"leased_until": until}, self.fence))
        lost = set(ours) - held
        if lost:
            logger.warning(
                "django-mailapi: the lease on email(s) %s ran out and another worker took "
                "them; this worker will not send them.",
                ", ".join(f"#{pk}" for pk in sorted(lost)),
            )
        self.lost |= lost
        self.until = until

    def close(self, pks: Iterable[int]) -> None:
        """The rows' outcomes are written: renewals leave them alone from now on."""
        self.open.difference_update(pks)
