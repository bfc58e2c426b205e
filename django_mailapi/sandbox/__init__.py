"""The sandbox provider: a local, loopback-only fake of an email API.

``SandboxServer`` speaks Resend's wire format (or Sendr's, Emitlo's or the generic
API's: ``SandboxServer(provider="sendr")``), stores what it accepts and misbehaves on
request (magic recipient addresses, rate limits, injected faults). Run it on its own with
``python -m django_mailapi.sandbox`` or ``manage.py mailapi_sandbox``.
"""

from __future__ import annotations

from django_mailapi.sandbox.dialects import (
    DIALECTS,
    Dialect,
    EmitloDialect,
    GenericDialect,
    ResendDialect,
    SendrDialect,
    dialect_for,
)
from django_mailapi.sandbox.server import FAIL_DOMAIN, SandboxServer, run

__all__ = [
    "DIALECTS",
    "FAIL_DOMAIN",
    "Dialect",
    "EmitloDialect",
    "GenericDialect",
    "ResendDialect",
    "SandboxServer",
    "SendrDialect",
    "dialect_for",
    "run",
]
