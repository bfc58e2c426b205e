"""Provider registry: names to classes, and per-process provider instances."""

from __future__ import annotations

import threading
from typing import Any

from django.utils.module_loading import import_string

from ..exceptions import ImproperlyConfigured
from .base import Provider

BUILTIN: dict[str, str] = {
    "resend": "django_mailapi.providers.resend.ResendProvider",
    "sendr": "django_mailapi.providers.sendr.SendrProvider",
    "emitlo": "django_mailapi.providers.emitlo.EmitloProvider",
    "generic": "django_mailapi.providers.generic.GenericProvider",
}

_local = threading.local()


def resolve_provider_class(name: Any) -> type[Provider]:
    """A provider class from a built-in name or a dotted path."""
    if isinstance(name, type) and issubclass(name, Provider):
        return name
    if not isinstance(name, str) or not name:
        raise ImproperlyConfigured(f"Not a provider: {name!r}", code="configuration_error")
    path = BUILTIN.get(name, name)
    if "." not in path:
        raise ImproperlyConfigured(
            f"Unknown provider {name!r}; built in: {', '.join(sorted(BUILTIN))}.",
            code="configuration_error",
        )
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"Cannot import provider {path!r}: {exc}", code="configuration_error"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ImproperlyConfigured(
            f"{path!r} is not a subclass of django_mailapi.providers.base.Provider.",
            code="configuration_error",
        )
    return cls


def provider_name(name: Any) -> str:
    """The short name recorded on rows: the class's ``name``."""
    return resolve_provider_class(name).name


def get_provider(
    name: str | type[Provider], *, api_key: str, base_url: str | None, timeout: float
) -> Provider:
    """A provider instance, reused per thread so its HTTP connections stay open."""
    cache: dict[tuple[Any, ...], Provider] = _local.__dict__.setdefault("providers", {})
    cls = resolve_provider_class(name)
    key = (cls, api_key, base_url, timeout)
    provider = cache.get(key)
    if provider is None:
        provider = cache[key] = cls(api_key=api_key, base_url=base_url, timeout=timeout)
    return provider
