"""The peer under benchmark: django-celery-email handing messages to django-anymail's
Resend backend, both on their defaults, pointed at the same sandbox as we are.

Runs only in the peer virtualenv (tests/benchmarks/.peer-venv), which run.py builds.
"""

from __future__ import annotations

from tests.benchmarks.settings_common import *  # noqa: F403
from tests.benchmarks.settings_common import API_KEY, INSTALLED_APPS, SANDBOX_URL

INSTALLED_APPS = [*INSTALLED_APPS, "djcelery_email", "anymail"]
EMAIL_BACKEND = "djcelery_email.backends.CeleryEmailBackend"
CELERY_EMAIL_BACKEND = "anymail.backends.resend.EmailBackend"
# anymail/backends/resend.py reads the base URL from RESEND_API_URL.
ANYMAIL = {"RESEND_API_KEY": API_KEY, "RESEND_API_URL": SANDBOX_URL + "/"}
