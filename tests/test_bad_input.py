"""Whatever goes into an EmailMessage ends in a valid payload or a coded local error.

Property-based: hypothesis builds messages with odd addresses, CR/LF and NUL in header
values, non-ASCII everywhere, empty and large bodies and odd attachments. Nothing may
raise anything but our InvalidMessage (with a code from the "mailapi" catalog), and
with fail_silently every message still ends in a row someone can see.
"""

from __future__ import annotations

import json

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_mailapi.backend import EmailBackend, serialize_message
from django_mailapi.errors import CATALOGS
from django_mailapi.exceptions import InvalidMessage, SendError
from django_mailapi.models import FailedSend, OutboundEmail, Status
from django_mailapi.providers.resend import ResendProvider
from tests.helpers import assert_resend_valid

LOCAL_CODES = {entry.code for entry in CATALOGS["mailapi"]}

tricky_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", " ", "a\r\nBcc: x@example.com", "tab\there", "nul\x00", "ünï ✓ 漢字"]),
)
address = st.one_of(
    st.emails(),
    st.builds(lambda n, e: f"{n} <{e}>", st.text(max_size=20), st.emails()),
    tricky_text,
)
header_name = st.one_of(
    st.sampled_from(["X-Tag", "List-Unsubscribe", "X-Ünicode", "Bad Name", "X:Colon", ""]),
    st.text(max_size=15),
)
mimetype = st.one_of(
    st.sampled_from(["application/pdf", "text/plain", "image/png"]),
    st.builds(lambda a, b: f"{a}/{b}", tricky_text, tricky_text),
)
# Django's own attach() insists on a type with a "/" and, without a filename, on a type.
attachment = st.one_of(
    st.tuples(tricky_text, st.binary(max_size=2000), st.one_of(st.none(), mimetype)),
    st.tuples(st.none(), st.one_of(st.binary(max_size=2000), st.text(max_size=200)), mimetype),
)


@st.composite
def messages(draw: st.DrawFn) -> EmailMessage:
    msg = EmailMultiAlternatives(
        subject=draw(tricky_text),
        body=draw(st.one_of(st.text(max_size=500), st.just("x" * 200_000))),
        from_email=draw(address),
        to=draw(st.lists(address, max_size=4)),
        cc=draw(st.lists(address, max_size=2)),
        bcc=draw(st.lists(address, max_size=2)),
        reply_to=draw(st.lists(address, max_size=2)),
        headers=draw(st.dictionaries(header_name, tricky_text, max_size=3)),
    )
    for item in draw(st.lists(attachment, max_size=3)):
        msg.attach(*item)
    if draw(st.booleans()):
        msg.attach_alternative(draw(st.text(max_size=200)), "text/html")
    return msg


PROVIDER = ResendProvider(api_key="re_x", base_url="http://127.0.0.1:9")


@given(messages())
@settings(max_examples=200, deadline=None)
def test_any_message_becomes_a_valid_payload_or_a_coded_error(msg):
    try:
        payload = serialize_message(msg, "resend")
    except InvalidMessage as exc:
        assert exc.code in LOCAL_CODES
        assert exc.message
        return
    assert json.loads(json.dumps(payload)) == payload
    if not (payload["to"] or payload["cc"] or payload["bcc"]):
        return
    try:
        PROVIDER.validate(payload)
    except SendError as exc:
        assert exc.local and exc.code in LOCAL_CODES
        return
    assert payload["to"]  # Resend needs one: cc or bcc alone is refused by validate
    assert_resend_valid(PROVIDER.build_request(payload, "key").json)
    for value in [payload["subject"], *payload["headers"].values(), *payload["headers"]]:
        assert "\r" not in value and "\n" not in value


@pytest.mark.django_db
@given(st.lists(messages(), min_size=1, max_size=3))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_fail_silently_never_raises_and_never_drops(msgs):
    before = OutboundEmail.objects.count()
    accepted = EmailBackend(fail_silently=True).send_messages(msgs)

    rows = OutboundEmail.objects.order_by("pk")[before:]
    assert len(rows) == len(msgs)
    assert accepted == sum(r.status == Status.QUEUED for r in rows)
    for row in rows:
        if row.status == Status.FAILED:
            assert row.last_error_code in LOCAL_CODES
            assert FailedSend.objects.filter(email=row, error_code=row.last_error_code).exists()


def test_a_body_over_resends_limit_is_refused_before_any_request():
    msg = EmailMessage("s", "x", "a@example.com", ["b@example.com"])
    msg.attach("big.bin", b"\0" * (31 * 1024 * 1024), "application/octet-stream")
    payload = serialize_message(msg, "resend")
    with pytest.raises(SendError) as info:
        PROVIDER.validate(payload)
    assert info.value.code == "message_too_large"


def _valid_the_long_way(text: str) -> bool:
    """What the backend decided for every address before its bare-address shortcut."""
    from email.utils import parseaddr

    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    try:
        validate_email(parseaddr(text)[1])
    except ValidationError:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet='abcXYZ09._%+-@<>"(), \\é', min_size=1, max_size=24) | st.emails().map(str))
def test_bare_address_shortcut_decides_as_parseaddr_would(text: str) -> None:
    from django_mailapi import backend

    assert backend._is_valid_address.__wrapped__(text) == _valid_the_long_way(text)
    if backend._BARE_ADDRESS.match(text):
        from email.utils import parseaddr

        assert parseaddr(text) == ("", text)


def test_bare_address_shortcut_covers_everyday_addresses() -> None:
    from django_mailapi import backend

    for text in ["ann@example.org", "ann.lee+news@mail.example.co.uk", "a_b-c%d@x-y.io"]:
        assert backend._BARE_ADDRESS.match(text), text
    for text in ["Ann <ann@example.org>", "ann@@example.org", ".ann@example.org", "é@x.org"]:
        assert not backend._BARE_ADDRESS.match(text), text
