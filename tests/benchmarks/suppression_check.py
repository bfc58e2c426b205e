"""What the worker's suppression check costs: ``outbox.process`` in this process, without
Celery, with and without rows on the suppression list, in interleaved rounds.

    suppression_check.py --n 2000 --suppressed 10000 --rounds 7

Each round queues ``n`` emails through the backend (dispatch switched off), then sends
them as a worker would, ``TASK_SIZE`` ids per ``process`` call, once with an empty
suppression list and once with ``suppressed`` rows on it (none of them a recipient, so
both send every email). The time spent in the list's queries is added up on its own.
The end-to-end runs of run.py carry the noise of four processes on a shared machine;
this one process shows the check's own share.

Needs the sandbox at BENCH_SANDBOX_URL and the benchmark database (run.py sets both).
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
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
from django_mailapi.backend import TASK_SIZE  # noqa: E402
from django_mailapi.models import OutboundEmail, Status  # noqa: E402
from tests.benchmarks.messages import django_messages  # noqa: E402

# Rows are processed here, in this process: no Celery task is published for them.
backend.dispatch = lambda ids, conf, size=0: 0  # type: ignore[assignment]


class ListQueries:
    """Adds up the time of the statements that read the suppression list."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if "django_mailapi_suppression" not in sql:
            return execute(sql, params, many, context)
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started
            self.count += 1


def prepare(tag: str, n: int, suppressed: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE django_mailapi_failedsend, django_mailapi_outboundemail,"
            " django_mailapi_usagecounter, django_mailapi_suppression CASCADE"
        )
        if suppressed:
            # As run.py seeds them: no recipient of the run, four in five for every org.
            cursor.execute(
                "INSERT INTO django_mailapi_suppression (org, address, reason, note, created_at)"
                " SELECT CASE WHEN mod(g, 5) = 0 THEN 'default' END,"
                " 'gone-' || g || '@example.com',"
                " CASE WHEN mod(g, 5) = 0 THEN 'complaint' ELSE 'hard_bounce' END, '', now()"
                " FROM generate_series(1, %s) AS g",
                [suppressed],
            )
        cursor.execute("ANALYZE django_mailapi_suppression")
    backend.EmailBackend().send_messages(django_messages(tag, n))
    requests.post(f"{settings.SANDBOX_URL}/_sandbox/reset", timeout=10).raise_for_status()
    with connection.cursor() as cursor:
        # Written out now, both ways, so that flushing what was just written (the rows
        # seeded above, the emails queued) does not land in the timed part.
        cursor.execute("CHECKPOINT")
    return list(OutboundEmail.objects.order_by("pk").values_list("pk", flat=True))


def send_all(ids: list[int]) -> tuple[float, ListQueries]:
    queries = ListQueries()
    started = time.perf_counter()
    with connection.execute_wrapper(queries):
        for start in range(0, len(ids), TASK_SIZE):
            outbox.process(ids[start : start + TASK_SIZE])
    seconds = time.perf_counter() - started
    sent = OutboundEmail.objects.filter(status=Status.SENT).count()
    if sent != len(ids):
        raise SystemExit(f"only {sent} of {len(ids)} emails were sent")
    return seconds, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--suppressed", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    prepare("warm-up", 200, 0)
    send_all(list(OutboundEmail.objects.values_list("pk", flat=True)))
    runs: dict[str, list[float]] = {"without": [], "with": []}
    lookups: list[float] = []
    lookup_count = 0
    for round_ in range(args.rounds):
        # Alternate which goes first, so neither always meets a warmer cache.
        order = [("without", 0), ("with", args.suppressed)]
        for name, rows in order if round_ % 2 == 0 else order[::-1]:
            ids = prepare(f"check-{round_}-{name}", args.n, rows)
            seconds, queries = send_all(ids)
            runs[name].append(seconds)
            if rows:
                lookups.append(queries.seconds)
                lookup_count = queries.count
    without, with_rows = statistics.median(runs["without"]), statistics.median(runs["with"])
    print(
        json.dumps(
            {
                "emails": args.n,
                "suppressed": args.suppressed,
                "rounds": args.rounds,
                "process_s_without": round(without, 4),
                "process_s_with": round(with_rows, 4),
                "slower_by": round(with_rows / without - 1, 4),
                "list_queries": lookup_count,
                "list_query_s": round(statistics.median(lookups), 4),
                "list_share": round(statistics.median(lookups) / with_rows, 4),
                "runs": {k: [round(v, 4) for v in vs] for k, vs in runs.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
