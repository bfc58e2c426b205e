"""Publishing send tasks: the bottom layer. It names tasks, it never imports them.

The backend, the outbox's recorder and its maintenance all hand ids to Celery through
here. Tasks are looked up by name on the current Celery app (``tasks.py`` registers
them when the app is ready), so nothing here imports the modules that do the work.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import current_app

from .conf import MailapiSettings

logger = logging.getLogger("django_mailapi")

#: The name of the task that sends emails by id (``tasks.send_emails``).
SEND_EMAILS = "django_mailapi.send_emails"
#: Most ids in one task published by the sweeper or "retry now".
DISPATCH_SIZE = 100
#: Most payload bytes one task may hold (bodies and base64 attachments), so a worker's
#: memory stays bounded: one 40 MB email, or hundreds of ordinary ones. A single email
#: larger than this still gets a task of its own.
TASK_BYTES = 50 * 1024 * 1024


def _send_task() -> Any:
    return current_app.tasks[SEND_EMAILS]


def chunks(ids: Sequence[int], size: int, weights: Sequence[int] | None = None) -> list[list[int]]:
    """``ids`` in runs of at most ``size``, and at most TASK_BYTES of ``weights`` each."""
    runs: list[list[int]] = []
    run: list[int] = []
    total = 0
    for index, pk in enumerate(ids):
        weight = weights[index] if weights is not None else 0
        if run and (len(run) >= size or total + weight > TASK_BYTES):
            runs.append(run)
            run, total = [], 0
        run.append(pk)
        total += weight
    if run:
        runs.append(run)
    return runs


def dispatch(
    ids: Sequence[int],
    conf: MailapiSettings,
    size: int = DISPATCH_SIZE,
    weights: Sequence[int] | None = None,
) -> int:
    """Publish send tasks for ``ids``, ``size`` per task (and at most TASK_BYTES of their
    ``weights``, the rows' payload_bytes); on broker trouble, leave them queued.

    Returns how many ids were published. Rows that were not stay ``queued``; the
    sweeper (``mailapi_sweep`` / the beat task) publishes them later.
    """
    published = 0
    options: dict[str, Any] = {
        "retry": True,
        "retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
    }
    if conf.QUEUE:
        options["queue"] = conf.QUEUE
    task = _send_task()
    for chunk in chunks(ids, size, weights):
        try:
            task.apply_async(args=[chunk], **options)
        except Exception as exc:  # the broker is down or refused us; the sweeper retries
            logger.warning(
                "django-mailapi could not publish %d email(s) to the broker (%s: %s); "
                "they stay queued and mailapi_sweep will dispatch them.",
                len(ids) - published,
                type(exc).__name__,
                exc,
            )
            break
        published += len(chunk)
    return published


def schedule(ids: Sequence[int], conf: MailapiSettings, delay: float) -> bool:
    """Publish one task for ``ids`` to run in ``delay`` seconds, if that is near enough.

    Celery keeps delayed tasks in the worker's memory and, on Redis/SQS, re-delivers
    them after the broker's visibility timeout (RabbitMQ cancels a consumer that holds
    one past ``consumer_timeout``); so waits longer than MAX_ETA_SECONDS are left to the
    sweeper. Returns whether a task was published.
    """
    if not ids or delay > conf.MAX_ETA_SECONDS:
        return False
    options: dict[str, Any] = {"countdown": max(0.0, delay)}
    if conf.QUEUE:
        options["queue"] = conf.QUEUE
    try:
        _send_task().apply_async(args=[list(ids)], **options)
    except Exception as exc:  # the sweeper will pick them up
        logger.warning("django-mailapi could not schedule %d email(s): %s", len(ids), exc)
        return False
    return True
