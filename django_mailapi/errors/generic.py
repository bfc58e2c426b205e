"""The documented errors of the unnamed JSON API behind the ``generic`` provider.

Its page gives a description per code rather than the API's message, so the
description is the message here. The API could not be identified, so there is no
documentation link. Its error bodies carry a ``request_id``, worth quoting to its
support. The actions are ours.
"""

from __future__ import annotations

from .base import Catalog, Entries, RetryClass

PROVIDER = "generic"


_entry = Entries(PROVIDER)


CATALOG = Catalog(
    PROVIDER,
    [
        _entry(
            "missing_api_key",
            401,
            "No Authorization header present",
            "The request went out without `Authorization: Bearer <key>`. Set "
            "MAILAPI['API_KEY'], restart the workers and re-queue with mailapi_retry.",
        ),
        _entry(
            "invalid_api_key",
            401,
            "Key does not exist or is malformed",
            "Compare MAILAPI['API_KEY'] with the key shown in the provider's dashboard; it "
            "may be mistyped, truncated or from another account.",
        ),
        _entry(
            "api_key_revoked",
            401,
            "Key was revoked",
            "A revoked key never works again. Create a new key, put it in MAILAPI['API_KEY'] "
            "and re-queue with mailapi_retry.",
        ),
        _entry(
            "api_key_expired",
            401,
            "Key has passed its expiry date",
            "The key is out of date. Create a replacement, put it in MAILAPI['API_KEY'] and "
            "re-queue with mailapi_retry.",
        ),
        _entry(
            "insufficient_scope",
            403,
            "Key lacks required permissions",
            "The key may not make this call. Create one whose scope includes it (sending "
            "email, for the send endpoint) and use that.",
        ),
        _entry(
            "ip_not_allowed",
            403,
            "Request IP not on the key\u2019s allowlist",
            "The key only accepts requests from listed IP addresses. Add the public address "
            "your Celery workers send from to the key's allowlist, or send from a host that "
            "is on it.",
        ),
        _entry(
            "invalid_request",
            400,
            "Request is malformed or unparseable",
            "The API could not read the request. Make sure it reaches the API as JSON with "
            "`Content-Type: application/json`; a proxy in MAILAPI['BASE_URL'] that alters the "
            "body is a common cause.",
        ),
        _entry(
            "validation_error",
            422,
            "One or more fields failed validation",
            "The failed send's details list each rejected field with its reason. Correct "
            "them, then re-queue with mailapi_retry.",
        ),
        _entry(
            "invalid_parameter",
            400,
            "A query parameter has an invalid value",
            "One query parameter holds a value the API rejects. Compare it with what the "
            "API's documentation allows for that parameter.",
        ),
        _entry(
            "missing_required_field",
            422,
            "A required field is absent",
            "The body lacks a field the API requires; the message names it. Supply it, then "
            "re-queue with mailapi_retry.",
        ),
        _entry(
            "resource_not_found",
            404,
            "The requested resource does not exist",
            "Nothing exists under that ID. Check the ID used in the request.",
        ),
        _entry(
            "resource_already_exists",
            409,
            "A resource with this identifier already exists",
            "The identifier is taken. Pick another one, or fetch the resource that exists and "
            "work with it.",
        ),
        _entry(
            "resource_conflict",
            409,
            "Operation conflicts with current resource state",
            "The resource's present state forbids this operation. Read its status first and "
            "repeat the operation only once the state allows it.",
        ),
        _entry(
            "rate_limit_exceeded",
            429,
            "Too many requests in the current window",
            "django-mailapi already waits for Retry-After and retries with backoff; if this "
            "recurs, set MAILAPI['RATE_LIMIT'] to your plan's requests per second.",
            RetryClass.RETRY_AFTER,
        ),
        _entry(
            "internal_error",
            500,
            "Unexpected server error",
            "A fault on the API's side. django-mailapi retries after a short delay; if it "
            "persists, contact the provider's support and quote the request_id of the failed "
            "send.",
            RetryClass.RETRY,
        ),
        _entry(
            "service_unavailable",
            503,
            "API is temporarily unavailable",
            "The API is down for now. django-mailapi retries with exponential backoff; the "
            "provider's status page tells you when it is back.",
            RetryClass.RETRY,
        ),
    ],
)
