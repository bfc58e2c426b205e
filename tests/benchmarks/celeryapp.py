"""The Celery app both benchmark workers run (settings chosen by DJANGO_SETTINGS_MODULE)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.benchmarks.settings_ours")

app = Celery("mailapi_bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
