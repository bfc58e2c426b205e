"""The message the backend writes to the outbox and every provider reads.

``backend.serialize_message`` builds it from a Django ``EmailMessage``; it is stored as
JSON in ``OutboundEmail.payload`` and handed, as loaded from there, to a provider's
``validate``, ``build_request`` and friends. Every key but ``tags`` and ``metadata`` is
always present, and the
values are plain JSON (strings, lists, dicts, None), so what is read back from the
database is the same shape; code that reads ``payload`` casts it to ``Message``
where it hands it on.

This module sits at the bottom of the package: it imports nothing of ours.
"""

from __future__ import annotations

from typing import TypedDict


class Attachment(TypedDict):
    #: None for a MIME attachment without a filename (providers may make one up).
    filename: str | None
    #: The bytes, base64-encoded (ASCII).
    content: str
    content_type: str
    #: Set for an inline image the HTML refers to as ``cid:<content_id>``.
    content_id: str | None
    #: Length of the decoded bytes.
    size: int


# The functional syntax, because "from" is a keyword.
_Message = TypedDict(
    "_Message",
    {
        # Addresses as Django users write them: "Name <addr>" or "addr".
        "from": str,
        "to": list[str],
        "cc": list[str],
        "bcc": list[str],
        "reply_to": list[str],
        "subject": str,
        # At least one of text and html is a string; the other may be None.
        "text": str | None,
        "html": str | None,
        # Custom headers, without the ones carried in their own field (To, From, ...).
        "headers": dict[str, str],
        "attachments": list[Attachment],
    },
)


class Message(_Message, total=False):
    """The message; the keys below are present only when the sender set them."""

    #: ``message.tags``: labels for the provider's dashboard and webhooks.
    tags: list[str]
    #: ``message.metadata``: string keys and values that link the email to your data.
    metadata: dict[str, str]


def payload_bytes(message: Message) -> int:
    """About how many bytes the message takes in memory and on the wire: its bodies and
    its attachments as base64. What a worker's task is bounded by."""
    size = len(message.get("html") or "") + len(message.get("text") or "")
    return size + sum(len(attachment["content"]) for attachment in message["attachments"])
