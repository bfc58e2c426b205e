"""Which emails travel together: the one place that decides it.

A batch key is the ``Idempotency-Key`` of one batch request and names exactly one set
of emails with exactly their payloads. Once a batch may have reached the API (its rows
hold quota units: an attempt's outcome is unknown), it is only ever sent again whole,
under the same key, with the same members; the claim takes all its members or none.
A batch the API certainly did not accept loses its key when its failure is recorded,
and its emails are free to travel in new batches under new keys.

An email that went alone and is in doubt goes alone again, under its own key: putting it
in a batch would give it a key the API has never seen, and the API could send it twice.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..conf import MailapiSettings
from ..models import OutboundEmail
from ..providers.base import Provider


@dataclass
class Request:
    """One API request to make: a batch (``key``) or one email alone (``key`` = "")."""

    key: str
    rows: list[OutboundEmail]

    @property
    def pks(self) -> list[int]:
        return [row.pk for row in self.rows]


def batch_size(provider_class: type[Provider], conf: MailapiSettings) -> int:
    """Most emails one request carries for this provider under these settings."""
    return max(1, min(conf.BATCH_SIZE, provider_class.max_batch))


def may_batch(provider: Provider, payload: Any, size: int) -> bool:
    """Whether an email with ``payload`` may go in a new batch."""
    return size > 1 and payload is not None and provider.can_batch(payload)


def new_key(rows: Iterable[OutboundEmail]) -> str:
    """A batch key that names these emails alone: a digest of their own keys."""
    digest = hashlib.sha256("\n".join(row.idempotency_key for row in rows).encode())
    return f"mailapi-batch/{digest.hexdigest()[:48]}"


def units_of_booking(rows: list[OutboundEmail]) -> list[list[OutboundEmail]]:
    """Rows in the groups quota is booked for: a keyed batch whole, any other row alone."""
    keyed: dict[str, list[OutboundEmail]] = defaultdict(list)
    groups: list[list[OutboundEmail]] = []
    for row in rows:
        if row.batch_key:
            if row.batch_key not in keyed:
                groups.append(keyed[row.batch_key])
            keyed[row.batch_key].append(row)
        else:
            groups.append([row])
    return groups


def plan_requests(
    rows: list[OutboundEmail], provider: Provider, size: int, carried: set[int]
) -> list[Request]:
    """The requests that send ``rows`` (all holding quota now), in order.

    Keyed batches go whole under their key; in-doubt rows without a key (``carried``:
    they held units before this claim) go alone; the others go in new batches of at
    most ``size`` where the provider takes them, or alone. New keys are set on the rows
    in memory; the claim writes them with the lease.
    """
    requests: list[Request] = []
    keyed: dict[str, Request] = {}
    fresh: list[OutboundEmail] = []
    for row in rows:
        if row.batch_key:
            if row.batch_key not in keyed:
                keyed[row.batch_key] = Request(row.batch_key, [])
                requests.append(keyed[row.batch_key])
            keyed[row.batch_key].rows.append(row)
        elif row.pk in carried or not may_batch(provider, row.payload, size):
            requests.append(Request("", [row]))
        else:
            fresh.append(row)
    for start in range(0, len(fresh), size):
        chunk = fresh[start : start + size]
        if len(chunk) == 1:  # a batch of one is just a send
            requests.append(Request("", chunk))
            continue
        key = new_key(chunk)
        for row in chunk:
            row.batch_key = key
        requests.append(Request(key, chunk))
    # A keyed batch of one (its siblings were settled long ago) still goes under its key.
    return requests
