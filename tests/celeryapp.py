"""The Celery app the test suite's worker processes run."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("mailapi_tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
