"""The provider base class tells whoever writes a provider which hook is missing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from django_mailapi.message import Message
from django_mailapi.providers.base import ApiResponse, Provider


class HalfWrittenProvider(Provider):
    """A subclass that sets its class attributes and writes none of the hooks."""

    name = "half-written"
    default_base_url = "https://api.example.invalid"
    max_batch = 10


MESSAGE: Message = {
    "from": "Sender <from@example.com>",
    "to": ["to@example.com"],
    "cc": [],
    "bcc": [],
    "reply_to": [],
    "subject": "Hello",
    "text": "Hi",
    "html": None,
    "headers": {},
    "attachments": [],
}

OK = ApiResponse(200, {}, b'{"id": "1"}')


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("build_request", lambda p: p.build_request(MESSAGE, "key")),
        ("build_request", lambda p: p.send(MESSAGE, "key")),
        ("parse_success", lambda p: p.parse_success(OK)),
        ("build_batch_request", lambda p: p.build_batch_request([MESSAGE], "key")),
    ],
)
def test_missing_hook_raises_naming_the_subclass_and_the_method(
    method: str, call: Callable[[Provider], Any]
) -> None:
    provider = HalfWrittenProvider(api_key="k")

    with pytest.raises(NotImplementedError) as raised:
        call(provider)

    message = str(raised.value)
    assert message.startswith(f"HalfWrittenProvider must implement {method}()")
    assert message.endswith("(see django_mailapi.providers.base.Provider)")


def test_missing_batch_hook_says_why_it_is_needed() -> None:
    with pytest.raises(NotImplementedError) as raised:
        HalfWrittenProvider(api_key="k").build_batch_request([MESSAGE], "key")

    assert str(raised.value) == (
        "HalfWrittenProvider must implement build_batch_request() to send batches "
        "(max_batch = 10) (see django_mailapi.providers.base.Provider)"
    )


def test_parse_error_has_a_default_so_a_subclass_need_not_write_it() -> None:
    error = HalfWrittenProvider(api_key="k").parse_error(ApiResponse(502, {}, b"Bad gateway"))

    assert (error.code, error.http_status, str(error)) == (
        "http_502",
        502,
        "Bad gateway [http_502]",
    )
