"""Emitlo's documented errors (https://emitlo-docs.pages.dev/reference/errors/).

The codes are upper case, exactly as Emitlo sends them. Messages are the page's
example messages; ``INTERNAL_ERROR`` has no example, so its description stands in.
The actions are ours.
"""

from __future__ import annotations

from .base import Catalog, Entries, RetryClass

PROVIDER = "emitlo"
DOCS_URL = "https://emitlo-docs.pages.dev/reference/errors/"


_entry = Entries(PROVIDER, DOCS_URL)


CATALOG = Catalog(
    PROVIDER,
    [
        _entry(
            "UNAUTHENTICATED",
            401,
            "Invalid or missing credential.",
            "Emitlo did not accept the credential. Check that MAILAPI['API_KEY'] is sent as "
            "`Authorization: Bearer <key>` and that the credential is still active, not "
            "revoked, in Emitlo.",
        ),
        _entry(
            "FORBIDDEN",
            403,
            "This credential does not have the 'send' permission.",
            "The credential lacks a permission this action needs (sending needs `send`). "
            "Grant it to the credential, or create a credential that has it.",
        ),
        _entry(
            "NOT_FOUND",
            404,
            "Message not found.",
            "No resource exists under that ID (for example a message ID). Check the ID.",
        ),
        _entry(
            "CONFLICT",
            409,
            "This domain is already registered.",
            "The resource exists already, for example a domain added before. Use the one "
            "that exists rather than creating it again.",
        ),
        _entry(
            "VALIDATION_ERROR",
            422,
            "The given data was invalid.",
            "The failed send's details map each rejected field to its problems (for example "
            "from_email missing, or a subject over 998 characters). Correct them, then "
            "re-queue with mailapi_retry.",
        ),
        _entry(
            "RATE_LIMITED",
            429,
            "Rate limit exceeded. Retry after 60 seconds.",
            "The organization passed its send rate (Emitlo counts per minute, hour and day). "
            "django-mailapi already waits for Retry-After and retries with backoff; if this "
            "recurs, set MAILAPI['RATE_LIMIT'] to your plan's requests per second.",
            RetryClass.RETRY_AFTER,
        ),
        _entry(
            "ATTACHMENT_TOO_LARGE",
            422,
            'Attachment "report.pdf" exceeds the maximum size of 10 MB.',
            "One attachment is bigger than the plan allows. Compress it, send a link to the "
            "file instead, or move to a plan with a higher limit.",
        ),
        _entry(
            "MESSAGE_TOO_LARGE",
            422,
            "Total message size exceeds the maximum of 25 MB.",
            "Body and attachments together are over Emitlo's limit. Shrink the body, drop or "
            "compress attachments, or link to large files instead.",
        ),
        _entry(
            "INTERNAL_ERROR",
            500,
            "An unexpected server error occurred.",
            "A rare, usually passing fault at Emitlo. django-mailapi retries with exponential "
            "backoff; if the error stays, contact Emitlo support.",
            RetryClass.RETRY,
        ),
    ],
)
