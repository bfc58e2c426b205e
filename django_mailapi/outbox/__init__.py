"""The state machine of a send: claim, deliver, record, and the maintenance around it.

queued ──claim──▶ sending ──API 2xx──▶ sent
   ▲                 │
   │   transient     ├──────────────▶ queued (next_attempt_at = now + backoff)
   │   quota         ├──────────────▶ deferred (next UTC day / month) or failed
   │   permanent     └──────────────▶ failed
   └──── sweeper / mailapi_retry / admin "retry now"

* ``claim``: one transaction takes a lease on the due rows (and whole batches), books
  their quota and plans the requests.
* ``deliver``: the requests, each made only while the lease still holds its rows.
* ``record``: outcomes, each write fenced by the lease token.
* ``policy``: what a failure leads to, and whether the email is now in doubt (pure).
* ``batching``: which emails travel together, and when a batch key may change.
* ``maintenance``: the sweeper, "retry now" and "cancel".

Every retry reuses the email's (or its batch's) Idempotency-Key, so if an earlier
request did reach the API, the API answers with the original instead of sending again.
"""

from __future__ import annotations

from .claim import Claim, claim, process
from .deliver import Delivery, provider_for
from .maintenance import cancel, retry_now, sweep
from .policy import backoff, decide, may_have_been_accepted
from .record import as_send_error, provider_class_for, record_rejected

__all__ = [
    "Claim",
    "Delivery",
    "as_send_error",
    "backoff",
    "cancel",
    "claim",
    "decide",
    "may_have_been_accepted",
    "process",
    "provider_class_for",
    "provider_for",
    "record_rejected",
    "retry_now",
    "sweep",
]
