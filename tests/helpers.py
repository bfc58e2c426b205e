"""Small helpers shared by tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

FIXTURES = Path(__file__).parent / "fixtures"


def resend_schema() -> dict[str, Any]:
    return json.loads((FIXTURES / "resend_send_email_request.schema.json").read_text())


def assert_resend_valid(body: dict[str, Any]) -> None:
    """Fail unless ``body`` is a valid Resend SendEmailRequest."""
    jsonschema.validate(body, resend_schema(), cls=jsonschema.Draft202012Validator)
