"""Template tags for the Mail API admin pages."""

from __future__ import annotations

from typing import Any

from django import template

from ..admin import home
from ..admin.base import override_banner

register = template.Library()


@register.simple_tag
def mailapi_override_banner() -> str:
    """The OVERRIDE_RECIPIENTS warning, or "" when it is not set."""
    return override_banner()


@register.simple_tag
def mailapi_health() -> dict[str, Any]:
    """The figures of the Mail API home (see ``admin.home``)."""
    return home.health()
