"""Settings for the example project, read from the environment with django-environ.

Defaults need no servers: SQLite and kombu's filesystem broker under ./var, and the
local sandbox provider on 127.0.0.1:8025. See .env.example for every variable.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
# Where SQLite, the filesystem broker and the worker log live (the tests use a temp dir).
VAR = Path(env("EXAMPLE_VAR_DIR", default=str(BASE_DIR / "var")))
VAR.mkdir(parents=True, exist_ok=True)

if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

SECRET_KEY = env("SECRET_KEY", default="example-project-not-secret")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_mailapi",
    "demo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example_project.urls"
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
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_sqlite_default = f"sqlite:///{VAR / 'db.sqlite3'}"
DATABASES = {"default": env.db("DATABASE_URL", default=_sqlite_default)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    name = str(DATABASES["default"]["NAME"])
    if not name.startswith("/") and name != ":memory:":
        DATABASES["default"]["NAME"] = str(BASE_DIR / name)
    # The worker and the web process share the file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
elif DATABASES["default"]["ENGINE"].endswith("postgresql") and env.bool(
    "DATABASE_POOL", default=False
):
    # Celery closes connections around every task; a pool (Django 5.1+, psycopg[pool])
    # hands them back instead. See the README's "Worker database connections".
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 4}

# --- email through django-mailapi ---------------------------------------------------------
EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
DEFAULT_FROM_EMAIL = "Example Shop <shop@example.com>"
MAILAPI = {
    "PROVIDER": env("MAILAPI_PROVIDER", default="resend"),
    "API_KEY": env("MAILAPI_API_KEY", default="re_sandbox_demo_key"),
    "BASE_URL": env("MAILAPI_BASE_URL", default="http://127.0.0.1:8025"),
    # Mail has a queue of its own; the worker runs with -Q mail (the demo's does).
    "QUEUE": env("MAILAPI_QUEUE", default="mail"),
    "RETRY_BASE_DELAY": 1.0,
    # Signs the delivery events POSTed to /mailapi/webhooks/<provider>/ (urls.py); for
    # Resend, the endpoint's whsec_… secret from its dashboard.
    "WEBHOOK_SECRET": env(
        "MAILAPI_WEBHOOK_SECRET", default="whsec_ZXhhbXBsZS1wcm9qZWN0LWRlbW8tc2VjcmV0LW9ubHk="
    ),
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    (VAR / "broker").mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(VAR / "broker"),
        "data_folder_out": str(VAR / "broker"),
        # Which queues each exchange feeds (one file per queue name): under var/ too,
        # not in the directory the worker happens to start in.
        "control_folder": str(VAR / "broker-control"),
        "store_processed": False,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# Both of django-mailapi's tasks go to its queue: beat knows nothing of MAILAPI, and a
# sweep left on Celery's default queue would never reach a worker started with -Q mail.
CELERY_TASK_ROUTES = {"django_mailapi.*": {"queue": MAILAPI["QUEUE"]}}
CELERY_BEAT_SCHEDULE = {
    "mailapi-sweep": {
        "task": "django_mailapi.sweep",
        "schedule": 15.0,
        "options": {"queue": MAILAPI["QUEUE"]},
    },
}
