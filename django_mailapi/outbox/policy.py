"""What happens after a failed attempt: a pure function of (error, row state, settings,
now). No database, no I/O; the recorder applies what ``decide`` returns.

Two questions are answered for every failed attempt:

* **Retry, defer or fail?** From the error's retry class in its catalog, the attempts
  made so far, ``MAX_RETRIES`` and ``ON_QUOTA_EXCEEDED``.
* **Could the API have accepted the email anyway?** A timeout, a dropped connection, a
  5xx or an answer we could not read leave that open; so does a 409 about the
  idempotency key (another request under the same key exists). While it is open the
  email is *in doubt*: it keeps its quota units and its batch, and every retry goes out
  under the same key with the same members, so the API can answer with what it already
  has instead of sending twice. Any other answer (a 4xx such as 422 or 429, or a check
  made before any request) means the API certainly did not accept this attempt.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from .. import errors, quota
from ..conf import MailapiSettings
from ..exceptions import SendError
from ..models import Status
from ..providers.base import MAX_RETRY_AFTER

#: Local codes for failures after a request may have reached the API.
UNCERTAIN_LOCAL_CODES = frozenset(
    {"timeout", "connection_error", "invalid_response", "unexpected_error"}
)


def may_have_been_accepted(error: SendError) -> bool:
    """Whether the API could have accepted the email despite ``error``."""
    if error.http_status is None:
        return error.local and error.code in UNCERTAIN_LOCAL_CODES
    return error.http_status >= 500 or error.http_status == 409


def backoff(attempt: int, conf: MailapiSettings, rand: Callable[[float, float], float]) -> float:
    """Exponential backoff with full jitter in its upper half, capped."""
    ceiling: float = min(conf.RETRY_MAX_DELAY, conf.RETRY_BASE_DELAY * 2 ** max(0, attempt - 1))
    return ceiling * rand(0.5, 1.0)


@dataclass(frozen=True)
class Decision:
    """The row's next state after one failed attempt."""

    #: "retry", "deferred" or "failed": what the task reports.
    outcome: str
    status: str
    next_attempt_at: dt.datetime | None
    #: The row's attempt count from now on (a deferral does not count as a try).
    attempts: int
    #: Whether another attempt will be made (the FailedSend's ``will_retry``).
    will_retry: bool
    #: The attempts ran out on a transient error (a ``retries_exhausted`` record follows).
    exhausted: bool
    #: The email is in doubt: it keeps its quota units and its batch key.
    in_doubt: bool
    retry: errors.RetryClass
    #: The code and HTTP status to show as the row's last error.
    error_code: str
    error_status: int | None


def decide(
    error: SendError,
    source: str,
    *,
    attempts: int,
    was_in_doubt: bool,
    conf: MailapiSettings,
    now: dt.datetime,
    rand: Callable[[float, float], float] = random.uniform,
) -> Decision:
    """Decide what follows ``error`` on an email tried ``attempts`` times.

    ``source`` is the catalog the error's code belongs to; ``was_in_doubt``: an earlier
    attempt (or a worker that died mid-send) may already have reached the API.
    """
    retry = errors.resolve(source, error.code, error.http_status, error.message).retry
    in_doubt = was_in_doubt or may_have_been_accepted(error)
    code, status = error.code[:100], error.http_status
    if retry.is_transient and attempts <= conf.MAX_RETRIES:
        delay = backoff(attempts, conf, rand)
        if retry is errors.RetryClass.RETRY_AFTER and error.retry_after is not None:
            # Whatever a provider put there: never below half a second or above an hour.
            wait = error.retry_after if math.isfinite(error.retry_after) else MAX_RETRY_AFTER
            delay = min(max(wait, 0.5), MAX_RETRY_AFTER) + rand(0, 0.5)
        return Decision(
            "retry",
            Status.QUEUED,
            now + dt.timedelta(seconds=delay),
            attempts,
            True,
            False,
            in_doubt,
            retry,
            code,
            status,
        )
    if retry.is_quota and conf.ON_QUOTA_EXCEEDED == "defer":
        until = (
            quota.next_day(now) if retry is errors.RetryClass.DEFER_DAY else quota.next_month(now)
        )
        # Spread the wake-up over a minute so a backlog does not arrive at once.
        return Decision(
            "deferred",
            Status.DEFERRED,
            until + dt.timedelta(seconds=rand(0, 60)),
            max(0, attempts - 1),
            True,
            False,
            in_doubt,
            retry,
            code,
            status,
        )
    if retry.is_transient:
        return Decision(
            "failed", Status.FAILED, None, attempts, False, True, in_doubt, retry,
            "retries_exhausted", None,
        )  # fmt: skip
    return Decision(
        "failed", Status.FAILED, None, attempts, False, False, in_doubt, retry, code, status
    )
