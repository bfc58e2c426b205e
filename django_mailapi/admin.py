"""Admin registrations for django-mailapi; the quota pages live in ``admin_quota``."""

from . import admin_quota  # noqa: F401
