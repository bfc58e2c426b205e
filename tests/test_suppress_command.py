"""manage.py mailapi_suppress add|remove|list|import: exact output, refusals, bulk import."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_mailapi.models import Suppression
from tests.helpers import ROOT, database_url

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*args: str, stdout: io.StringIO | None = None) -> tuple[str, str]:
    out, err = stdout or io.StringIO(), io.StringIO()
    call_command("mailapi_suppress", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def rows() -> list[tuple[str | None, str, str, str]]:
    return list(
        Suppression.objects.order_by("address", "org").values_list(
            "org", "address", "reason", "note"
        )
    )


@pytest.fixture
def listed():
    """Four rows at fixed times: two for every org, two for orgs."""
    for org, address, reason, note in [
        (None, "gone@example.org", "hard_bounce", "resend email.bounced event"),
        ("acme", "ann@example.org", "complaint", ""),
        ("globex", "ann@example.org", "unsubscribe", "asked on the phone"),
        (None, "zed@example.org", "manual", ""),
    ]:
        Suppression.objects.create(
            org=org, address=address, reason=reason, note=note, created_at=T0
        )


# --- add -------------------------------------------------------------------------------------
def test_add_suppresses_addresses_for_every_org_by_default():
    out, err = run("add", "Ann <Ann@Example.org>", "bob@example.org")

    assert out == "Added 2 suppressions for every org (manual).\n"
    assert err == ""
    assert rows() == [
        (None, "ann@example.org", "manual", ""),
        (None, "bob@example.org", "manual", ""),
    ]


def test_add_for_an_org_with_a_reason_and_a_note_skips_what_is_there():
    Suppression.objects.create(org="acme", address="ann@example.org", reason="manual")
    out, err = run(
        "add",
        "ann@example.org",
        "bob@example.org",
        "--org",
        "acme",
        "--reason",
        "unsubscribe",
        "--note",
        "from the old CRM",
    )

    assert out == "Added 1 suppression for org acme (unsubscribe).\n"
    assert err == "Skipped ann@example.org: already suppressed for org acme.\n"
    assert rows() == [
        ("acme", "ann@example.org", "manual", ""),
        ("acme", "bob@example.org", "unsubscribe", "from the old CRM"),
    ]


# --- remove ----------------------------------------------------------------------------------
def test_remove_takes_the_address_off_its_scope_and_says_where_the_others_are(listed):
    out, err = run("remove", "GONE@example.org", "ann@example.org", "nobody@example.org")

    assert out == "Removed 1 suppression for every org.\n"
    assert err == (
        "Skipped ann@example.org: not suppressed for every org "
        "(it is suppressed for org acme: use --org acme).\n"
        "Skipped nobody@example.org: not suppressed for every org.\n"
    )
    out, err = run("remove", "ann@example.org", "zed@example.org", "--org", "acme")
    assert out == "Removed 1 suppression for org acme.\n"
    assert err == (
        "Skipped zed@example.org: not suppressed for org acme "
        "(it is suppressed for every org: use no --org).\n"
    )
    assert [(org, address) for org, address, _, _ in rows()] == [
        ("globex", "ann@example.org"),
        (None, "zed@example.org"),
    ]


# --- list ------------------------------------------------------------------------------------
def test_list_prints_a_table_by_address(listed):
    out, err = run("list")

    assert out == (
        "ADDRESS           ORG          REASON       CREATED (UTC)        NOTE\n"
        "----------------  -----------  -----------  -------------------  "
        "--------------------------\n"
        "ann@example.org   acme         complaint    2025-03-01 12:00:00\n"
        "ann@example.org   globex       unsubscribe  2025-03-01 12:00:00  asked on the phone\n"
        "gone@example.org  (every org)  hard_bounce  2025-03-01 12:00:00  "
        "resend email.bounced event\n"
        "zed@example.org   (every org)  manual       2025-03-01 12:00:00\n"
    )
    assert err == ""


def test_list_for_an_org_shows_what_stops_its_emails_its_own_and_every_orgs(listed):
    out, _ = run("list", "--org", "acme", "--format", "json")

    assert json.loads(out) == [
        {
            "org": "acme",
            "address": "ann@example.org",
            "reason": "complaint",
            "created_at": "2025-03-01T12:00:00+00:00",
            "note": "",
        },
        {
            "org": None,
            "address": "gone@example.org",
            "reason": "hard_bounce",
            "created_at": "2025-03-01T12:00:00+00:00",
            "note": "resend email.bounced event",
        },
        {
            "org": None,
            "address": "zed@example.org",
            "reason": "manual",
            "created_at": "2025-03-01T12:00:00+00:00",
            "note": "",
        },
    ]
    assert list(json.loads(out)[0]) == ["org", "address", "reason", "created_at", "note"]


def test_list_by_reason_and_an_empty_list(listed):
    out, _ = run("list", "--reason", "hard_bounce", "--format", "json")
    assert [row["address"] for row in json.loads(out)] == ["gone@example.org"]

    Suppression.objects.all().delete()
    assert run("list") == ("No suppressions match.\n", "")
    assert run("list", "--format", "json") == ("[]\n", "")


# --- import ----------------------------------------------------------------------------------
def test_import_reads_the_email_column(tmp_path):
    csv = tmp_path / "people.csv"
    csv.write_text(
        "name,Email,plan\nAnn,Ann@Example.org,pro\nBob,,free\n\nCy,cy@example.org,pro\n"
        "Ann again,ann@example.org,pro\n",
        encoding="utf-8",
    )
    Suppression.objects.create(org="acme", address="cy@example.org", reason="complaint")
    out, err = run("import", str(csv), "--org", "acme", "--reason", "unsubscribe")

    assert out == (
        "Added 1 suppression for org acme (unsubscribe) from people.csv: "
        "2 addresses read, 1 already there.\n"
    )
    assert err == ""
    assert rows() == [
        ("acme", "ann@example.org", "unsubscribe", "imported from people.csv"),
        ("acme", "cy@example.org", "complaint", ""),
    ]


def test_import_takes_the_first_column_with_or_without_a_header(tmp_path):
    bare = tmp_path / "bare.csv"
    bare.write_text("ann@example.org,x\nbob@example.org,y\n", encoding="utf-8")
    headed = tmp_path / "headed.csv"
    headed.write_text("\ufeffAddress,x\ncy@example.org,z\n", encoding="utf-8")

    assert run("import", str(bare))[0] == (
        "Added 2 suppressions for every org (manual) from bare.csv: "
        "2 addresses read, 0 already there.\n"
    )
    assert run("import", str(headed), "--note", "legacy")[0] == (
        "Added 1 suppression for every org (manual) from headed.csv: "
        "1 address read, 0 already there.\n"
    )
    assert [address for _, address, _, _ in rows()] == [
        "ann@example.org",
        "bob@example.org",
        "cy@example.org",
    ]
    assert Suppression.objects.get(address="cy@example.org").note == "legacy"


def test_import_of_a_hundred_thousand_addresses_goes_in_bulk_with_a_progress_bar(tmp_path):
    csv = tmp_path / "big.csv"
    csv.write_text(
        "email\n" + "".join(f"user{n}@example.com\n" for n in range(100_000)), encoding="utf-8"
    )
    Suppression.objects.create(address="user5@example.com", reason="hard_bounce")

    with CaptureQueriesContext(connection) as captured:
        out, err = run("import", str(csv), stdout=Terminal())

    assert out == (
        "Added 99999 suppressions for every org (manual) from big.csv: "
        "100000 addresses read, 1 already there.\n"
    )
    frames = err.split("\r")[1:]
    assert frames[0] == "[" + " " * 30 + "] 0/100000"
    assert frames[1] == "[" + "#" + " " * 29 + "] 5000/100000"
    assert frames[-1] == "[" + "#" * 30 + "] 100000/100000\n"
    assert len(frames) == 21
    assert Suppression.objects.count() == 100_000
    if connection.vendor == "postgresql":
        # A lookup and an INSERT per 5,000 addresses, and the transaction around them
        # (SQLite's bulk INSERT is cut at its limit of parameters per statement).
        assert len(captured) <= 2 * 20 + 4


def test_a_bad_row_refuses_the_whole_import(tmp_path):
    csv = tmp_path / "people.csv"
    csv.write_text("email\nann@example.org\nnot an address\n", encoding="utf-8")

    with pytest.raises(CommandError) as raised:
        run("import", str(csv))
    assert str(raised.value) == f"{csv} line 3: 'not an address' is not an email address."
    assert Suppression.objects.count() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Cannot read {path}: No such file or directory."),
        (b"email\n\xff\xfe\xfa@example.org\n", "Cannot read {path}: 'utf-8' codec can't decode"),
        ("a folder", "Cannot read {path}: Is a directory."),
    ],
)
def test_an_unreadable_csv_is_a_command_error(tmp_path, content, message):
    path = tmp_path / "people.csv"
    if content == "a folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CommandError) as raised:
        run("import", str(path))
    assert str(raised.value).startswith(message.format(path=path))


# --- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["purge"], "Unknown action 'purge': use one of add, remove, list, import."),
        (["add"], "add needs at least one address."),
        (["remove"], "remove needs at least one address."),
        (["add", "ann@example.org", "nope"], "'nope' is not an email address."),
        (["add", "ann@@example.org"], "'ann@@example.org' is not an email address."),
        (["remove", "<>"], "'<>' is not an email address."),
        (["list", "ann@example.org"], "list takes no addresses; narrow it with --org or --reason."),
        (["import"], "import takes exactly one CSV file."),
        (["import", "a.csv", "b.csv"], "import takes exactly one CSV file."),
        (
            ["add", "ann@example.org", "--reason", "hard_bounce"],
            "--reason for add is manual or unsubscribe; hard_bounce rows come from delivery "
            "events.",
        ),
        (
            ["import", "a.csv", "--reason", "complaint"],
            "--reason for import is manual or unsubscribe; complaint rows come from delivery "
            "events.",
        ),
        (
            ["add", "ann@example.org", "--reason", "spam"],
            "Unknown reason 'spam': use one of hard_bounce, complaint, unsubscribe, manual.",
        ),
        (
            ["remove", "ann@example.org", "--reason", "manual"],
            "remove takes no --reason: it removes the address's row.",
        ),
        (["remove", "ann@example.org", "--note", "x"], "--note is for add and import."),
        (["list", "--note", "x"], "--note is for add and import."),
        (["add", "ann@example.org", "--format", "json"], "--format is for list."),
        (["list", "--format", "xml"], "Unknown format 'xml': use one of table, json."),
        (["add", "ann@example.org", "--org", ""], "--org must be 1 to 100 characters long."),
        (["add", "ann@example.org", "--org", "x" * 101], "--org must be 1 to 100 characters long."),
    ],
)
def test_bad_input_is_a_command_error_and_changes_nothing(args, message):
    with pytest.raises(CommandError) as raised:
        run(*args)
    assert str(raised.value) == message
    assert Suppression.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_from_the_command_line_bad_input_exits_1_and_good_input_0(tmp_path, server_db):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "PYTHONPATH": str(ROOT),
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "django", "mailapi_suppress", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    bad = manage("add", "not-an-address", "--org", "acme")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == "CommandError: 'not-an-address' is not an email address.\n"

    missing = manage("import", str(tmp_path / "missing.csv"))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == (
        f"CommandError: Cannot read {Path(tmp_path / 'missing.csv')}: No such file or directory.\n"
    )

    good = manage("add", "ann@example.org", "--org", "acme")
    assert (good.returncode, good.stdout, good.stderr) == (
        0,
        "Added 1 suppression for org acme (manual).\n",
        "",
    )
    assert rows() == [("acme", "ann@example.org", "manual", "")]
