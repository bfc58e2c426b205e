"""The sandbox's Sendr, Emitlo and generic dialects, and how to pick one.

Real HTTP on loopback, as in test_sandbox.py; the provider-specific magic addresses are
covered by each provider's own test module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.core.management import CommandError, call_command

from django_mailapi.sandbox import (
    EmitloDialect,
    GenericDialect,
    SandboxServer,
    SendrDialect,
    dialect_for,
)
from tests.helpers import run_sandbox_cli

TIMEOUT = 10


@pytest.fixture
def server(request: Any) -> Iterator[SandboxServer]:
    with SandboxServer(provider=request.param) as sandbox:
        yield sandbox


def post(url: str, body: Any, key: str | None = "k") -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(url, json=body, headers=headers, timeout=TIMEOUT)


@pytest.mark.parametrize(
    ("provider", "kind"),
    [("sendr", SendrDialect), ("emitlo", EmitloDialect), ("generic", GenericDialect)],
)
def test_provider_argument_picks_the_dialect(provider, kind):
    assert isinstance(SandboxServer(provider=provider).dialect, kind)
    assert isinstance(dialect_for(provider), kind)


def test_an_unknown_provider_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="resend, sendr, emitlo, generic"):
        SandboxServer(provider="postmark")


def test_the_command_refuses_an_unknown_provider():
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("mailapi_sandbox", "--provider", "postmark")


@pytest.mark.parametrize(
    ("server", "body"),
    [
        ("sendr", {"statusCode": 401, "code": "unauthorized", "message": None, "details": {}}),
        ("emitlo", {"status": "error", "error": {"code": "UNAUTHENTICATED", "message": None}}),
        (
            "generic",
            {"code": "missing_api_key", "message": None, "details": [], "request_id": None},
        ),
    ],
    indirect=["server"],
)
def test_a_missing_key_is_answered_401_in_the_dialects_envelope(server, body):
    path = server.dialect.send_path
    answer = post(server.url + path, {}, key=None)
    got = answer.json()
    assert answer.status_code == 401
    # Compare the shape; the message text and request id are the catalog's and random.
    inner = got.get("error", got) if "status" in got else got
    assert set(got) == set(body)
    assert inner["code"] == (body.get("error") or body)["code"]


@pytest.mark.parametrize(
    ("server", "code"),
    [("sendr", "rate_limited"), ("emitlo", "RATE_LIMITED"), ("generic", "rate_limit_exceeded")],
    indirect=["server"],
)
def test_the_rate_limiter_answers_with_the_dialects_own_code(server, code):
    server.rate_limit = 1
    url = server.url + server.dialect.send_path
    answers = [post(url, {}) for _ in range(3)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited
    body = limited[0].json()
    assert (body.get("error") or body)["code"] == code
    assert int(limited[0].headers["Retry-After"]) >= 1


def test_sendr_nested_envelope_is_what_its_openapi_spec_shows():
    with SandboxServer(dialect=SendrDialect(envelope="nested")) as sandbox:
        answer = post(sandbox.url + "/emails", {"from": "a@example.com"})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert {"path": "/to", "message": "Expected email address or array of email addresses"} in (
        error["details"]["errors"]
    )


def test_sendr_refuses_an_unknown_envelope_style():
    with pytest.raises(ValueError, match="flat"):
        SendrDialect(envelope="xml")


@pytest.mark.parametrize("server", ["emitlo"], indirect=True)
def test_emitlo_batch_endpoint_is_not_modelled(server):
    answer = post(server.url + "/messages/batch", [{}])
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("server", ["emitlo"], indirect=True)
def test_emitlo_checks_sizes_as_emitlo_does(server):
    big = "A" * (10 * 1024 * 1024 * 4 // 3 + 8)
    body = {
        "from_email": "a@example.com",
        "to_email": "b@example.org",
        "subject": "s",
        "body": "<p>x</p>",
        "attachments": [{"filename": "r.pdf", "content": big, "content_type": "application/pdf"}],
    }
    answer = post(server.url + "/messages", body)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "ATTACHMENT_TOO_LARGE"


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "django_mailapi.sandbox", "--provider", "sendr", "--port", "0"],
        [
            "-m",
            "django",
            "mailapi_sandbox",
            "--provider",
            "sendr",
            "--port",
            "0",
            "--settings",
            "tests.settings",
        ],
    ],
    ids=["python-m", "manage-py"],
)
def test_command_line_provider_option_serves_that_dialect(argv: list[str]) -> None:
    answer, returncode, stdout, stderr = run_sandbox_cli(
        argv, "sendr", lambda url: post(url + "/emails", {})
    )

    assert answer.status_code == 422
    assert answer.json()["code"] == "validation_error"
    assert returncode == 0
    assert (stdout, stderr) == ("", "")
