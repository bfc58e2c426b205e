"""The Mail API admin, mailapi_status and the sweeper's query on tables of millions of rows.

    .venv/bin/python tests/benchmarks/admin_scale.py [--emails 1000000] [--refill] [--runs 5]

Uses a PostgreSQL database of its own (``mailapi_scale`` on the server of DATABASE_URL,
default the local one; ``SCALE_DATABASE_URL`` names another), created and migrated on the
first run and kept for the next (``--refill`` builds the data again, ``--drop`` drops the
database at the end). The data is made by the server itself, one ``INSERT … SELECT …
FROM generate_series`` per table: 1,000,000 emails in every status, 1,000,000 failed
sends, 1,000,000 delivery events and 100,000 suppressions (each table only if the models
have it), then ``VACUUM ANALYZE``.

Then every list page of the Mail API admin is requested by a logged-in superuser through
Django's test client in this process: unfiltered, each choice of each filter (the first
few of a long list), a search for one recipient's address, a search that matches
nothing, the second page, and one change page. Each URL is requested once to warm up
and ``--runs`` times measured; the table shows the median, the number of queries and the
slowest query's time, and for each page the EXPLAIN (ANALYZE, BUFFERS) of its slowest
query is printed at the end. mailapi_status and the sweeper's query are timed the same
way. Measures; asserts nothing. Not run by ``make test``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/"
SCALE_URL = os.environ.get("SCALE_DATABASE_URL") or (
    os.environ.get("DATABASE_URL", DEFAULT_SERVER).rsplit("/", 1)[0] + "/mailapi_scale"
)
os.environ["DATABASE_URL"] = SCALE_URL
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.apps import apps  # noqa: E402
from django.contrib import admin  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, models  # noqa: E402
from django.test import Client, RequestFactory  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

#: At most this many choices of one filter are measured (a long list's first ones).
CHOICES_PER_FILTER = 6
PROVIDERS = "ARRAY['resend', 'sendr', 'emitlo']"
CODES = (
    "ARRAY['invalid_from_address', 'validation_error', 'application_error', "
    "'rate_limit_exceeded', 'daily_quota_exceeded', 'retries_exhausted', 'hard_bounce', "
    "'soft_bounce', 'complaint', 'suppressed', 'timeout', 'connection_error']"
)
STATUSES = "ARRAY[422, 422, 500, 429, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL]"
EVENT_TYPES = (
    "ARRAY['delivered', 'delivered', 'delivered', 'opened', 'clicked', 'bounced', "
    "'complained', 'delivery_delayed', 'sent', 'failed']"
)


# --- the database ------------------------------------------------------------------------
def ensure_database() -> None:
    """Create the scale database on its server if it is not there."""
    import psycopg

    parsed = urlparse(SCALE_URL)
    name = parsed.path.lstrip("/")
    with psycopg.connect(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password or "",
        dbname="postgres",
        autocommit=True,
    ) as server:
        found = server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not found:
            server.execute(f'CREATE DATABASE "{name}"')


def drop_database() -> None:
    import psycopg

    connection.close()
    parsed = urlparse(SCALE_URL)
    with psycopg.connect(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        dbname="postgres",
        autocommit=True,
    ) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}"')


def model(name: str) -> type[models.Model] | None:
    try:
        return apps.get_model("django_mailapi", name)
    except LookupError:
        return None


def fill(target: type[models.Model], count: int, source: str, exprs: dict[str, str]) -> float:
    """INSERT ``count`` rows of ``target`` made by ``source`` (SQL yielding ``g.*``).

    ``exprs`` gives a column its SQL; any other column gets NULL when nullable, else its
    field's default as a parameter, so a column added to a model later still fills.
    """
    quote = connection.ops.quote_name
    columns, values, params = [], [], []
    for field in target._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(quote(field.column))
        if field.column in exprs:
            values.append(exprs[field.column].replace("%", "%%"))
        elif field.null:
            values.append("NULL")
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
    table = quote(target._meta.db_table)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} FROM {source.format(n=count).replace('%', '%%')}",
            params,
        )
    return time.perf_counter() - started


def spread(column: str = "g.i") -> str:
    """A time over the last 90 days, later for a larger ``i``."""
    return f"now() - (({{n}} - {column}) * (interval '90 days' / {{n}}))"


def build(emails: int) -> None:
    Email = model("OutboundEmail")
    Failed = model("FailedSend")
    Event = model("DeliveryEvent")
    Suppressed = model("Suppression")
    assert Email is not None and Failed is not None
    tables = [m for m in (Suppressed, Event, Failed, Email) if m is not None]
    with connection.cursor() as cursor:
        names = ", ".join(connection.ops.quote_name(m._meta.db_table) for m in tables)
        cursor.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")

    status = (
        "CASE WHEN i % 100 < 90 THEN 'sent' WHEN i % 100 < 94 THEN 'failed' "
        "WHEN i % 100 < 96 THEN 'queued' WHEN i % 100 < 98 THEN 'deferred' "
        "WHEN i % 100 < 99 THEN 'sending' ELSE 'cancelled' END"
    )
    source = (
        f"(SELECT i, {status} AS st, {spread('i')} AS t FROM generate_series(1, {{n}}) AS i) AS g"
    )
    at = "g.t"
    took = fill(
        Email,
        emails,
        source,
        {
            "org": "'org' || (g.i % 50)",
            "provider": f"({PROVIDERS})[1 + g.i % 3]",
            "mailer": "''",
            "status": "g.st",
            "idempotency_key": "'scale/' || g.i",
            "payload": "CASE WHEN g.st = 'sent' THEN NULL ELSE "
            "jsonb_build_object('subject', 'Invoice ' || g.i) END",
            "from_email": "'Shop <shop@example.com>'",
            "recipients": "'user' || g.i || '@example' || (g.i % 100) || '.com'",
            "recipient_count": "1",
            "payload_bytes": "200",
            "tags": "CASE WHEN g.i % 10 = 0 THEN '[\"invoice\"]' ELSE '[]' END::jsonb",
            "metadata": "'{}'::jsonb",
            "original_recipients": "''",
            "subject": "'Invoice ' || g.i",
            "provider_message_id": "CASE WHEN g.st = 'sent' THEN 'msg_' || g.i ELSE '' END",
            "delivery_status": "CASE WHEN g.st <> 'sent' THEN '' WHEN g.i % 7 = 0 THEN "
            "'delivered' WHEN g.i % 53 = 0 THEN 'bounced' ELSE '' END",
            "attempts": "1",
            "next_attempt_at": f"CASE WHEN g.st IN ('queued', 'deferred') THEN {at} END",
            "leased_until": f"CASE WHEN g.st = 'sending' THEN {at} + interval '30 seconds' END",
            "lease_token": "''",
            "batch_key": "''",
            "last_error_code": f"CASE WHEN g.st = 'failed' THEN ({CODES})[1 + g.i % 12] "
            "ELSE '' END",
            "last_error_status": f"CASE WHEN g.st = 'failed' THEN ({STATUSES})[1 + g.i % 12] END",
            "quota_units": "0",
            "created_at": at,
            "updated_at": at,
            "sent_at": f"CASE WHEN g.st = 'sent' THEN {at} + interval '1 second' END",
        },
    )
    print(f"filled {Email._meta.db_table}: {emails:,} rows in {took:.1f} s", flush=True)

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(id) FROM {Email._meta.db_table}")
        first = cursor.fetchone()[0]
    email_of = f"{first} + ((g.i::bigint * 7919) % {emails})"
    plain = f"(SELECT i, {spread('i')} AS t FROM generate_series(1, {{n}}) AS i) AS g"
    took = fill(
        Failed,
        emails,
        plain,
        {
            "email_id": email_of,
            "org": "'org' || (g.i % 50)",
            "provider": f"({PROVIDERS})[1 + g.i % 3]",
            "source": f"({PROVIDERS})[1 + g.i % 3]",
            "error_code": f"({CODES})[1 + g.i % 12]",
            "http_status": f"({STATUSES})[1 + g.i % 12]",
            "message": "'The API refused the request'",
            "request_id": "''",
            "attempt": "1 + g.i % 3",
            "will_retry": "g.i % 2 = 0",
            "created_at": "g.t",
        },
    )
    print(f"filled {Failed._meta.db_table}: {emails:,} rows in {took:.1f} s", flush=True)

    if Event is not None:
        took = fill(
            Event,
            emails,
            plain,
            {
                "email_id": f"CASE WHEN g.i % 10 = 0 THEN NULL ELSE {email_of} END",
                "org": "CASE WHEN g.i % 10 = 0 THEN '' ELSE 'org' || (g.i % 50) END",
                "provider": f"({PROVIDERS})[1 + g.i % 3]",
                "provider_event_id": "'evt_' || g.i",
                "provider_message_id": "'msg_' || g.i",
                "type": f"({EVENT_TYPES})[1 + g.i % 10]",
                "recipient": "'user' || g.i || '@example' || (g.i % 100) || '.com'",
                "occurred_at": "g.t - interval '2 seconds'",
                "received_at": "g.t",
                "details": "'{}'::jsonb",
            },
        )
        print(f"filled {Event._meta.db_table}: {emails:,} rows in {took:.1f} s", flush=True)

    if Suppressed is not None:
        count = emails // 10
        took = fill(
            Suppressed,
            count,
            plain,
            {
                "org": "CASE WHEN g.i % 5 = 0 THEN NULL ELSE 'org' || (g.i % 50) END",
                "address": "'user' || (g.i * 10) || '@example' || (g.i * 10 % 100) || '.com'",
                "reason": "(ARRAY['hard_bounce', 'complaint', 'unsubscribe', 'manual'])"
                "[1 + g.i % 4]",
                "note": "''",
                "created_at": "g.t",
            },
        )
        print(f"filled {Suppressed._meta.db_table}: {count:,} rows in {took:.1f} s", flush=True)

    for table in tables:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(table._meta.db_table)}")


def row_count(target: type[models.Model]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(target._meta.db_table)}")
        return int(cursor.fetchone()[0])


# --- measuring ---------------------------------------------------------------------------
class Measured:
    def __init__(self, label: str, page: str, times: list[float], queries: list[dict]) -> None:
        self.label = label
        self.page = page
        self.p50 = statistics.median(times) * 1000
        self.queries = queries
        timed = [q for q in queries if q["sql"].lstrip().upper().startswith(("SELECT", "WITH"))]
        self.slowest = max(timed, key=lambda q: float(q["time"]), default=None)


def measure(label: str, page: str, action: Callable[[], Any], runs: int) -> Measured:
    action()  # warm up: caches, the session, the connection
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    with CaptureQueriesContext(connection) as captured:
        action()
    result = Measured(label, page, times, captured.captured_queries)
    slow = f"{float(result.slowest['time']) * 1000:7.1f}" if result.slowest else "      -"
    print(f"{result.p50:9.1f}  {len(result.queries):7d}  {slow}  {label}", flush=True)
    return result


def admin_urls(user: Any) -> Iterator[tuple[str, str]]:
    """(page, url) for every Mail API list page and its variants."""
    factory = RequestFactory()
    for registered, model_admin in admin.site._registry.items():
        meta = registered._meta
        if meta.app_label != "django_mailapi":
            continue
        page = meta.verbose_name_plural
        base = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        yield page, base
        request = factory.get(base)
        request.user = user
        changelist = model_admin.get_changelist_instance(request)
        for spec in changelist.filter_specs:
            choices = [c for c in spec.choices(changelist) if not c.get("selected")]
            for choice in choices[:CHOICES_PER_FILTER]:
                yield page, base + choice["query_string"]
        if model_admin.search_fields:
            yield page, base + "?q=user500007%40example7.com"
            yield page, base + "?q=nobody-at-all%40example.net"
        yield page, base + "?p=2"
        first = changelist.result_list[0] if len(changelist.result_list) else None
        if first is not None:
            yield (
                page,
                reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[first.pk]),
            )


def explain(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def print_summary(results: list[Measured]) -> None:
    """One row per list page (Markdown, as the README shows it): the unfiltered list,
    its slowest filter, the recipient search, page 2 and a change page, p50 in ms."""

    def kind(label: str) -> str:
        if "/change/" in label:
            return "change"
        if "?q=user" in label:
            return "search"
        if "?p=2" in label:
            return "page2"
        if "?q=" in label:
            return "search_none"
        return "filter" if "?" in label else "list"

    print("\n| page | unfiltered | slowest filter | recipient search | page 2 | change page |")
    print("|---|---:|---|---:|---:|---:|")
    by_page: dict[str, dict[str, list[Measured]]] = {}
    for result in results:
        if result.label.startswith("/admin/"):
            by_page.setdefault(result.page, {}).setdefault(kind(result.label), []).append(result)
    for page, kinds in by_page.items():

        def ms(name: str) -> str:
            found = kinds.get(name)
            return f"{max(r.p50 for r in found):.0f}" if found else "-"

        filters = kinds.get("filter", [])
        worst = max(filters, key=lambda r: r.p50, default=None)
        slowest = f"{worst.p50:.0f} (`{worst.label.split('?', 1)[1]}`)" if worst else "-"
        print(
            f"| {page} | {ms('list')} | {slowest} | {ms('search')} | {ms('page2')} | "
            f"{ms('change')} |"
        )
    for result in results:
        if not result.label.startswith("/admin/"):
            print(f"| {result.label} | {result.p50:.0f} | | | | |")


def measure_purge() -> None:
    """mailapi_purge on every finished email: rows, time, and the longest batch.

    Each batch is one transaction, and its locks (on the rows it deletes) are held until
    it commits, so the longest batch is the longest any lock of the purge is held."""
    import contextlib
    import types

    from django_mailapi import purge

    holds: list[float] = []
    atomic = purge.transaction.atomic

    @contextlib.contextmanager
    def timed(*args: Any, **kwargs: Any) -> Iterator[None]:
        began = time.perf_counter()
        with atomic(*args, **kwargs):
            yield
        holds.append(time.perf_counter() - began)

    purge.transaction = types.SimpleNamespace(atomic=timed)  # type: ignore[assignment]
    began = time.perf_counter()
    counts = purge.purge(0)
    took = time.perf_counter() - began
    rows = counts.emails + counts.failed_sends + counts.usage_counters + counts.delivery_events
    print(
        f"\nmailapi_purge --older-than 0: {rows:,} rows ({counts.emails:,} emails, "
        f"{counts.failed_sends:,} failed sends, {counts.delivery_events:,} delivery events, "
        f"{counts.usage_counters:,} counters) in "
        f"{took:.1f} s, {len(holds):,} batches; longest batch {max(holds) * 1000:.0f} ms, "
        f"median {statistics.median(holds) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--refill", action="store_true", help="build the data again")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument(
        "--purge",
        action="store_true",
        help="last, run mailapi_purge --older-than 0 on the data (the next run rebuilds it)",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    ensure_database()
    call_command("migrate", verbosity=0)
    Email = model("OutboundEmail")
    assert Email is not None
    expected = {"OutboundEmail": args.emails, "FailedSend": args.emails}
    expected.update({"DeliveryEvent": args.emails, "Suppression": args.emails // 10})
    found = {name: model(name) for name in expected}
    if args.refill or any(
        table is not None and row_count(table) != expected[name] for name, table in found.items()
    ):
        build(args.emails)
    for name in ("OutboundEmail", "FailedSend", "DeliveryEvent", "Suppression"):
        found = model(name)
        if found is not None:
            print(f"{found._meta.db_table}: {row_count(found):,} rows")
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        print(cursor.fetchone()[0])

    User = get_user_model()
    user = User.objects.filter(username="scale").first() or User.objects.create_superuser(
        "scale", "scale@example.com", "not-a-real-password"
    )
    client = Client()
    client.force_login(user)

    print(f"\n{'p50 ms':>9}  {'queries':>7}  {'slowest':>7}  page")
    results = []
    for page, url in admin_urls(user):

        def get(url: str = url) -> None:
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)

        results.append(measure(url, page, get, args.runs))

    from django_mailapi.conf import get_settings

    def status() -> None:
        call_command("mailapi_status", "--format", "json", stdout=io.StringIO())

    def sweeper() -> None:
        grace = dt.timedelta(seconds=get_settings().SWEEP_AFTER_SECONDS)
        list(
            Email.objects.stranded(timezone.now(), grace)  # type: ignore[attr-defined]
            .order_by("next_attempt_at")
            .values_list("pk", "mailer", "payload_bytes")[:10_000]
        )

    results.append(
        measure("manage.py mailapi_status --format json", "mailapi_status", status, args.runs)
    )
    results.append(
        measure("the sweeper's query (stranded rows, 10,000 at most)", "sweep", sweeper, args.runs)
    )
    if model("DeliveryEvent") is not None:
        from django_mailapi import events

        def stranded() -> None:
            list(events.stranded_events(timezone.now()))

        results.append(
            measure(
                "the sweeper's unmatched events (last hour, 1,000 at most)",
                "sweep-events",
                stranded,
                args.runs,
            )
        )

    print("\nSlowest query of each page (EXPLAIN ANALYZE):")
    pages: dict[str, Measured] = {}
    for result in results:
        if result.slowest is None:
            continue
        best = pages.get(result.page)
        if best is None or float(result.slowest["time"]) > float(best.slowest["time"]):
            pages[result.page] = result
    for page, result in pages.items():
        print(f"\n== {page}: {result.label} ({float(result.slowest['time']) * 1000:.1f} ms)")
        print(result.slowest["sql"][:1500])
        print(explain(result.slowest["sql"]))

    print_summary(results)
    slow = sorted(results, key=lambda r: r.p50, reverse=True)[:5]
    print("\nSlowest pages (p50): " + "; ".join(f"{r.label} {r.p50:.0f} ms" for r in slow))
    if args.purge:
        measure_purge()
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.drop:
        drop_database()


if __name__ == "__main__":
    main()
