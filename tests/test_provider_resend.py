"""Resend's error envelope and batch answers, read from bodies exactly as documented
(providers.md §1.3 and §1.5, and the error page of seed 000)."""

from __future__ import annotations

import json

import pytest

from django_mailapi import errors
from django_mailapi.exceptions import SendError
from django_mailapi.providers.base import ApiResponse
from django_mailapi.providers.resend import ResendProvider

PROVIDER = ResendProvider(api_key="re_x", base_url="http://127.0.0.1:9")

DOCUMENTED_422 = (
    '{"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field. The '
    "email address needs to follow the `email@example.com` or `Name <email@example.com>` "
    'format."}'
)
SDK_404 = '{"statusCode":404,"name":"not_found","message":"The requested endpoint does not exist."}'
DOMAIN_403 = json.dumps(
    {
        "statusCode": 403,
        "name": "validation_error",
        "message": "The `domain.com` domain is not verified. Please, add and verify your domain.",
    }
)


def parse(status: int, body: str | bytes, headers: dict[str, str] | None = None) -> SendError:
    raw = body.encode() if isinstance(body, str) else body
    return PROVIDER.parse_error(ApiResponse(status, headers or {}, raw))


def test_documented_validation_error_body_is_read_by_name():
    error = parse(422, DOCUMENTED_422, {"x-request-id": "req_1"})
    assert (error.code, error.http_status, error.request_id) == ("validation_error", 422, "req_1")
    assert error.message.startswith("Invalid `to` field.")
    spec = errors.resolve("resend", error.code, error.http_status, error.message)
    assert spec.retry is errors.RetryClass.PERMANENT


def test_sdk_not_found_body():
    error = parse(404, SDK_404)
    assert (error.code, error.http_status) == ("not_found", 404)


def test_the_403_domain_case_gets_its_own_action():
    error = parse(403, DOMAIN_403)
    spec = errors.resolve("resend", error.code, error.http_status, error.message)
    assert spec.message.startswith("The `domain.com` domain is not verified")


def test_rate_limit_carries_retry_after():
    body = json.dumps({"statusCode": 429, "name": "rate_limit_exceeded", "message": "Too many"})
    error = parse(429, body, {"retry-after": "2", "ratelimit-reset": "1"})
    assert error.retry_after == 2.0
    retry = errors.resolve("resend", error.code, 429).retry
    assert retry is errors.RetryClass.RETRY_AFTER


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
        (500, ""),
        (503, "null"),
        (500, '{"message": "no name here"}'),
        (500, b"\xff\xfe not utf-8"),
    ],
)
def test_unreadable_bodies_become_application_error_and_are_retried(status, body):
    error = parse(status, body)
    assert (error.code, error.http_status) == ("application_error", status)
    assert errors.resolve("resend", error.code, status).retry is errors.RetryClass.RETRY


def test_an_unknown_name_is_kept_as_is_with_an_action_by_status():
    error = parse(418, '{"statusCode": 418, "name": "teapot_mode", "message": "short and stout"}')
    assert error.code == "teapot_mode"
    spec = errors.resolve("resend", error.code, 418, error.message)
    assert spec.retry is errors.RetryClass.PERMANENT
    assert spec.action


def test_permissive_batch_answer_maps_each_error_to_its_email():
    body = json.dumps(
        {
            "data": [{"id": "id-0"}, {"id": "id-1"}, {"id": "id-3"}],
            "errors": [{"index": 2, "message": "The `to` field is missing."}],
        }
    )
    results = PROVIDER.parse_batch_response(ApiResponse(200, {}, body.encode()))
    assert results[:2] == ["id-0", "id-1"]
    assert isinstance(results[2], SendError)
    assert (results[2].code, results[2].http_status, results[2].message) == (
        "validation_error",
        422,
        "The `to` field is missing.",
    )
    assert results[3] == "id-3"


def test_batch_request_is_permissive_with_one_key():
    message = {
        "from": "a@example.com", "to": ["b@example.com"], "cc": [], "bcc": [], "reply_to": [],
        "subject": "s", "text": "t", "html": None, "headers": {}, "attachments": [],
    }  # fmt: skip
    request = PROVIDER.build_batch_request([message, message], "mailapi-batch/abc")
    assert request.path == "/emails/batch"
    assert request.headers == {
        "Idempotency-Key": "mailapi-batch/abc",
        "x-batch-validation": "permissive",
    }
    assert len(request.json) == 2


def test_an_unreadable_batch_answer_fails_the_whole_batch_as_invalid_response():
    with pytest.raises(SendError) as info:
        PROVIDER.parse_batch_response(ApiResponse(200, {}, b'{"data": "?"}'))
    assert info.value.code == "invalid_response"
