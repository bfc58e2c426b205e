"""django-mailapi: a Django email backend that sends through an outbox and Celery
workers to an email HTTP API, with per-org quotas and failure records."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "for_org"]


def __getattr__(name: str) -> Any:
    # Lazy so that "import django_mailapi" works in settings.py, before apps load.
    if name == "for_org":
        from .quota import for_org

        return for_org
    raise AttributeError(name)
