"""Table test of the delivery status rule: per recipient never backwards, worst across."""

from __future__ import annotations

import itertools

import pytest

from django_mailapi.events import delivery_status, failure_code

A, B = "ann@example.org", "bo@example.org"


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], ""),
        ([("sent", A), ("opened", A), ("clicked", A)], ""),
        ([("delivered", A)], "delivered"),
        ([("delivery_delayed", A), ("delivered", A)], "delivered"),
        ([("delivered", A), ("delivery_delayed", A)], "delivered"),
        ([("delivered", A), ("bounced", A)], "bounced"),
        ([("bounced", A), ("delivered", A)], "bounced"),
        ([("delivered", A), ("complained", A)], "complained"),
        ([("complained", A), ("bounced", A)], "complained"),
        ([("failed", A), ("suppressed", A)], "failed"),
        ([("suppressed", A), ("delivered", A)], "suppressed"),
        ([("delivered", A), ("delivery_delayed", B)], "delivery_delayed"),
        ([("delivered", A), ("delivery_delayed", B), ("delivered", B)], "delivered"),
        ([("delivered", A), ("bounced", B)], "bounced"),
        ([("delivered", f"{A}, {B}"), ("bounced", B)], "bounced"),
        ([("delivered", "Ann <ANN@example.org>"), ("delivery_delayed", A)], "delivered"),
        ([("delivery_delayed", ""), ("delivered", A)], "delivered"),
        ([("delivered", "")], "delivered"),
    ],
)
def test_delivery_status(events, expected):
    assert delivery_status(events) == expected


@pytest.mark.parametrize(
    "events",
    [
        [("delivery_delayed", A), ("delivered", A), ("bounced", B), ("complained", A)],
        [("delivered", A), ("delivered", B), ("delivery_delayed", B), ("failed", B)],
    ],
)
def test_arrival_order_does_not_matter(events):
    results = {delivery_status(order) for order in itertools.permutations(events)}
    assert len(results) == 1


@pytest.mark.parametrize(
    ("kind", "details", "code"),
    [
        ("bounced", {"bounce_type": "hard"}, "hard_bounce"),
        ("bounced", {"bounce_type": "soft"}, "soft_bounce"),
        ("bounced", {"bounce_type": "undetermined"}, "soft_bounce"),
        ("bounced", {}, "soft_bounce"),
        ("complained", {}, "complaint"),
        ("failed", {}, "delivery_failed"),
        ("suppressed", {}, "suppressed"),
        ("delivered", {}, None),
        ("delivery_delayed", {}, None),
        ("opened", {}, None),
    ],
)
def test_failure_codes(kind, details, code):
    assert failure_code(kind, details) == code
