"""The worker's one-statement writes (django_mailapi/sql.py) on the test database."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from django_mailapi import sql
from django_mailapi.models import OutboundEmail, Status
from tests.factories import make_email, payload

pytestmark = pytest.mark.django_db

AWKWARD = 'tab\there, line\nbreak, back\\slash, "quotes", \\N, é ✓ 🚀'


def new_rows(n: int, **extra: object) -> list[OutboundEmail]:
    now = timezone.now()
    return [
        OutboundEmail(
            org="acme",
            provider="resend",
            idempotency_key=f"mailapi/acme/sql-{i}",
            payload=payload(to=f"u{i}@example.com", subject=AWKWARD, text=AWKWARD),
            recipients=f"u{i}@example.com",
            recipient_count=1,
            subject=AWKWARD,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
            **extra,
        )
        for i in range(n)
    ]


def test_the_test_database_takes_the_one_statement_forms():
    # MySQL and MariaDB have no UPDATE … RETURNING (nor UPDATE … FROM a VALUES list):
    # there the same results come from the ORM (update_each's other path).
    assert sql.native(OutboundEmail) == (connection.vendor in ("postgresql", "sqlite"))


def test_insert_sets_keys_and_stores_every_value_as_written():
    rows = new_rows(3)
    sql.insert(OutboundEmail, rows, key="idempotency_key")

    assert all(row.pk for row in rows)
    assert not any(row._state.adding for row in rows)
    for row in rows:
        stored = OutboundEmail.objects.get(pk=row.pk)
        assert stored.payload == row.payload
        assert stored.payload["subject"] == AWKWARD
        assert stored.subject == AWKWARD
        assert stored.idempotency_key == row.idempotency_key
        assert stored.next_attempt_at == row.next_attempt_at
        assert stored.leased_until is None
        assert stored.quota_day is None
        assert stored.status == Status.QUEUED
        assert stored.batch_key == ""


def test_insert_draws_keys_the_orm_can_continue_from():
    rows = new_rows(2)
    sql.insert(OutboundEmail, rows, key="idempotency_key")
    later = make_email(status=Status.QUEUED)
    assert later.pk > max(row.pk for row in rows)


def test_insert_of_nothing_is_no_statement(django_assert_num_queries):
    with django_assert_num_queries(0):
        sql.insert(OutboundEmail, [], key="idempotency_key")


def test_bulk_insert_reads_the_keys_back_where_the_database_returns_none(monkeypatch):
    # MySQL 8 returns no keys from a multi-row INSERT (MariaDB 10.5+ does, with
    # RETURNING): bulk_create leaves pk at None there. Simulated here on any database.
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)
    monkeypatch.setattr(sql, "CHUNK", 2)  # the read-back in two queries for three rows
    rows = new_rows(3)
    sql.bulk_insert(OutboundEmail, rows, key="idempotency_key", using="default")

    stored = dict(OutboundEmail.objects.values_list("idempotency_key", "pk"))
    assert {row.idempotency_key: row.pk for row in rows} == stored
    assert all(row.pk for row in rows)
    assert not any(row._state.adding for row in rows)


NAMED = ("org", "provider", "idempotency_key", "payload", "recipients", "subject", "tags")


def test_insert_rows_stores_the_values_given_and_every_other_fields_default():
    """The backend's path: values, no instances, and defaults for what it leaves out."""
    values = [
        ("acme", "resend", f"mailapi/acme/rows-{i}", payload(subject=AWKWARD), f"u{i}@x.test",
         AWKWARD, [{"name": "kind", "value": str(i)}])
        for i in range(3)
    ]  # fmt: skip

    keys = sql.insert_rows(OutboundEmail, NAMED, values, key="idempotency_key")

    rows = list(OutboundEmail.objects.order_by("pk"))
    assert [row.pk for row in rows] == keys
    for row, given in zip(rows, values, strict=True):
        assert tuple(getattr(row, name) for name in NAMED) == given
        assert (row.status, row.attempts, row.metadata, row.delivery_status) == (
            Status.QUEUED, 0, {}, ""
        )  # fmt: skip
    assert sql.insert_rows(OutboundEmail, NAMED, [], key="idempotency_key") == []
    with pytest.raises(ValueError, match="no field sujbect"):
        sql.insert_rows(OutboundEmail, ("org", "sujbect"), [("acme", "x")], key="org")
    # The ORM's next key follows on.
    assert make_email().pk > keys[-1]


