"""A database router that keeps django-mailapi's tables on a database of their own.

Used by tests/test_routers.py, one test at a time (``settings.DATABASE_ROUTERS``), to
prove that nothing of ours runs on ``default`` when a project routes our models away.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model

APP_LABEL = "django_mailapi"


class MailapiRouter:
    """Reads, writes and migrations of the django_mailapi app go to ``alias``."""

    def __init__(self, alias: str = "outbox") -> None:
        self.alias = alias

    def _ours(self, model: type[Model] | Model) -> bool:
        return model._meta.app_label == APP_LABEL

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        return self.alias if self._ours(model) else None

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:
        return self.alias if self._ours(model) else None

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        if self._ours(obj1) or self._ours(obj2):
            return self._ours(obj1) and self._ours(obj2)
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        if app_label == APP_LABEL:
            return db == self.alias
        return None

    def __repr__(self) -> str:
        return f"MailapiRouter({self.alias!r})"
