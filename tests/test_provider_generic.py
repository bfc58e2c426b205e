"""The generic provider (seed 003's API), and custom providers named by dotted path.

HTTP goes to a sandbox speaking the generic dialect (Resend's requests, the seed's
``{code, message, details, request_id}`` errors).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage

from django_mailapi import errors
from django_mailapi.backend import serialize_message
from django_mailapi.errors import RetryClass
from django_mailapi.errors.generic import CATALOG
from django_mailapi.exceptions import ImproperlyConfigured, SendError
from django_mailapi.models import FailedSend, OutboundEmail, Status
from django_mailapi.outbox import process
from django_mailapi.providers import provider_name, resolve_provider_class
from django_mailapi.providers.base import ApiRequest, ApiResponse, Provider
from django_mailapi.providers.generic import GenericProvider
from django_mailapi.sandbox import SandboxServer
from tests.helpers import assert_resend_valid, check_ids, provider_worker, wait_for

# Error bodies in the generic API's envelope, codes and descriptions from seed 003.
SEED_REVOKED = {
    "code": "api_key_revoked",
    "message": "Key was revoked",
    "details": None,
    "request_id": "req_7f3a9c",
}
SEED_VALIDATION_NESTED = {
    "error": {
        "code": "validation_error",
        "message": "One or more fields failed validation",
        "details": [{"field": "to", "message": "must be an email address"}],
        "request_id": "req_b81d02",
    }
}


@pytest.fixture(scope="module")
def generic_server() -> Iterator[SandboxServer]:
    server = SandboxServer(provider="generic").start()
    yield server
    server.stop()


@pytest.fixture
def generic(generic_server: SandboxServer) -> Iterator[SandboxServer]:
    generic_server.reset()
    yield generic_server
    generic_server.reset()


def provider(base_url: str = "http://127.0.0.1:9") -> GenericProvider:
    return GenericProvider(api_key="gk", base_url=base_url)


def message_dict(**changes: Any) -> dict[str, Any]:
    base = serialize_message(
        EmailMessage(
            "Hi", "b", "Shop <shop@example.com>", ["ann@example.org"], cc=["bo@example.org"]
        ),
        "generic",
    )
    return {**base, **changes}


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, headers or {}, json.dumps(body).encode())


# --- configuration -------------------------------------------------------------------


def test_the_provider_refuses_to_start_without_a_base_url():
    with pytest.raises(ImproperlyConfigured, match="BASE_URL"):
        GenericProvider(api_key="gk")


def test_generic_without_base_url_is_system_check_e004(settings):
    assert check_ids(settings, {"API_KEY": "x", "PROVIDER": "generic"}) == ["mailapi.E004"]


def test_generic_with_a_base_url_passes_the_checks(settings):
    config = {"API_KEY": "x", "PROVIDER": "generic", "BASE_URL": "https://mail.example.com"}
    assert check_ids(settings, config) == []


# --- mapping -------------------------------------------------------------------------


def test_the_default_request_is_resends_body_with_an_idempotency_key():
    request = provider().build_request(message_dict(), "k-1")
    assert (request.method, request.path) == ("POST", "/emails")
    assert request.headers == {"Idempotency-Key": "k-1"}
    assert_resend_valid(request.json)
    assert request.json["cc"] == ["bo@example.org"]


class RenamingProvider(GenericProvider):
    """The documented way to speak another shape: subclass and override wire_body."""

    name = "renaming"

    def wire_body(self, message: dict[str, Any]) -> dict[str, Any]:
        body = super().wire_body(message)
        body["sender"] = body.pop("from")
        return body


def test_a_subclass_overrides_the_body_mapping():
    body = RenamingProvider(api_key="k", base_url="http://x.test").build_request(
        message_dict(), "k"
    )
    assert body.json["sender"] == "Shop <shop@example.com>"
    assert "from" not in body.json


def test_limits_are_left_to_the_api(generic):
    many = [f"u{i}@example.org" for i in range(60)]
    with pytest.raises(SendError) as caught:
        provider(generic.url).send(message_dict(to=many), "k")
    assert (caught.value.local, caught.value.http_status) == (False, 422)
    assert generic.stats["requests"] == 1


# --- over HTTP -----------------------------------------------------------------------


def test_send_returns_the_id_and_keeps_the_key(generic):
    email_id = provider(generic.url).send(message_dict(), "k-2")
    (stored,) = generic.emails
    assert (email_id, stored["idempotency_key"]) == (stored["id"], "k-2")


@pytest.mark.parametrize("entry", list(CATALOG), ids=lambda e: e.code)
def test_every_documented_error_comes_back_with_its_code_and_request_id(generic, entry):
    with pytest.raises(SendError) as caught:
        provider(generic.url).send(message_dict(to=[f"{entry.code}@fail.sandbox.test"]), "k")
    error = caught.value
    assert (error.code, error.http_status, error.message) == (
        entry.code,
        entry.http_status,
        entry.message,
    )
    assert error.request_id.startswith("req_")


# --- error parsing -------------------------------------------------------------------


def test_flat_envelope_keeps_the_request_id():
    error = provider().parse_error(response(401, SEED_REVOKED))
    assert (error.code, error.http_status, error.request_id) == (
        "api_key_revoked",
        401,
        "req_7f3a9c",
    )
    assert error.details is None


def test_nested_envelope_keeps_details_and_request_id():
    error = provider().parse_error(response(422, SEED_VALIDATION_NESTED))
    assert error.code == "validation_error"
    assert error.details == [{"field": "to", "message": "must be an email address"}]
    assert error.request_id == "req_b81d02"


def test_request_id_falls_back_to_the_header():
    body = {"code": "internal_error", "message": "Unexpected server error"}
    error = provider().parse_error(response(500, body, {"X-Request-Id": "req_h"}))
    assert error.request_id == "req_h"


@pytest.mark.parametrize(
    ("status", "raw", "code"),
    [
        (503, b"", "http_503"),
        (502, b"<html><h1>502 Bad Gateway</h1></html>", "http_502"),
        (400, b'{"message": "no code here", "request_id": "r"}', "http_400"),
        (400, b'"just a string"', "http_400"),
    ],
)
def test_unreadable_error_bodies_fall_back_to_the_status(status, raw, code):
    error = provider().parse_error(ApiResponse(status, {"x-request-id": "req_p"}, raw))
    assert (error.code, error.http_status, error.request_id) == (code, status, "req_p")


@pytest.mark.parametrize(
    ("code", "status", "retry"),
    [
        ("api_key_revoked", 401, RetryClass.PERMANENT),
        ("api_key_expired", 401, RetryClass.PERMANENT),
        ("ip_not_allowed", 403, RetryClass.PERMANENT),
        ("service_unavailable", 503, RetryClass.RETRY),
        ("internal_error", 500, RetryClass.RETRY),
        ("rate_limit_exceeded", 429, RetryClass.RETRY_AFTER),
    ],
)
def test_retry_classes_resolve_from_the_generic_catalog(code, status, retry):
    assert errors.resolve("generic", code, status).retry is retry


# --- a custom provider by dotted path ------------------------------------------------


class TinyProvider(Provider):
    """A whole provider in a few lines: Resend's wire shape, its own name."""

    name = "tiny"
    default_base_url = "http://127.0.0.1:9"

    def build_request(self, message: dict[str, Any], idempotency_key: str) -> ApiRequest:
        body = {
            "from": message["from"],
            "to": message["to"],
            "subject": message["subject"],
            "text": message["text"] or "",
        }
        return ApiRequest("POST", "/emails", body, {"Idempotency-Key": idempotency_key})

    def parse_success(self, response: ApiResponse) -> str:
        return str(response.json()["id"])


