"""django-mailapi under benchmark: its defaults, except what a scenario sets.

``BENCH_BATCH_SIZE`` and ``BENCH_RATE_LIMIT`` (empty = None) come from run.py.
"""

from __future__ import annotations

import os

from tests.benchmarks.settings_common import *  # noqa: F403
from tests.benchmarks.settings_common import API_KEY, INSTALLED_APPS, REDIS_URL, SANDBOX_URL

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
