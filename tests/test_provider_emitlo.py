"""The Emitlo provider: one recipient per message (fan-out), HTML-only bodies, errors.

HTTP goes to a sandbox speaking Emitlo's dialect.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from email.mime.image import MIMEImage
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives

from django_mailapi import errors, quota
from django_mailapi.backend import serialize_message
from django_mailapi.errors import RetryClass
from django_mailapi.errors.emitlo import CATALOG
from django_mailapi.exceptions import SendError, UnsupportedFeature
from django_mailapi.models import FailedSend, OutboundEmail, Status
from django_mailapi.outbox import process
from django_mailapi.providers.base import ApiResponse
from django_mailapi.providers.emitlo import EmitloProvider, text_to_html
from django_mailapi.sandbox import SandboxServer
from tests.helpers import provider_worker, wait_for

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
MB = 1024 * 1024

# The error envelope exactly as Emitlo's error page (seed 004) shows it.
SEED_VALIDATION = {
    "status": "error",
    "error": {
        "code": "VALIDATION_ERROR",
        "message": "The from_email field is required.",
        "details": {"from_email": ["The from_email field is required."]},
    },
}


@pytest.fixture(scope="module")
def emitlo_server() -> Iterator[SandboxServer]:
    server = SandboxServer(provider="emitlo").start()
    yield server
    server.stop()


@pytest.fixture
def emitlo(emitlo_server: SandboxServer) -> Iterator[SandboxServer]:
    emitlo_server.reset()
    yield emitlo_server
    emitlo_server.reset()


def provider(base_url: str = "http://127.0.0.1:9") -> EmitloProvider:
    return EmitloProvider(api_key="em_key", base_url=base_url)


def payload(message: EmailMessage) -> dict[str, Any]:
    return serialize_message(message, "emitlo")


def wire(message: EmailMessage) -> dict[str, Any]:
    return provider().build_request(payload(message), "k").json


def message_dict(**changes: Any) -> dict[str, Any]:
    base = payload(EmailMessage("Hi", "b", "shop@example.com", ["ann@example.org"]))
    return {**base, **changes}


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, headers or {}, json.dumps(body).encode())


# --- mapping -------------------------------------------------------------------------


def test_names_and_addresses_are_split_into_emitlo_fields():
    body = wire(EmailMessage("Hi", "b", "Shop <shop@example.com>", ["Ann Lee <ann@example.org>"]))
    assert body == {
        "from_email": "shop@example.com",
        "from_name": "Shop",
        "to_email": "ann@example.org",
        "to_name": "Ann Lee",
        "subject": "Hi",
        "body": "<p>b</p>",
    }


def test_text_only_body_is_escaped_into_paragraphs_and_line_breaks():
    text = "Dear <Ann> & co,\nline two\n\n  indented\r\nend"
    assert text_to_html(text) == (
        "<p>Dear &lt;Ann&gt; &amp; co,<br>\nline two</p>\n<p>&nbsp;&nbsp;indented<br>\nend</p>"
    )


def test_empty_text_body_is_an_empty_paragraph():
    assert text_to_html("") == "<p></p>"


def test_html_only_message_sends_its_html():
    msg = EmailMessage("Hi", "<b>x</b>", "shop@example.com", ["ann@example.org"])
    msg.content_subtype = "html"
    assert wire(msg)["body"] == "<b>x</b>"


def test_text_and_html_send_the_html_body():
    msg = EmailMultiAlternatives("Hi", "Plain", "shop@example.com", ["ann@example.org"])
    msg.attach_alternative("<p>Rich</p>", "text/html")
    assert wire(msg)["body"] == "<p>Rich</p>"


def test_one_reply_to_is_a_bare_address():
    msg = EmailMessage(
        "Hi", "b", "shop@example.com", ["ann@example.org"], reply_to=["Help <help@x.io>"]
    )
    assert wire(msg)["reply_to"] == "help@x.io"


@pytest.mark.parametrize(
    ("kwargs", "feature"),
    [
        ({"reply_to": ["a@x.io", "b@x.io"]}, "reply-to"),
        ({"headers": {"X-Campaign": "spring"}}, "X-Campaign"),
    ],
)
def test_what_emitlo_cannot_carry_is_refused(kwargs, feature):
    msg = EmailMessage("Hi", "b", "shop@example.com", ["ann@example.org"], **kwargs)
    with pytest.raises(UnsupportedFeature, match=feature) as caught:
        wire(msg)
    assert caught.value.provider == "emitlo"


def test_attachments_have_all_three_required_fields():
    msg = EmailMessage("Hi", "b", "shop@example.com", ["ann@example.org"])
    msg.attach("a.txt", "hello", "text/plain")
    msg.attach(MIMEImage(PNG, "png"))  # no filename: one is made up
    assert wire(msg)["attachments"] == [
        {
            "filename": "a.txt",
            "content": base64.b64encode(b"hello").decode(),
            "content_type": "text/plain",
        },
        {
            "filename": "attachment-2.png",
            "content": base64.b64encode(PNG).decode(),
            "content_type": "image/png",
        },
    ]


def test_inline_images_are_refused_rather_than_sent_as_loose_files():
    msg = EmailMultiAlternatives("Hi", "b", "shop@example.com", ["ann@example.org"])
    msg.attach_alternative('<img src="cid:logo">', "text/html")
    image = MIMEImage(PNG, "png")
    image.add_header("Content-ID", "<logo>")
    msg.attach(image)
    with pytest.raises(UnsupportedFeature, match="inline images"):
        wire(msg)


def test_the_idempotency_key_is_sent_although_emitlo_does_not_document_one():
    request = provider().build_request(message_dict(), "k-1")
    assert (request.method, request.path) == ("POST", "/messages")
    assert request.headers == {"Idempotency-Key": "k-1"}


# --- split ---------------------------------------------------------------------------


def test_split_gives_each_distinct_recipient_its_own_message():
    message = message_dict(
        to=["Ann <ann@example.org>", "bo@example.org"],
        cc=["cy@example.org", "BO@example.org"],
        bcc=["di@example.org"],
    )
    parts = EmitloProvider.split(message)
    assert [(p["to"], p["cc"], p["bcc"]) for p in parts] == [
        (["Ann <ann@example.org>"], [], []),
        (["bo@example.org"], [], []),
        (["cy@example.org"], [], []),
        (["di@example.org"], [], []),
    ]
    assert all(p["subject"] == "Hi" for p in parts)


def test_a_message_with_several_recipients_is_refused_if_it_was_not_split(emitlo):
    with pytest.raises(SendError) as caught:
        provider(emitlo.url).send(message_dict(cc=["bo@example.org"]), "k")
    assert caught.value.code == "too_many_recipients"


@pytest.mark.django_db
def test_backend_fans_out_to_cc_and_bcc_one_row_each(settings):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "emitlo"}
    msg = EmailMessage(
        "Hi",
        "b",
        "shop@example.com",
        ["ann@example.org"],
        cc=["bo@example.org"],
        bcc=["cy@example.org"],
    )
    assert msg.send() == 1
    rows = list(OutboundEmail.objects.order_by("pk"))
    assert [r.recipients for r in rows] == ["ann@example.org", "bo@example.org", "cy@example.org"]
    assert {r.recipient_count for r in rows} == {1}
    assert {r.provider for r in rows} == {"emitlo"}
    assert len({r.idempotency_key for r in rows}) == 3


@pytest.mark.django_db
def test_each_fanned_out_row_is_sent_once_and_counted_once(settings, emitlo):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "emitlo", "BASE_URL": emitlo.url}
    mail.send_mail("Hi", "b", "shop@example.com", ["a@example.org", "b@example.org", "c@x.org"])
    ids = list(OutboundEmail.objects.values_list("pk", flat=True))

    assert process(ids) == {"sent": 3}

    assert sorted(e["payload"]["to_email"] for e in emitlo.emails) == [
        "a@example.org",
        "b@example.org",
        "c@x.org",
    ]
    assert quota.usage("default") == {"day": 3, "month": 3}


# --- local limits --------------------------------------------------------------------


def attachment(size: int, name: str = "big.bin") -> dict[str, Any]:
    return {
        "filename": name,
        "content": "",
        "content_type": "application/octet-stream",
        "content_id": None,
        "size": size,
    }


def test_an_attachment_over_10_mb_is_refused_locally(emitlo):
    with pytest.raises(SendError) as caught:
        provider(emitlo.url).send(message_dict(attachments=[attachment(10 * MB + 1)]), "k")
    assert (caught.value.code, caught.value.local) == ("attachment_too_large", True)
    assert "10 MB" in caught.value.message and "big.bin" in caught.value.message
    assert emitlo.stats["requests"] == 0


def test_a_message_over_25_mb_in_all_is_refused_locally(emitlo):
    parts = [attachment(9 * MB, f"{i}.bin") for i in range(3)]
    with pytest.raises(SendError) as caught:
        provider(emitlo.url).send(message_dict(attachments=parts), "k")
    assert (caught.value.code, caught.value.local) == ("message_too_large", True)
    assert "25 MB" in caught.value.message


# --- over HTTP -----------------------------------------------------------------------


def test_send_returns_the_message_id_from_the_202_answer(emitlo):
    message_id = provider(emitlo.url).send(message_dict(), "k")
    (stored,) = emitlo.emails
    assert message_id == stored["id"]
    assert stored["payload"]["to_email"] == "ann@example.org"


def test_a_repeated_request_is_stored_twice_because_emitlo_has_no_idempotency(emitlo):
    provider(emitlo.url).send(message_dict(), "same")
    provider(emitlo.url).send(message_dict(), "same")
    assert len(emitlo.emails) == 2


@pytest.mark.parametrize("entry", list(CATALOG), ids=lambda e: e.code)
def test_every_documented_error_comes_back_with_its_code(emitlo, entry):
    address = f"{entry.code.lower()}@fail.sandbox.test"
    with pytest.raises(SendError) as caught:
        provider(emitlo.url).send(message_dict(to=[address]), "k")
    assert (caught.value.code, caught.value.http_status) == (entry.code, entry.http_status)
    assert caught.value.message == entry.message


def test_the_sandbox_answers_validation_errors_with_laravel_details(emitlo):
    api = provider(emitlo.url)
    request = api.build_request(message_dict(), "k")
    del request.json["from_email"]
    request.json["subject"] = "s" * 999
    error = api.parse_error(api.call(request))
    assert error.code == "VALIDATION_ERROR"
    assert error.details == {
        "from_email": ["The from_email field is required."],
        "subject": ["The subject may not be greater than 998 characters."],
    }


# --- error parsing -------------------------------------------------------------------


def test_seed_validation_error_parses_with_its_details():
    error = provider().parse_error(response(422, SEED_VALIDATION))
    assert (error.code, error.http_status) == ("VALIDATION_ERROR", 422)
    assert error.message == "The from_email field is required."
    assert error.details == {"from_email": ["The from_email field is required."]}


def test_the_bare_inner_object_the_page_shows_is_read_too():
    body = {"code": "RATE_LIMITED", "message": "Rate limit exceeded. Retry after 60 seconds."}
    error = provider().parse_error(response(429, body, {"Retry-After": "60"}))
    assert (error.code, error.retry_after) == ("RATE_LIMITED", 60.0)


@pytest.mark.parametrize(
    ("status", "raw", "code"),
    [
        (500, b"", "http_500"),
        (502, b"<html>Bad gateway</html>", "http_502"),
        (422, b'{"status": "error"}', "http_422"),
        (422, b'{"status": "error", "error": {"message": "no code"}}', "http_422"),
    ],
)
def test_unreadable_error_bodies_fall_back_to_the_status(status, raw, code):
    error = provider().parse_error(ApiResponse(status, {}, raw))
    assert (error.code, error.http_status) == (code, status)


@pytest.mark.parametrize(
    "body",
    [{"status": "error", "data": {"message_id": "x"}}, {"status": "success", "data": {}}, []],
)
def test_a_2xx_that_is_not_a_success_body_is_invalid_response(emitlo, body):
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
        provider().parse_success(response(202, body))


@pytest.mark.parametrize(
    ("code", "status", "retry"),
    [
        ("RATE_LIMITED", 429, RetryClass.RETRY_AFTER),
        ("INTERNAL_ERROR", 500, RetryClass.RETRY),
        ("VALIDATION_ERROR", 422, RetryClass.PERMANENT),
        ("ATTACHMENT_TOO_LARGE", 422, RetryClass.PERMANENT),
        ("UNAUTHENTICATED", 401, RetryClass.PERMANENT),
    ],
)
def test_retry_classes_resolve_from_the_emitlo_catalog(code, status, retry):
    assert errors.resolve("emitlo", code, status).retry is retry


# --- end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def emitlo_worker(worker_env, tmp_path_factory) -> Iterator[tuple[SandboxServer, str]]:
    with provider_worker("emitlo", worker_env, tmp_path_factory.mktemp("emitlo")) as (
        sandbox,
        _worker,
        queue,
    ):
        yield sandbox, queue


@pytest.fixture
def e2e(settings, emitlo_worker, server_db) -> SandboxServer:
    sandbox, queue = emitlo_worker
    sandbox.reset()
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {
        **settings.MAILAPI,
        "PROVIDER": "emitlo",
        "BASE_URL": sandbox.url,
        "QUEUE": queue,
    }
    return sandbox


def settled(*ids: int) -> bool:
    done = OutboundEmail.objects.filter(pk__in=ids, status__in=[Status.SENT, Status.FAILED])
    return done.count() == len(ids)


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_worker_fans_out_sends_each_recipient_once_and_records_seed_errors(e2e):
    msg = EmailMessage(
        "Hi",
        "line one\nline two",
        "Shop <shop@example.com>",
        ["ann@example.org"],
        cc=["bo@example.org"],
        bcc=["forbidden@fail.sandbox.test"],
    )
    assert msg.send() == 1
    mail.send_mail("Hi", "b", "shop@example.com", ["VALIDATION_ERROR@fail.sandbox.test"])
    ids = list(OutboundEmail.objects.values_list("pk", flat=True))
    assert len(ids) == 4

    wait_for(lambda: settled(*ids))

    rows = {r.recipients: r for r in OutboundEmail.objects.all()}
    assert rows["ann@example.org"].status == Status.SENT
    assert rows["bo@example.org"].status == Status.SENT
    assert rows["forbidden@fail.sandbox.test"].last_error_code == "FORBIDDEN"
    assert rows["VALIDATION_ERROR@fail.sandbox.test"].last_error_code == "VALIDATION_ERROR"
    assert sorted(e["payload"]["to_email"] for e in e2e.emails) == [
        "ann@example.org",
        "bo@example.org",
    ]
    assert e2e.emails[0]["payload"]["body"] == "<p>line one<br>\nline two</p>"
    failures = FailedSend.objects.all()
    assert {(f.error_code, f.http_status) for f in failures} == {
        ("FORBIDDEN", 403),
        ("VALIDATION_ERROR", 422),
    }
    assert all(f.suggested_action and not f.will_retry for f in failures)
    assert quota.usage("default")["day"] == 2
