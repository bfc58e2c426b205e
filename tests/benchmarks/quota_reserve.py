"""What one quota reservation costs on PostgreSQL: statements and microseconds.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/wt4 \\
        .venv/bin/python tests/benchmarks/quota_reserve.py

Creates a throwaway database (<name>_bench), measures, and drops it. Prints figures;
asserts nothing about time. Compares the single-statement PostgreSQL path with the
portable path (the ORM fallback used on SQLite) on the same server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from django_mailapi import quota  # noqa: E402
from django_mailapi.exceptions import QuotaExceeded  # noqa: E402
from django_mailapi.models import OrgQuota  # noqa: E402

N = 2000
NOW = dt.datetime(2024, 5, 17, 12, 0, tzinfo=dt.timezone.utc)
CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


@contextlib.contextmanager
def portable() -> Iterator[None]:
    """Take the ORM fallback path, as on SQLite."""
    native = quota._native
    quota._native = lambda using: False  # type: ignore[assignment]
    try:
        yield
    finally:
        quota._native = native  # type: ignore[assignment]


def statements(call: Callable[[], object]) -> int:
    """SQL statements sent by ``call`` inside a transaction, BEGIN/COMMIT left out."""
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        call()
    return sum(not q["sql"].startswith(CONTROL) for q in captured.captured_queries)


def timed(label: str, call: Callable[[], object], *, own_transaction: bool) -> None:
    """Median and p95 of ``call``: alone in autocommit, or inside one open transaction."""
    samples = []
    outer = contextlib.nullcontext() if own_transaction else transaction.atomic()
    with outer:
        for _ in range(N):
            start = time.perf_counter()
            call()
            samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    print(
        f"  {label:<56} median {statistics.median(samples):6.0f} µs"
        f"   p95 {samples[int(len(samples) * 0.95)]:6.0f} µs"
    )


def refused(org: str) -> None:
    with contextlib.suppress(QuotaExceeded):
        quota.reserve(org, 1, NOW)


def run() -> None:
    OrgQuota.objects.create(org="open", daily_limit=10**9, monthly_limit=10**9)
    OrgQuota.objects.create(org="full", daily_limit=0)
    OrgQuota.objects.create(org="half", daily_limit=10**9, monthly_limit=1)
    quota.reserve("half", 1, NOW)  # its month is full, its day is not
    day = quota.day_start(NOW)

    def grant() -> None:
        quota.reserve("open", 1, NOW)

    def release() -> None:
        quota.release("open", 1, day, failed=False)

    version = connection.cursor().connection.info.server_version
    print(f"PostgreSQL {version // 10000}.{version % 10000}; {N} calls per line; one process\n")
    print("SQL statements per call (round trips; BEGIN/COMMIT not counted):")
    print(f"  reserve, granted                        {statements(grant)}")
    print(f"  reserve, refused by both limits         {statements(lambda: refused('full'))}")
    print(f"  reserve, refused by one of the two      {statements(lambda: refused('half'))}")
    print(f"  release                                 {statements(release)}")
    with portable():
        print(f"  reserve, portable path (SQLite's)       {statements(grant)}")
    print("\nTime per call, inside an open transaction (what a reservation adds to the")
    print("outbox's transaction, which commits anyway):")
    timed("reserve, granted", grant, own_transaction=False)
    timed("reserve, refused by one of the two", lambda: refused("half"), own_transaction=False)
    timed("release", release, own_transaction=False)
    with portable():
        timed("reserve, portable path (SQLite's)", grant, own_transaction=False)
    print("\nTime per call, alone in autocommit (its own BEGIN ... COMMIT, commit flush included):")
    timed("reserve, granted", grant, own_transaction=True)
    timed("release", release, own_transaction=True)


def main() -> None:
    if connection.vendor != "postgresql":
        sys.exit("This benchmark measures PostgreSQL; set DATABASE_URL to a postgres:// URL.")
    connection.settings_dict["TEST"]["NAME"] = f"{connection.settings_dict['NAME']}_bench"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        run()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