TINY = "tests.test_provider_generic.TinyProvider"


def test_a_dotted_path_names_a_custom_provider_class():
    assert resolve_provider_class(TINY) is TinyProvider
    assert provider_name(TINY) == "tiny"


@pytest.mark.django_db
def test_a_custom_provider_sends_through_the_outbox(settings, sandbox):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": TINY}
    mail.send_mail("Hi", "b", "shop@example.com", ["ann@example.org"])
    row = OutboundEmail.objects.get()
    assert row.provider == "tiny"

    assert process([row.pk]) == {"sent": 1}

    row.refresh_from_db()
    (stored,) = sandbox.emails
    assert row.provider_message_id == stored["id"]


@pytest.mark.django_db
def test_a_custom_providers_errors_get_actions_by_http_status(settings, sandbox):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": TINY}
    mail.send_mail("Hi", "b", "shop@example.com", ["invalid_api_key@fail.sandbox.test"])
    row = OutboundEmail.objects.get()

    assert process([row.pk]) == {"failed": 1}

    (failure,) = FailedSend.objects.all()
    assert (failure.error_code, failure.http_status) == ("http_403", 403)
    assert failure.suggested_action


# --- end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def generic_worker(worker_env, tmp_path_factory) -> Iterator[tuple[SandboxServer, str]]:
    with provider_worker("generic", worker_env, tmp_path_factory.mktemp("generic")) as (
        sandbox,
        _worker,
        queue,
    ):
        yield sandbox, queue


@pytest.fixture
def e2e(settings, generic_worker, server_db) -> SandboxServer:
    sandbox, queue = generic_worker
    sandbox.reset()
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {
        **settings.MAILAPI,
        "PROVIDER": "generic",
        "BASE_URL": sandbox.url,
        "QUEUE": queue,
    }
    return sandbox


def settled(*pks: int) -> bool:
    done = OutboundEmail.objects.filter(pk__in=pks, status__in=[Status.SENT, Status.FAILED])
    return done.count() == len(pks)


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_worker_sends_generic_and_stores_request_ids_of_seed_errors(e2e):
    mail.send_mail("Hi", "b", "shop@example.com", ["ann@example.org"])
    mail.send_mail("Hi", "b", "shop@example.com", ["ip_not_allowed@fail.sandbox.test"])
    mail.send_mail("Hi", "b", "shop@example.com", ["api_key_revoked@fail.sandbox.test"])
    mail.send_mail("Hi", "b", "shop@example.com", ["flaky+1@example.org"])
    pks = list(OutboundEmail.objects.order_by("pk").values_list("pk", flat=True))

    wait_for(lambda: settled(*pks))

    sent, ip, revoked, flaky = OutboundEmail.objects.order_by("pk")
    assert (sent.status, flaky.status) == (Status.SENT, Status.SENT)
    assert (ip.status, ip.last_error_code) == (Status.FAILED, "ip_not_allowed")
    assert (revoked.status, revoked.last_error_code) == (Status.FAILED, "api_key_revoked")
    failures = {f.error_code: f for f in FailedSend.objects.all()}
    assert set(failures) == {"ip_not_allowed", "api_key_revoked", "service_unavailable"}
    assert failures["service_unavailable"].will_retry is True
    assert not failures["ip_not_allowed"].will_retry
    for failure in failures.values():
        assert failure.request_id.startswith("req_")
        assert failure.suggested_action
    assert "allowlist" in failures["ip_not_allowed"].suggested_action
