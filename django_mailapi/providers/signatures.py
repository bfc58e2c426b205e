"""The webhook signature schemes the built-in providers use, for any provider to reuse.

Both verify the raw body before anything parses it, compare in constant time
(``hmac.compare_digest``) and try every configured secret, since ``WEBHOOK_SECRET`` may
hold the secrets of several provider accounts or an old and a new one during rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from ..exceptions import WebhookSignatureError
from .base import WebhookRequest

#: Resend's (Svix's) header names; the Standard Webhooks names are accepted too.
SVIX_PREFIXES = ("svix-", "webhook-")
#: More signatures than this in one header is not a rotation but an attempt to make us
#: compute HMACs for nothing; the rest are ignored.
MAX_SIGNATURES = 16


def svix_key(secret: str) -> bytes | None:
    """The HMAC key of a Svix secret (``whsec_<base64>``), or None if it is not one."""
    encoded = secret.strip()
    if encoded.startswith("whsec_"):
        encoded = encoded[len("whsec_") :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def verify_svix(
    request: WebhookRequest,
    secrets: Sequence[str],
    tolerance: float,
    prefixes: Sequence[str] = SVIX_PREFIXES,
) -> str:
    """Verify a Svix / Standard Webhooks signature; return the message id.

    The signed content is ``{id}.{timestamp}.{body}``, the signature header a
    space-separated list of ``v1,<base64 HMAC-SHA256>`` (several during a rotation).
    The timestamp (Unix seconds) must be within ``tolerance`` of the arrival time.
    """
    message_id = request.header(*(prefix + "id" for prefix in prefixes))
    stamp = request.header(*(prefix + "timestamp" for prefix in prefixes))
    header = request.header(*(prefix + "signature" for prefix in prefixes))
    if not (message_id and stamp and header):
        raise WebhookSignatureError("The id, timestamp or signature header is missing.")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise WebhookSignatureError("The signed timestamp is not a Unix time.")
    age = request.received_at - int(stamp)
    if age > tolerance:
        raise WebhookSignatureError(f"The signed timestamp is {age:.0f} s old.")
    if -age > tolerance:
        raise WebhookSignatureError(f"The signed timestamp is {-age:.0f} s in the future.")
    given: list[bytes] = []
    for entry in header.split()[:MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            given.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not given:
        raise WebhookSignatureError("The signature header has no v1 signature.")
    signed = f"{message_id}.{stamp}.".encode() + request.body
    for secret in secrets:
        key = svix_key(secret)
        if key is None:
            continue
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        # Every candidate is compared, found or not, so the time taken does not say which.
        found = False
        for signature in given:
            found |= hmac.compare_digest(expected, signature)
        if found:
            return message_id
    raise WebhookSignatureError("No configured secret verifies the signature.")


def verify_hex_hmac(
    request: WebhookRequest, header_name: str, secrets: Sequence[str], prefix: str = "sha256="
) -> None:
    """Verify a hex HMAC-SHA256 of the raw body (keyed with the secret's UTF-8 bytes),
    sent in ``header_name`` with or without ``prefix``."""
    value = request.header(header_name)
    if value.lower().startswith(prefix):
        value = value[len(prefix) :]
    if not value:
        raise WebhookSignatureError(f"The {header_name} header is missing.")
    given = value.strip().lower().encode("ascii", "replace")
    for secret in secrets:
        expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(expected, given):
            return
    raise WebhookSignatureError("No configured secret verifies the signature.")
