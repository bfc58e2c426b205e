"""Signing and posting delivery events in tests, with the real svix library for Resend."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from typing import Any

from svix.webhooks import Webhook

#: A Svix secret, as Resend shows one (whsec_ and base64).
SECRET = "whsec_" + base64.b64encode(b"django-mailapi test secret, 32 b").decode()
#: A second one, as during a rotation.
OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret for the rotation!").decode()
#: Sendr and Emitlo key the HMAC with the secret's text.
HEX_SECRET = "whsec_sendr_and_emitlo_plain_text"
URL = "/mailapi/webhooks/{}/"


def body_of(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def svix_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    msg_id: str | None = None,
    at: dt.datetime | None = None,
    prefix: str = "svix-",
) -> dict[str, str]:
    """Headers the svix library makes for ``body``."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or dt.datetime.now(dt.timezone.utc)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        f"{prefix}id": msg_id,
        f"{prefix}timestamp": str(int(at.timestamp())),
        f"{prefix}signature": signature,
    }


def hex_signature(body: bytes, secret: str = HEX_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def resend_event(
    kind: str, email_id: str, to: list[str] | None = None, **data: Any
) -> dict[str, Any]:
    return {
        "type": f"email.{kind}",
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "data": {
            "email_id": email_id,
            "from": "Shop <shop@example.com>",
            "to": to or ["ann@example.org"],
            "subject": "Hi",
            **data,
        },
    }


def bounce(kind: str = "Permanent") -> dict[str, Any]:
    return {
        "type": kind,
        "subType": "General",
        "message": "The recipient's mail server permanently rejected the email.",
        "diagnosticCode": ["smtp; 550 5.1.1 user unknown"],
    }


def post(client: Any, provider: str, body: bytes, headers: dict[str, str]) -> Any:
    """POST through Django's test client with real header names."""
    return client.post(
        URL.format(provider), data=body, content_type="application/json", headers=headers
    )


def post_resend(client: Any, payload: Any, **sign: Any) -> Any:
    body = body_of(payload)
    return post(client, "resend", body, svix_headers(body, **sign))
