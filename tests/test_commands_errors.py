"""mailapi_failed, mailapi_retry and mailapi_errors: exact output, filters, errors."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from django_mailapi import errors
from django_mailapi.management.output import Column, clip, render_table
from django_mailapi.models import OutboundEmail, Status
from tests.factories import fail, make_email
from tests.helpers import ROOT

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def run(*args: str, stdout: io.StringIO | None = None) -> tuple[str, str]:
    out, err = stdout or io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def failures(db):
    """Three failed sends at fixed times and ids, in two orgs."""
    bad_from = make_email(
        id=900001, to="ann@example.org, bob@example.org", subject="Receipt", created_at=T0
    )
    fail(bad_from, "invalid_from_address", 422, pk=800001, created_at=T0)
    quota = make_email(
        id=900002, org="globex", status=Status.DEFERRED, subject="Digest", created_at=T0
    )
    fail(quota, "daily_quota_exceeded", None, pk=800002, created_at=T0 + dt.timedelta(days=1))
    flaky = make_email(id=900003, status=Status.SENT, subject="Hello", to="cy@example.org")
    fail(flaky, "application_error", 500, pk=800003, will_retry=True, created_at=T0)
    return bad_from, quota, flaky


# --- output helpers ------------------------------------------------------------------
def test_tables_pad_columns_and_cut_long_values_with_an_ellipsis():
    columns = [Column("a", "A"), Column("b", "LONG HEADER", 6), Column("c", "C")]
    rows = [{"a": 1, "b": "short", "c": None}, {"a": 22, "b": "much too long", "c": True}]

    assert render_table(columns, rows) == (
        "A   LONG HEADER  C\n--  -----------  ---\n1   short        -\n22  much …       yes"
    )


# --- mailapi_failed ------------------------------------------------------------------
def test_failed_prints_a_table_newest_first(failures):
    out, err = run("mailapi_failed")

    action_quota = clip(errors.suggested_action("mailapi", "daily_quota_exceeded", None), 70)
    action_from = clip(errors.suggested_action("resend", "invalid_from_address", 422), 70)
    action_500 = clip(errors.suggested_action("resend", "application_error", 500), 70)
    assert out == (
        "ID      CREATED (UTC)        ORG     CODE                  HTTP   RETRY  EMAIL    "
        "TO                              SUGGESTED ACTION\n"
        "------  -------------------  ------  --------------------  -----  -----  -------  "
        "------------------------------  " + "-" * 70 + "\n"
        "800002  2025-03-02 12:00:00  globex  daily_quota_exceeded  local  no     #900002  "
        f"ann@example.org                 {action_quota}\n"
        "800003  2025-03-01 12:00:00  acme    application_error     500    yes    #900003  "
        f"cy@example.org                  {action_500}\n"
        "800001  2025-03-01 12:00:00  acme    invalid_from_address  422    no     #900001  "
        f"ann@example.org, bob@example.…  {action_from}\n"
    )
    assert err == ""


def test_failed_json_has_the_documented_keys_and_full_values(failures):
    out, _ = run("mailapi_failed", "--format", "json", "--code", "invalid_from_address")

    rows = json.loads(out)
    assert rows == [
        {
            "id": 800001,
            "email_id": 900001,
            "org": "acme",
            "provider": "resend",
            "error_code": "invalid_from_address",
            "http_status": 422,
            "message": errors.resolve("resend", "invalid_from_address", 422).message,
            "suggested_action": errors.suggested_action("resend", "invalid_from_address", 422),
            "will_retry": False,
            "recipients": "ann@example.org, bob@example.org",
            "subject": "Receipt",
            "created_at": "2025-03-01T12:00:00+00:00",
        }
    ]
    assert list(rows[0]) == [
        "id",
        "email_id",
        "org",
        "provider",
        "error_code",
        "http_status",
        "message",
        "suggested_action",
        "will_retry",
        "recipients",
        "subject",
        "created_at",
    ]


@pytest.mark.parametrize(
    ("options", "ids"),
    [
        ([], [800002, 800003, 800001]),
        (["--org", "globex"], [800002]),
        (["--code", "application_error"], [800003]),
        (["--status", "sent"], [800003]),
        (["--status", "failed"], [800001]),
        (["--since", "2025-03-02"], [800002]),
        (["--limit", "2"], [800002, 800003]),
        (["--org", "acme", "--status", "deferred"], []),
    ],
)
def test_failed_filters_combine(failures, options, ids):
    out, _ = run("mailapi_failed", "--format", "json", *options)

    assert [row["id"] for row in json.loads(out)] == ids


def test_failed_says_so_when_nothing_matches(db):
    assert run("mailapi_failed") == ("No failed sends match.\n", "")
    assert run("mailapi_failed", "--format", "json") == ("[]\n", "")


# --- mailapi_errors ------------------------------------------------------------------
def test_errors_json_lists_every_catalog_entry_with_the_documented_keys():
    out, _ = run("mailapi_errors", "--format", "json")

    rows = json.loads(out)
    assert len(rows) == len(errors.all_entries())
    assert all(
        list(row) == ["provider", "code", "http_status", "message", "suggested_action", "retry"]
        for row in rows
    )
    assert {row["provider"] for row in rows} == set(errors.CATALOGS)
    assert {
        "provider": "resend",
        "code": "rate_limit_exceeded",
        "http_status": 429,
        "message": errors.resolve("resend", "rate_limit_exceeded", 429).message,
        "suggested_action": errors.suggested_action("resend", "rate_limit_exceeded", 429),
        "retry": "retry_after",
    } in rows


def test_errors_table_for_one_provider():
    out, _ = run("mailapi_errors", "--provider", "mailapi")

    entries = list(errors.CATALOGS["mailapi"])
    width = max(len(e.code) for e in entries)
    retry_width = max(len("RETRY"), *(len(e.retry.value) for e in entries))
    lines = out.splitlines()
    assert lines[0] == (
        f"PROVIDER  {'CODE'.ljust(width)}  HTTP   {'RETRY'.ljust(retry_width)}  SUGGESTED ACTION"
    )
    assert len(lines) == 2 + len(entries)
    for line, entry in zip(lines[2:], entries, strict=True):
        assert line == (
            f"mailapi   {entry.code.ljust(width)}  local  {entry.retry.value.ljust(retry_width)}  "
            f"{clip(entry.action, 80)}"
        )


def test_errors_for_one_provider_only_lists_that_catalog():
    out, _ = run("mailapi_errors", "--provider", "sendr", "--format", "json")

    rows = json.loads(out)
    assert len(rows) == len(errors.CATALOGS["sendr"])
    assert {row["provider"] for row in rows} == {"sendr"}


# --- mailapi_retry -------------------------------------------------------------------
@pytest.fixture
def retryable(db):
    return {
        "failed_acme": make_email(
            id=900011, status=Status.FAILED, last_error_code="security_error"
        ),
        "deferred_globex": make_email(
            id=900012, org="globex", status=Status.DEFERRED, last_error_code="daily_quota_exceeded"
        ),
        "sent": make_email(id=900013, status=Status.SENT),
        "no_payload": make_email(id=900014, status=Status.FAILED, payload=None),
    }


def statuses() -> dict[int, str]:
    return dict(OutboundEmail.objects.values_list("pk", "status"))


def test_retry_refuses_to_run_without_a_selector(retryable):
    before = statuses()
    with pytest.raises(CommandError, match="Say which emails to retry"):
        run("mailapi_retry")
    assert statuses() == before


def test_retry_all_failed_requeues_failed_and_deferred_emails(retryable):
    out, err = run("mailapi_retry", "--all-failed")

    assert out == "Re-queued 2 emails.\n"
    assert err == ""
    assert statuses() == {
        900011: Status.QUEUED,
        900012: Status.QUEUED,
        900013: Status.SENT,
        900014: Status.FAILED,
    }
    assert OutboundEmail.objects.get(pk=900011).attempts == 0


@pytest.mark.parametrize(
    ("options", "requeued"),
    [
        (["--org", "globex"], [900012]),
        (["--code", "security_error"], [900011]),
        (["900011"], [900011]),
        (["--org", "acme", "--code", "daily_quota_exceeded"], []),
    ],
)
def test_retry_selectors_narrow_the_selection(retryable, options, requeued):
    run("mailapi_retry", *options)

    assert sorted(pk for pk, s in statuses().items() if s == Status.QUEUED) == requeued


def test_retry_by_id_explains_emails_it_cannot_retry(retryable):
    out, err = run("mailapi_retry", "900011", "900013", "900014", "999999")

    assert out == "Re-queued 1 email.\n"
    assert err == (
        "Skipped email #900013: it is sent, not failed or deferred.\n"
        "Skipped email #900014: its message is no longer stored.\n"
        "Skipped email #999999: no such email.\n"
    )


def test_retry_dry_run_lists_what_would_be_requeued_and_changes_nothing(retryable):
    before = statuses()

    out, _ = run("mailapi_retry", "--all-failed", "--dry-run")

    assert out == (
        "Would re-queue 2 emails (dry run, nothing changed).\n"
        "ID      STATUS    ORG     LAST ERROR            TO               SUBJECT\n"
        "------  --------  ------  --------------------  ---------------  -------\n"
        "900011  failed    acme    security_error        ann@example.org  Invoice\n"
        "900012  deferred  globex  daily_quota_exceeded  ann@example.org  Invoice\n"
    )
    assert statuses() == before


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_retry_draws_a_progress_bar_on_stderr_only_for_a_terminal(retryable):
    out, err = run("mailapi_retry", "--all-failed", stdout=Terminal())

    assert out == "Re-queued 2 emails.\n"
    assert err == "\r[" + " " * 30 + "] 0/2\r[" + "#" * 30 + "] 2/2\n"


def test_retry_draws_no_progress_bar_when_piped(retryable):
    _, err = run("mailapi_retry", "--org", "acme")

    assert err == ""


# --- bad arguments -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mailapi_failed", "--since", "2025-13-01"], "--since must be a date written YYYY-MM-DD"),
        (["mailapi_failed", "--since", "yesterday"], "--since must be a date written YYYY-MM-DD"),
        (["mailapi_failed", "--limit", "0"], "--limit must be a whole number of 1 or more"),
        (["mailapi_failed", "--limit", "ten"], "--limit must be a whole number of 1 or more"),
        (["mailapi_failed", "--status", "lost"], "Unknown --status 'lost': use one of queued,"),
        (["mailapi_failed", "--format", "xml"], "Unknown format 'xml': use one of table, json"),
        (["mailapi_errors", "--provider", "mailgun"], "Unknown provider 'mailgun': use one of"),
        (["mailapi_errors", "--format", "yaml"], "Unknown format 'yaml'"),
        (["mailapi_retry", "abc"], "An email ID must be a whole number of 1 or more"),
    ],
)
def test_bad_arguments_raise_a_clear_command_error(db, args, message):
    with pytest.raises(CommandError) as raised:
        run(*args)
    assert message in str(raised.value)


def test_a_bad_argument_exits_with_status_1_and_says_why_on_stderr():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "django", "mailapi_errors", "--provider", "mailgun"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "CommandError: Unknown provider 'mailgun': use one of "
        "resend, sendr, generic, emitlo, mailapi.\n"
    )
