"""Resend's documented errors (https://resend.com/docs/api-reference/errors).

Messages are the page's own, with its Markdown rendered to plain text (links become
their text, ``\\_`` becomes ``_``; backticks are kept, as the real API sends them).
Where the two snapshots of the page disagree, the fuller one wins. The entries marked
"newer page" exist only on the current live page; their messages are its wording.
The actions are ours.

Resend reuses ``validation_error`` at 403 for three different problems, so
``Catalog.get`` alone cannot tell them apart: use :func:`match`, which also reads the
API's message.
"""

from __future__ import annotations

from .base import Catalog, Entries, ErrorSpec, RetryClass

PROVIDER = "resend"
DOCS_URL = "https://resend.com/docs/api-reference/errors"
KNOWLEDGE_BASE = "https://resend.com/docs/knowledge-base/"

_RETRY = RetryClass.RETRY
_RETRY_AFTER = RetryClass.RETRY_AFTER


_entry = Entries(PROVIDER, DOCS_URL)


CATALOG = Catalog(
    PROVIDER,
    [
        _entry(
            "invalid_idempotency_key",
            400,
            "The key must be between 1-256 chars.",
            "The Idempotency-Key header was empty or longer than 256 characters. "
            "django-mailapi's own keys always fit, so look for a key set by your code; "
            "send again with a key of 1 to 256 characters, or with none.",
        ),
        _entry(
            "validation_error",
            400,
            "We found an error with one or more fields in the request.",
            "Read the API's message: it names the field Resend rejected and what is wrong "
            "with it. Correct that field in the email, then re-queue it with mailapi_retry.",
        ),
        # Not on the page: real field errors usually come back as 422 (resend-node#286).
        _entry(
            "validation_error",
            422,
            "We found an error with one or more fields in the request.",
            "Resend rejected a field (it answers 422 here although its page documents "
            "400). The API's message names the field and the problem, for example an "
            "address in `to` that is not a valid email address. Correct it, then re-queue "
            "the email with mailapi_retry.",
        ),
        _entry(
            "missing_api_key",
            401,
            "Missing API key in the authorization header.",
            "The request carried no `Authorization: Bearer <key>` header. Set "
            "MAILAPI['API_KEY'] (or make API_KEY_RESOLVER return a key for this org), "
            "restart the workers, then re-queue with mailapi_retry.",
        ),
        _entry(
            "restricted_api_key",
            401,
            "This API key is restricted to only send emails.",
            "This key has sending access only, and the call needs more. Use a key created "
            "with `Full access` for anything other than sending email.",
        ),
        # Newer page: the same name at 403 means the key is no longer active.
        _entry(
            "restricted_api_key",
            403,
            "API key is not active.",
            "The key is no longer active. Create a new key at resend.com/api-keys, put it in "
            "MAILAPI['API_KEY'], restart the workers and re-queue with mailapi_retry.",
        ),
        _entry(
            "invalid_api_key",
            403,
            "API key is invalid.",
            "Resend does not recognise the key. Check that MAILAPI['API_KEY'] holds the whole "
            "key, with nothing cut off or added; if in doubt, create a new one at "
            "resend.com/api-keys and use that.",
        ),
        _entry(
            "validation_error",
            403,
            "You can only send testing emails to your own email address "
            "(`youremail@domain.com`). To send emails to other recipients, please verify a "
            "domain at resend.com/domains, and change the `from` address to an email using "
            "this domain.",
            "Without a verified domain Resend only delivers to your own address. Verify a "
            "domain whose DNS you control on resend.com/domains and send from an address on "
            "it (DEFAULT_FROM_EMAIL or the email's from_email), then re-queue with "
            "mailapi_retry.",
            docs_url=KNOWLEDGE_BASE + "403-error-resend-dev-domain",
        ),
        _entry(
            "validation_error",
            403,
            "The `domain.com` domain is not verified. Please, add and verify your domain.",
            "The domain of the `from` address is not one you verified in Resend. Send from "
            "an address on a domain you did verify (check DEFAULT_FROM_EMAIL and any "
            "from_email in your code), or add and verify this domain on resend.com/domains; "
            "then re-queue with mailapi_retry.",
            docs_url=KNOWLEDGE_BASE + "403-error-domain-mismatch",
        ),
        _entry(
            "validation_error",
            403,
            "The `example.com` domain has been registered already.",
            "Another Resend account holds this domain. Check that you are logged in to the "
            "right account and ask your teammates whether one of them added it; if you still "
            "cannot get to it, ask Resend support at resend.com/help.",
            docs_url=KNOWLEDGE_BASE + "domain-already-registered",
        ),
        # Newer page.
        _entry(
            "suspended_api_key",
            403,
            "This API key is suspended.",
            "Resend has suspended this key. Ask Resend support why, and send with another "
            "active key (MAILAPI['API_KEY']) in the meantime.",
        ),
        # Newer page.
        _entry(
            "invalid_permission",
            403,
            "Access token is missing required scopes.",
            "The OAuth access token used for this call lacks a scope the endpoint needs. "
            "Issue a token that carries the required scopes.",
        ),
        # Newer page.
        _entry(
            "email_above_quota",
            403,
            "You can't retrieve this email's content.",
            "The content of a received email that arrived while the account was over its "
            "quota is not available. Sending is not affected; upgrade the plan if you need "
            "such emails.",
        ),
        _entry(
            "not_found",
            404,
            "The requested endpoint does not exist.",
            "The request went to a URL that is not a Resend endpoint. Check MAILAPI['BASE_URL']"
            " (leave it None to use https://api.resend.com).",
        ),
        _entry(
            "method_not_allowed",
            405,
            "Method is not allowed for the requested path.",
            "The endpoint does not take this HTTP method. Usually MAILAPI['BASE_URL'] points "
            "at the wrong place or a proxy rewrites the request; fix that so the documented "
            "method reaches the endpoint.",
        ),
        _entry(
            "invalid_idempotent_request",
            409,
            "Same idempotency key used with a different request payload.",
            "Within the last 24 hours this idempotency key went with a different payload. "
            "django-mailapi keeps one key per email, so the email changed after an earlier "
            "attempt, or two emails share a key. Send it as a new email (it gets a new key).",
        ),
        _entry(
            "concurrent_idempotent_requests",
            409,
            "Same idempotency key used while original request is still in progress.",
            "An earlier attempt with this idempotency key is still running at Resend. "
            "django-mailapi tries again later with the same key, and Resend then answers with "
            "the first attempt's result, so the email is not sent twice.",
            _RETRY,
        ),
        # Newer page.
        _entry(
            "resource_locked",
            409,
            "Another request is already updating this resource.",
            "Two requests touched the same resource at once. django-mailapi retries after a "
            "short backoff; nothing to do unless it keeps happening.",
            _RETRY,
        ),
        _entry(
            "invalid_attachment",
            422,
            "Attachment must have either a `content` or `path`.",
            "An attachment arrived with neither data nor a URL. Check the email's attachments "
            "(an empty file is the usual cause). Each needs its content, or a `path` to a "
            "hosted copy, which suits large files better.",
        ),
        _entry(
            "invalid_from_address",
            422,
            "Invalid `from` field.",
            "The sender must be written `user@example.com` or `Name <user@example.com>`. Fix "
            "DEFAULT_FROM_EMAIL or the email's from_email, then re-queue with mailapi_retry.",
        ),
        _entry(
            "invalid_access",
            422,
            'Access must be "full_access" | "sending_access".',
            "An API key's access can only be `full_access` or `sending_access`; give the key "
            "the level the calls you make with it require.",
        ),
        _entry(
            "invalid_parameter",
            422,
            "The `parameter` must be a valid UUID.",
            "A value in the request, usually an ID that has to be a UUID, is malformed. Look "
            "at the value the message names and correct it.",
        ),
        _entry(
            "invalid_region",
            422,
            'Region must be "us-east-1" | "eu-west-1" | "sa-east-1".',
            "Choose one of the regions Resend offers: us-east-1, eu-west-1 or sa-east-1.",
        ),
        _entry(
            "missing_required_field",
            422,
            "The request body is missing one or more required fields.",
            "The API's message lists the fields the body lacked (a send needs at least from, "
            "to and subject). Supply them, then re-queue with mailapi_retry.",
        ),
        # Newer page.
        _entry(
            "missing_required_parameter",
            422,
            "The request is missing one or more required parameters.",
            "A path or query parameter the endpoint requires was not sent; the API's message "
            "names it. Add it to the request.",
        ),
        _entry(
            "monthly_quota_exceeded",
            429,
            "You have reached your monthly email quota.",
            "The Resend account used up its monthly quota (received emails count as well as "
            "sent ones). django-mailapi defers the email to the first of next month, UTC. To "
            "send sooner, upgrade the plan at resend.com/settings/billing and run "
            "mailapi_retry.",
            RetryClass.DEFER_MONTH,
        ),
        _entry(
            "daily_quota_exceeded",
            429,
            "You have reached your daily email quota.",
            "The Resend account used up its daily quota (received emails count as well as "
            "sent ones). django-mailapi defers the email to the next UTC day; Resend counts a "
            "rolling 24 hours, so it may be deferred once more. To lift the daily cap, upgrade "
            "at resend.com/settings/billing.",
            RetryClass.DEFER_DAY,
        ),
        _entry(
            "rate_limit_exceeded",
            429,
            "Too many requests. Please limit the number of requests per second. Or contact "
            "support to increase rate limit.",
            "The team sent more requests per second than its limit, which all its API keys "
            "share. django-mailapi already waits for Retry-After and retries; if this recurs, "
            "set MAILAPI['RATE_LIMIT'] to your plan's requests per second. For a higher limit, "
            "ask Resend at resend.com/contact.",
            _RETRY_AFTER,
        ),
        _entry(
            "security_error",
            451,
            "We may have found a security issue with the request.",
            "Resend held the request back as a possible security problem. The API's message "
            "gives the reason; talk to Resend at resend.com/contact before sending it again.",
        ),
        _entry(
            "application_error",
            500,
            "An unexpected error occurred.",
            "Something failed on Resend's side. django-mailapi retries with backoff under the "
            "same idempotency key; if it lasts, look for an incident on resend-status.com.",
            _RETRY,
        ),
        _entry(
            "internal_server_error",
            500,
            "An unexpected error occurred.",
            "Resend had an internal error. django-mailapi retries with backoff under the same "
            "idempotency key; if the errors continue, check resend-status.com.",
            _RETRY,
        ),
        # Newer page; one source gives it as 500, the page as 503.
        _entry(
            "service_unavailable",
            503,
            "API is temporarily unavailable.",
            "The API is down for a moment. django-mailapi retries with backoff; if it lasts, "
            "look for an incident on resend-status.com.",
            _RETRY,
        ),
    ],
)


def match(code: str, http_status: int | None, message: str = "") -> ErrorSpec | None:
    """The documented entry for a Resend error, using the message where the code is shared.

    ``match("validation_error", 403, "The acme.io domain is not verified. ...")`` gives
    the domain-not-verified entry, not the first 403 ``validation_error``.
    """
    return CATALOG.match(code, http_status, message)
