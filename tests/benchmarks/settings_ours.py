"""django-mailapi under benchmark: its defaults, except what a scenario sets.

``BENCH_BATCH_SIZE`` and ``BENCH_RATE_LIMIT`` (empty = None) come from run.py, and so does
``BENCH_DB_POOL`` ("0" turns Django's connection pool off for the worker).
"""

from __future__ import annotations

import os

import django

from tests.benchmarks.settings_common import *  # noqa: F403
from tests.benchmarks.settings_common import (
    API_KEY,
    DATABASES,
    INSTALLED_APPS,
    REDIS_URL,
    SANDBOX_URL,
)

INSTALLED_APPS = [*INSTALLED_APPS, "django_mailapi"]
EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"

_rate = os.environ.get("BENCH_RATE_LIMIT", "")
MAILAPI = {
    "PROVIDER": "resend",
    "API_KEY": API_KEY,
    "BASE_URL": SANDBOX_URL,
    "BATCH_SIZE": int(os.environ.get("BENCH_BATCH_SIZE", "100")),
    "RATE_LIMIT": float(_rate) if _rate else None,
}

# The shared rate limit lives in Redis, as the README recommends for production.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "mailapi-bench",
    }
}

# Celery closes Django's database connections before and after every task; with Django's
# pool (Django 5.1+, psycopg 3) closing hands the connection back instead of ending it, as
# the README's "Worker database connections" recommends. Only our side uses the database
# in its worker, so the peer's settings are left as they are.
if os.environ.get("BENCH_DB_POOL", "1") != "0" and django.VERSION >= (5, 1):
    DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 1, "max_size": 4}}
