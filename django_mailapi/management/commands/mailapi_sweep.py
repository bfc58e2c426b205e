"""``manage.py mailapi_sweep``: what the Celery beat task does, once, from cron or a shell."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from django_mailapi import outbox


class Command(BaseCommand):
    help = "Dispatch queued emails whose Celery task was lost, and emails whose worker died."

    def handle(self, *args: Any, **options: Any) -> None:
        count = outbox.sweep()
        self.stdout.write(f"Dispatched {count} email(s).")
