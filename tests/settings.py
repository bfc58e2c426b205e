"""Settings for the test suite (and for the worker processes it starts).

DATABASE_URL picks the database (default: the local PostgreSQL's "test" database when
it answers, else SQLite; mysql://root@127.0.0.1:3306/NAME for MySQL or MariaDB);
REDIS_URL the broker (default: the local Redis, db 15).
"""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import urlparse

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_mailapi",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/test"


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), 1):
            return True
    except OSError:
        return False


def _database(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": parsed.path.lstrip("/") or ":memory:",
        }
    name = parsed.path.lstrip("/")
    if parsed.scheme in ("mysql", "mariadb"):
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": name,
            "USER": parsed.username or "root",
            "PASSWORD": parsed.password or "",
            "HOST": parsed.hostname or "127.0.0.1",
            "PORT": str(parsed.port or 3306),
            "CONN_MAX_AGE": 0,
            # Four-byte UTF-8 (emoji in subjects), and the test database made the same way.
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
        }
    config: dict[str, object] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": parsed.username or "postgres",
        "PASSWORD": parsed.password or "",
        "HOST": parsed.hostname or "127.0.0.1",
        "PORT": str(parsed.port or 5432),
        "CONN_MAX_AGE": 0,
    }
    return config


DATABASE_URL = os.environ.get("DATABASE_URL") or (
    DEFAULT_PG_URL if _reachable(DEFAULT_PG_URL) else "sqlite:///:memory:"
)
DATABASES = {"default": _database(DATABASE_URL)}
# Second databases for tests/test_routers.py, which routes our models to one of them.
# pytest-django creates a test database only for the tests that name it, so the rest of
# the suite never touches these. "outbox" is SQLite, where SQL meant for PostgreSQL fails
# loudly; "outbox_pg" is a second PostgreSQL database, for the PostgreSQL-only paths.
DATABASES["outbox"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["outbox_pg"] = {
        **DATABASES["default"],
        "TEST": {"NAME": f"test_{DATABASES['default']['NAME']}_outbox"},
    }

if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    SILENCED_SYSTEM_CHECKS = [
        # MySQL and MariaDB have no partial indexes, so Django creates the outbox's and
        # the events' partial indexes whole: they serve the same queries, only larger.
        "models.W037",
        # Nor partial unique constraints: Suppression's two are not created, so two
        # concurrent adds of one address may both store a row. The worker only asks
        # whether a row exists, so a duplicate changes what the admin lists, not who
        # is mailed.
        "models.W036",
    ]

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
MAILAPI = {
    # Worker processes for another provider's end-to-end tests set MAILAPI_TEST_PROVIDER.
    "PROVIDER": os.environ.get("MAILAPI_TEST_PROVIDER", "resend"),
    "API_KEY": "re_test_not_a_real_key_4f8a",
    "BASE_URL": os.environ.get("MAILAPI_BASE_URL", "http://127.0.0.1:9"),
    # One queue per test run, so parallel runs and stale messages never meet.
    "QUEUE": os.environ.setdefault("MAILAPI_QUEUE", f"mailapi-tests-{os.getpid()}"),
    "TIMEOUT": 5.0,
    "RETRY_BASE_DELAY": 0.2,
    "RETRY_MAX_DELAY": 2.0,
}

# Worker processes started by a test can be given other settings, as JSON.
MAILAPI.update(json.loads(os.environ.get("MAILAPI_TEST_OVERRIDES", "{}")))

# The shared rate limit lives in Redis when the cache is Redis, as in production.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"mailapi-tests-{MAILAPI['QUEUE']}",
    }
}

# Lets a test start a worker that gives up on transient errors sooner than the default.
if os.environ.get("MAILAPI_TEST_MAX_RETRIES"):
    MAILAPI["MAX_RETRIES"] = int(os.environ["MAILAPI_TEST_MAX_RETRIES"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"django_mailapi": {"handlers": ["null"], "propagate": True}},
}
