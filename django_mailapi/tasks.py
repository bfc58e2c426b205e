"""Celery tasks: thin wrappers over outbox functions (tested directly there)."""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError, InterfaceError

from . import outbox


@shared_task(
    name="django_mailapi.send_emails",
    acks_late=True,
    reject_on_worker_lost=True,
    serializer="json",
    ignore_result=True,
    # The database went away mid-send: nothing was recorded, so try the task again.
    autoretry_for=(DatabaseError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=20,
)
def send_emails(ids: list[int]) -> dict[str, int]:
    return outbox.process(ids)


@shared_task(name="django_mailapi.sweep", serializer="json", ignore_result=True)
def sweep() -> int:
    return outbox.sweep()
