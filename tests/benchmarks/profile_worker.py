"""Where a worker's time goes: ``outbox.process`` in this process, without Celery.

    profile_worker.py --batch-size 100 --n 2000 --out results/profile-batch100.txt

Queues ``n`` emails through the backend (with dispatch switched off, so no task is
published), then sends them as a worker would, ``TASK_SIZE`` ids per ``process`` call,
twice on fresh rows:

1. timed, with light wrappers that add up the time spent in database statements,
   HTTP requests and JSON encoding/decoding (wall clock, no profiler);
2. under cProfile, whose top functions go to ``--out``.

Needs the sandbox at BENCH_SANDBOX_URL and the benchmark database (run.py sets both).
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.benchmarks.settings_ours")

import django

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from django_mailapi import backend, outbox  # noqa: E402
from django_mailapi.models import OutboundEmail  # noqa: E402
from tests.benchmarks.messages import django_messages  # noqa: E402

# Rows are processed here, in this process: no Celery task is published for them.
backend.dispatch = lambda ids, conf, size=0: 0  # type: ignore[assignment]


def sandbox(path: str, method: str = "GET") -> dict[str, Any]:
    response = requests.request(method, f"{settings.SANDBOX_URL}/_sandbox/{path}", timeout=10)
    response.raise_for_status()
    return dict(response.json())


def fresh_rows(tag: str, n: int) -> list[int]:
    with connection.cursor() as cursor:
        # CASCADE: tables that refer to the outbox (delivery events, suppressions) go too.
        cursor.execute(
            "TRUNCATE django_mailapi_failedsend, django_mailapi_outboundemail,"
            " django_mailapi_usagecounter CASCADE"
        )
    backend.EmailBackend().send_messages(django_messages(tag, n))
    sandbox("reset", "POST")
    return list(OutboundEmail.objects.order_by("pk").values_list("pk", flat=True))


#: ``--new-connection-per-call``: close the database connection before each call, as a
#: worker without a pool (CONN_MAX_AGE 0) starts each task on a new one.
NEW_CONNECTION = False


def process_all(ids: list[int]) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    for first in range(0, len(ids), backend.TASK_SIZE):
        if NEW_CONNECTION:
            connection.close()
        outcomes.update(outbox.process(ids[first : first + backend.TASK_SIZE]))
    return outcomes


class Tally:
    """Calls and seconds per category, added up by the wrappers below."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()

    def timed(self, category: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - start
                self.calls[category] += 1

        return wrapper


@contextmanager
def tallied(tally: Tally) -> Iterator[None]:
    """Count time in SQL statements, HTTP round trips and json.dumps/loads."""
    send, dumps, loads = requests.Session.send, json.dumps, json.loads
    requests.Session.send = tally.timed("http", send)  # type: ignore[method-assign]
    json.dumps, json.loads = tally.timed("json", dumps), tally.timed("json", loads)

    def sql(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        return tally.timed("db", execute)(sql, params, many, context)

    try:
        with connection.execute_wrapper(sql):
            yield
    finally:
        requests.Session.send = send  # type: ignore[method-assign]
        json.dumps, json.loads = dumps, loads


def category(key: tuple[str, int, str]) -> str:
    """A coarse owner for a profiled function, from its file and name."""
    where = f"{key[0]}:{key[2]}"
    rules = [
        ("psycopg", "db driver (psycopg, waiting on PostgreSQL)"),
        ("django/db", "Django ORM"),
        ("_socket", "sockets (HTTP)"),
        ("urllib3", "HTTP client (requests/urllib3)"),
        ("requests/", "HTTP client (requests/urllib3)"),
        ("http/client", "HTTP client (requests/urllib3)"),
        ("json/", "JSON"),
        ("_json", "JSON"),
        ("django_mailapi", "django_mailapi"),
        ("redis", "Redis"),
    ]
    for needle, name in rules:
        if needle in where:
            return name
    return "other (stdlib, Django, builtins)"


def profile_report(profile: cProfile.Profile, header: str) -> tuple[str, dict[str, float]]:
    stats = pstats.Stats(profile)
    by_owner: Counter[str] = Counter()
    for key, (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_owner[category(key)] += tottime
    out = io.StringIO()
    out.write(header)
    out.write("\nOwn time (tottime) by owner, under cProfile:\n")
    total = sum(by_owner.values()) or 1.0
    for owner, seconds in by_owner.most_common():
        out.write(f"  {owner:<46} {seconds:7.2f} s  {seconds / total:6.1%}\n")
    out.write("\nTop 40 functions by cumulative time:\n")
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats("cumulative").print_stats(40)
    out.write("\nTop 25 functions by own time:\n")
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats("tottime").print_stats(25)
    return out.getvalue(), {k: round(v, 3) for k, v in by_owner.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--new-connection-per-call",
        action="store_true",
        help="A new database connection for each process() call (no pool, CONN_MAX_AGE 0).",
    )
    args = parser.parse_args()
    global NEW_CONNECTION
    NEW_CONNECTION = args.new_connection_per_call
    if settings.MAILAPI["BATCH_SIZE"] != args.batch_size:
        sys.exit("set BENCH_BATCH_SIZE to --batch-size (run.py does)")

    # 1. Timed, with wrappers.
    ids = fresh_rows("profile-timed", args.n)
    tally = Tally()
    with tallied(tally):
        start = time.perf_counter()
        outcomes = process_all(ids)
        wall = time.perf_counter() - start
    delivered = sandbox("stats")["accepted"]

    # 2. Under cProfile, on fresh rows.
    ids = fresh_rows("profile-cprofile", args.n)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    process_all(ids)
    profile.disable()
    profiled_wall = time.perf_counter() - start

    other = wall - sum(tally.seconds.values())
    lines = [
        f"outbox.process for {args.n} queued emails, BATCH_SIZE={args.batch_size}, "
        f"{backend.TASK_SIZE} ids per call, in one process (no Celery), against the sandbox"
        + (", a new database connection per call" if NEW_CONNECTION else ""),
        f"outcomes {dict(outcomes)}; the sandbox received {delivered}",
        "",
        f"Wall clock without profiler: {wall:.2f} s ({args.n / wall:.0f} emails/s)",
    ]
    for name in ("db", "http", "json"):
        lines.append(
            f"  {name:<5} {tally.seconds[name]:7.2f} s  {tally.seconds[name] / wall:6.1%}"
            f"  in {tally.calls[name]} calls"
        )
    lines.append(f"  other {other:7.2f} s  {other / wall:6.1%}  (ORM, our code, Python)")
    lines.append(f"Wall clock under cProfile: {profiled_wall:.2f} s")
    text, owners = profile_report(profile, "\n".join(lines) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    summary = {
        "batch_size": args.batch_size,
        "emails": args.n,
        "delivered": delivered,
        "wall_s": round(wall, 3),
        "emails_per_s": round(args.n / wall, 1),
        "seconds": {k: round(v, 3) for k, v in tally.seconds.items()} | {"other": round(other, 3)},
        "calls": dict(tally.calls),
        "profiled_wall_s": round(profiled_wall, 3),
        "profile_own_time_by_owner": owners,
        "file": str(args.out),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
