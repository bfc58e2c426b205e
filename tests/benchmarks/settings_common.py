"""Settings both sides of the benchmark share: database, broker, Celery.

Read by our worker and by the peer's (django-celery-email + django-anymail), each in its
own virtualenv, so the two run on the same PostgreSQL, Redis and Celery configuration.
``run.py`` passes everything through the environment.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

SECRET_KEY = "benchmarks-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]

_db = urlparse(
    os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailapi_bench")
)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": _db.username or "postgres",
        "PASSWORD": _db.password or "",
        "HOST": _db.hostname or "127.0.0.1",
        "PORT": str(_db.port or 5432),
    }
}

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
#: Both workers consume this queue only.
BENCH_QUEUE = os.environ.get("BENCH_QUEUE", "mailapi-bench")

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = BENCH_QUEUE
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

#: Where the sandbox provider listens (set by run.py for each scenario).
SANDBOX_URL = os.environ.get("BENCH_SANDBOX_URL", "http://127.0.0.1:9")
API_KEY = "re_benchmark_not_a_real_key"
