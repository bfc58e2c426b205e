"""Webhook verification and parsing, against signatures the real libraries make.

Resend signs with Svix; ``svix`` and ``standardwebhooks`` (test dependencies only) make
the signatures our verifier must accept, and check the ones the sandbox makes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import pytest
import standardwebhooks
from svix.webhooks import Webhook

from django_mailapi.exceptions import WebhookPayloadError, WebhookSignatureError
from django_mailapi.providers import signatures
from django_mailapi.providers.base import EVENT_TYPES, WebhookRequest
from django_mailapi.providers.emitlo import EmitloProvider
from django_mailapi.providers.resend import ResendProvider
from django_mailapi.providers.sendr import SendrProvider
from django_mailapi.sandbox.webhooks import BUILDERS, sign_svix
from tests.webhook_helpers import (
    HEX_SECRET,
    OTHER_SECRET,
    SECRET,
    bounce,
    hex_signature,
    resend_event,
    svix_headers,
)

BODY = json.dumps(resend_event("delivered", "em-1")).encode()


def request(body: bytes, headers: dict[str, str], at: float | None = None) -> WebhookRequest:
    return WebhookRequest(headers, body, time.time() if at is None else at)


def verify_resend(body: bytes, headers: dict[str, str], secrets=(SECRET,), at=None) -> None:
    ResendProvider.verify_webhook(request(body, headers, at), list(secrets), 300)


# --- Svix (Resend) ---------------------------------------------------------------------------


def test_a_signature_made_by_the_svix_library_verifies():
    verify_resend(BODY, svix_headers(BODY))


def test_a_signature_made_by_standardwebhooks_with_webhook_headers_verifies():
    now = dt.datetime.now(dt.timezone.utc)
    signature = standardwebhooks.Webhook(SECRET).sign("msg_std", now, BODY.decode())
    headers = {
        "webhook-id": "msg_std",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    verify_resend(BODY, headers)


def test_header_names_are_read_in_any_case():
    headers = {k.upper(): v for k, v in svix_headers(BODY).items()}
    verify_resend(BODY, headers)


def test_a_secret_without_its_whsec_prefix_is_the_same_secret():
    verify_resend(BODY, svix_headers(BODY), secrets=[SECRET.removeprefix("whsec_")])


def test_any_configured_secret_may_verify_and_non_svix_secrets_are_skipped():
    headers = svix_headers(BODY, secret=OTHER_SECRET)
    verify_resend(BODY, headers, secrets=["plain text, not base64!", SECRET, OTHER_SECRET])


def test_one_good_signature_among_several_v1_entries_verifies():
    headers = svix_headers(BODY)
    wrong = svix_headers(BODY, secret=OTHER_SECRET, msg_id=headers["svix-id"])
    headers["svix-signature"] = (
        f"v2,abc {wrong['svix-signature']} v1,not-base64! {headers['svix-signature']}"
    )
    verify_resend(BODY, headers)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda h, b: (h, b + b" "), "a changed body"),
        (lambda h, b: ({**h, "svix-id": "msg_other"}, b), "a changed id"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "svix-signature"}, b), "no signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "svix-id"}, b), "no id"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "svix-timestamp"}, b), "no time"),
        (lambda h, b: ({**h, "svix-timestamp": "soon"}, b), "a timestamp not a number"),
        (lambda h, b: ({**h, "svix-signature": "v1,"}, b), "an empty signature"),
        (lambda h, b: ({**h, "svix-signature": "v1a," + h["svix-signature"][3:]}, b), "no v1"),
        (lambda h, b: ({}, b), "no headers at all"),
    ],
)
def test_anything_but_the_signed_request_is_refused(change, why):
    headers, body = change(svix_headers(BODY), BODY)
    with pytest.raises(WebhookSignatureError):
        verify_resend(body, headers)


def test_a_signature_by_a_secret_not_configured_is_refused():
    with pytest.raises(WebhookSignatureError, match="No configured secret"):
        verify_resend(BODY, svix_headers(BODY, secret=OTHER_SECRET))


@pytest.mark.parametrize(("offset", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_the_signed_timestamp_must_be_within_the_tolerance_either_way(offset, ok):
    now = time.time()
    at = dt.datetime.fromtimestamp(int(now) + offset, dt.timezone.utc)
    headers = svix_headers(BODY, at=at)
    if ok:
        verify_resend(BODY, headers, at=int(now))
    else:
        with pytest.raises(WebhookSignatureError, match=r"old|future"):
            verify_resend(BODY, headers, at=int(now))


def test_signatures_are_compared_in_constant_time(monkeypatch):
    calls = []
    real = signatures.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signatures.hmac, "compare_digest", spy)
    verify_resend(BODY, svix_headers(BODY))
    SendrProvider.verify_webhook(
        request(BODY, {"x-sendry-signature": hex_signature(BODY)}), [HEX_SECRET], 300
    )
    assert len(calls) == 2


# --- the sandbox's signatures, checked by the libraries --------------------------------------


def test_what_the_sandbox_signs_verifies_with_svix_and_standardwebhooks():
    (event,) = BUILDERS["resend"]("em-1", {"subject": "Hi", "from": "a@b.c"}, "bounced@x.org")
    body = json.dumps(event.body).encode()
    headers = event.sign(SECRET, event.event_id, body, int(time.time()))

    Webhook(SECRET).verify(body, headers)  # raises WebhookVerificationError if not
    std = {k.replace("svix-", "webhook-"): v for k, v in headers.items()}
    assert standardwebhooks.Webhook(SECRET).verify(body, std)["data"]["email_id"] == "em-1"


def test_sign_svix_matches_the_svix_library():
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    ours = sign_svix(SECRET, "msg_1", int(now.timestamp()), BODY)
    assert ours == Webhook(SECRET).sign("msg_1", now, BODY.decode())


@pytest.mark.parametrize("provider", ["sendr", "emitlo"])
def test_what_the_sandbox_signs_for_hmac_providers_verifies_with_ours(provider):
    cls = {"sendr": SendrProvider, "emitlo": EmitloProvider}[provider]
    for event in BUILDERS[provider]("id-1", {"subject": "Hi"}, "complained@x.org"):
        body = json.dumps(event.body).encode()
        headers = event.sign(HEX_SECRET, event.event_id, body, int(time.time()))
        cls.verify_webhook(request(body, headers), [HEX_SECRET], 300)
        (report,) = cls.parse_webhook(request(body, headers))
        assert report.message_id == "id-1"
        assert report.event_id == event.event_id


# --- hex HMAC (Sendr, Emitlo) ------------------------------------------------------------


@pytest.mark.parametrize("form", ["{}", "sha256={}", "SHA256={}", "{}".upper()])
def test_sendr_accepts_its_hex_signature_with_or_without_the_prefix(form):
    signature = form.format(hex_signature(BODY))
    SendrProvider.verify_webhook(
        request(BODY, {"X-Sendry-Signature": signature}), ["other", HEX_SECRET], 300
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-sendry-signature": ""}, {"x-sendry-signature": "sha256=" + "0" * 64}],
)
def test_sendr_refuses_a_missing_or_wrong_signature(headers):
    with pytest.raises(WebhookSignatureError):
        SendrProvider.verify_webhook(request(BODY, headers), [HEX_SECRET], 300)


def emitlo_body(timestamp: str, event_type: str = "delivered", **data) -> bytes:
    payload = {
        "event_type": event_type,
        "timestamp": timestamp,
        "data": {"message_id": "m-1", "to_email": "ann@example.org", "subject": "Hi", **data},
    }
    return json.dumps(payload).encode()


def iso(offset: float = 0) -> str:
    moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset)
    return moment.isoformat().replace("+00:00", "Z")


def emitlo_request(body: bytes, secret: str = HEX_SECRET) -> WebhookRequest:
    headers = {
        "X-Emitlo-Signature": "sha256=" + hex_signature(body, secret),
        "X-Emitlo-Event": "delivered",
        "X-Emitlo-Delivery-Id": "d-1",
    }
    return request(body, headers)


def test_emitlo_checks_the_signed_body_timestamp_against_the_tolerance():
    EmitloProvider.verify_webhook(emitlo_request(emitlo_body(iso())), [HEX_SECRET], 300)
    for stale in (iso(-400), iso(400)):
        with pytest.raises(WebhookSignatureError):
            EmitloProvider.verify_webhook(emitlo_request(emitlo_body(stale)), [HEX_SECRET], 300)
    with pytest.raises(WebhookSignatureError):
        EmitloProvider.verify_webhook(
            emitlo_request(emitlo_body(iso()), secret="wrong"), [HEX_SECRET], 300
        )


def test_emitlo_verified_body_without_a_timestamp_is_a_payload_error():
    with pytest.raises(WebhookPayloadError):
        EmitloProvider.verify_webhook(emitlo_request(b'{"data": {}}'), [HEX_SECRET], 300)
    with pytest.raises(WebhookPayloadError):
        EmitloProvider.verify_webhook(emitlo_request(b"not json"), [HEX_SECRET], 300)


# --- parsing ---------------------------------------------------------------------------------


def parse_resend(payload) -> object:
    body = json.dumps(payload).encode()
    (report,) = ResendProvider.parse_webhook(request(body, svix_headers(body, msg_id="msg_9")))
    return report


@pytest.mark.parametrize(
    ("bounce_kind", "expected"),
    [("Permanent", "hard"), ("Transient", "soft"), ("Undetermined", "undetermined")],
)
def test_resend_bounces_keep_their_kind_and_reason(bounce_kind, expected):
    report = parse_resend(resend_event("bounced", "em-1", bounce=bounce(bounce_kind)))
    assert report.type == "bounced"
    assert report.event_id == "msg_9"
    assert report.message_id == "em-1"
    assert report.recipients == ["ann@example.org"]
    assert report.details["bounce_type"] == expected
    assert "permanently rejected" in report.details["reason"]
    assert report.occurred_at is not None and report.occurred_at.tzinfo is not None


def test_resend_failed_suppressed_and_clicked_carry_their_details():
    failed = parse_resend(resend_event("failed", "e", failed={"reason": "reached_daily_quota"}))
    assert (failed.type, failed.details["reason"]) == ("failed", "reached_daily_quota")
    suppressed = parse_resend(
        resend_event("suppressed", "e", suppressed={"reason": "previous_bounce", "type": "x"})
    )
    assert suppressed.details["reason"] == "previous_bounce"
    clicked = parse_resend(resend_event("clicked", "e", click={"link": "https://x.org/a"}))
    assert clicked.details["link"] == "https://x.org/a"


def test_every_resend_email_event_type_is_normalized_and_others_are_unknown():
    for raw in (
        "sent",
        "delivered",
        "delivery_delayed",
        "bounced",
        "complained",
        "opened",
        "clicked",
        "failed",
        "scheduled",
        "suppressed",
    ):
        assert parse_resend(resend_event(raw, "e")).type == raw
    unknown = parse_resend({"type": "contact.created", "created_at": "x", "data": {}})
    assert (unknown.type, unknown.details["raw_type"]) == ("unknown", "contact.created")
    assert unknown.occurred_at is None
    assert set(EVENT_TYPES) >= {"sent", "unknown"}


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"text"', b"{}", b'{"type": "email.sent"}', b'{"type": 3, "data": {}}', b"\xff"],
)
def test_resend_bodies_of_another_shape_are_payload_errors(body):
    with pytest.raises(WebhookPayloadError):
        ResendProvider.parse_webhook(request(body, {"svix-id": "x"}))


def test_sendr_uses_the_body_id_or_else_a_digest_of_the_body():
    payload = {
        "type": "email.bounced",
        "created_at": iso(),
        "data": {"email_id": "em_1", "to": ["a@x.org"], "bounce": {"type": "hard"}},
    }
    body = json.dumps(payload).encode()
    (report,) = SendrProvider.parse_webhook(request(body, {}))
    assert report.event_id.startswith("sha256:")
    assert (report.type, report.details["bounce_type"]) == ("bounced", "hard")
    body = json.dumps({**payload, "id": "evt_1", "type": "email.opened"}).encode()
    (report,) = SendrProvider.parse_webhook(request(body, {}))
    assert (report.event_id, report.type) == ("evt_1", "opened")


@pytest.mark.parametrize(
    ("raw", "kind", "bounce_type"),
    [
        ("delivered", "delivered", None),
        ("deferred", "delivery_delayed", None),
        ("soft_bounced", "bounced", "soft"),
        ("hard_bounced", "bounced", "hard"),
        ("complained", "complained", None),
        ("unsubscribed", "unsubscribed", None),
        ("something_new", "unknown", None),
    ],
)
def test_emitlo_event_types(raw, kind, bounce_type):
    body = emitlo_body(iso(), raw, dsn_status="5.1.1")
    (report,) = EmitloProvider.parse_webhook(emitlo_request(body))
    assert report.type == kind
    assert report.details.get("bounce_type") == bounce_type
    assert report.event_id == "d-1"
    assert report.recipients == ["ann@example.org"]


def test_secrets_that_are_not_base64_cannot_be_svix_keys():
    assert signatures.svix_key("whsec_" + base64.b64encode(b"k").decode()) == b"k"
    assert signatures.svix_key("whsec_!!!") is None
    assert signatures.svix_key("") is None