def test_update_each_sets_one_value_per_row_and_shared_values_on_all(monkeypatch):
    monkeypatch.setattr(sql, "CHUNK", 2)  # three statements for five rows
    rows = new_rows(5)
    sql.insert(OutboundEmail, rows, key="idempotency_key")
    now = timezone.now()
    day = dt.date(2026, 11, 22)
    ids = {
        row.pk: (f"id-{row.pk}-{AWKWARD}", i + 1, day if i % 2 else None)
        for i, row in enumerate(rows[:4])
    }

    changed = sql.update_each(
        OutboundEmail,
        ["provider_message_id", "quota_units", "quota_day"],
        ids,
        {"status": Status.SENT, "sent_at": now, "leased_until": None, "payload": None},
    )

    assert sorted(changed) == sorted(ids)
    for row in OutboundEmail.objects.filter(pk__in=ids):
        assert (row.provider_message_id, row.quota_units, row.quota_day) == ids[row.pk]
        assert (row.status, row.sent_at, row.payload) == (Status.SENT, now, None)
    untouched = OutboundEmail.objects.get(pk=rows[4].pk)
    assert (untouched.status, untouched.provider_message_id) == (Status.QUEUED, "")
    assert sql.update_each(OutboundEmail, ["provider_message_id"], {}, {"status": "x"}) == []


def test_update_each_changes_only_rows_that_still_meet_the_fence():
    rows = new_rows(3)
    sql.insert(OutboundEmail, rows, key="idempotency_key")
    OutboundEmail.objects.filter(pk=rows[0].pk).update(lease_token="mine")
    OutboundEmail.objects.filter(pk=rows[1].pk).update(lease_token="theirs")

    changed = sql.update_fenced(
        OutboundEmail, [r.pk for r in rows], {"status": Status.SENT}, {"lease_token": "mine"}
    )

    assert changed == [rows[0].pk]
    statuses = dict(OutboundEmail.objects.values_list("pk", "status"))
    assert statuses == {
        rows[0].pk: Status.SENT,
        rows[1].pk: Status.QUEUED,
        rows[2].pk: Status.QUEUED,
    }


def test_update_returning_changes_only_matching_rows_and_returns_them(monkeypatch):
    if not sql.native(OutboundEmail):
        pytest.skip("UPDATE … RETURNING: PostgreSQL's and SQLite's, not MySQL's")
    monkeypatch.setattr(sql, "CHUNK", 2)
    rows = new_rows(5)
    sql.insert(OutboundEmail, rows, key="idempotency_key")
    OutboundEmail.objects.filter(pk=rows[1].pk).update(status=Status.SENT)
    later = timezone.now() + dt.timedelta(minutes=5)

    returned = sql.update_returning(
        OutboundEmail,
        [row.pk for row in reversed(rows)],
        "status = %s",
        [Status.QUEUED],
        {"lease_token": "t" * 32, "leased_until": later, "status": Status.SENDING},
        increment="attempts",
    )

    expected = [rows[i].pk for i in (0, 2, 3, 4)]
    assert [row.pk for row in returned] == expected  # ordered by key
    for row in returned:
        assert (row.status, row.lease_token, row.leased_until, row.attempts) == (
            Status.SENDING,
            "t" * 32,
            later,
            1,
        )
        assert row.payload["subject"] == AWKWARD  # every column, converted as the ORM does
    assert OutboundEmail.objects.get(pk=rows[1].pk).attempts == 0


def test_update_returning_refuses_a_database_without_it(monkeypatch):
    monkeypatch.setattr(sql, "_native", lambda using: False)
    assert not sql.native(OutboundEmail)
    with pytest.raises(NotImplementedError):
        sql.update_returning(OutboundEmail, [1], "TRUE", [], {"status": Status.SENDING})


def test_values_skip_field_preparation_only_where_it_would_change_nothing():
    field = OutboundEmail._meta.get_field
    prepared: list[object] = []

    def spy(name: str) -> Any:  # a saver for the field, its preparations recorded
        target = field(name)
        original = target.get_db_prep_save

        def prep(value: object, conn: object) -> object:
            prepared.append(value)
            return original(value, conn)

        target.get_db_prep_save = prep  # type: ignore[method-assign]
        try:
            return sql._saver(target, connection)
        finally:
            del target.get_db_prep_save

    subject, attempts, status, sent_at = (
        spy(n) for n in ("subject", "attempts", "status", "sent_at")
    )
    when = timezone.now()
    assert subject("plain") == "plain" and attempts(3) == 3 and subject(None) is None
    assert prepared == []  # a str for a TextField, an int for an IntegerField: as they are
    assert attempts(True) == 1  # a bool is not an int here: the field adapts it
    assert status(Status.SENT) == "sent"  # a str subclass: the field's own path
    # The driver gets what Django's own preparation gives: on PostgreSQL the datetime as
    # it is, elsewhere the backend's text for it (MySQL and SQLite take datetimes as text).
    assert sent_at(when) == connection.ops.adapt_datetimefield_value(when)
    if connection.vendor == "postgresql":
        # Django hands an aware datetime to the driver unchanged there, and None too.
        assert sent_at(None) is None
        assert prepared == [True, Status.SENT]
        naive = dt.datetime(2026, 12, 2, 9, 30)  # the case under test
        with pytest.warns(RuntimeWarning, match="naive datetime"):
            assert sent_at(naive) == timezone.make_aware(naive)
        assert prepared[-1] == naive  # the field's own path: warned, made aware
    else:
        assert prepared == [True, Status.SENT, when]
