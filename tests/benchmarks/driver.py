"""Sends the benchmark's emails through ``EMAIL_BACKEND`` and times it.

Runs in either virtualenv, so the same code drives our backend and the peer's; which one
is decided by DJANGO_SETTINGS_MODULE. Prints one JSON object as its last line.

    driver.py enqueue --n 2000            # time send_messages only (no worker running)
    driver.py deliver --n 2000 --timeout 300
        # time send_messages, then until the sandbox holds all n (or the timeout passes)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.benchmarks.settings_ours")

import django
import requests

django.setup()

from django.conf import settings  # noqa: E402
from django.core.mail import get_connection  # noqa: E402

from tests.benchmarks.celeryapp import app  # noqa: E402, F401  (as a project's __init__ would)
from tests.benchmarks.messages import django_messages  # noqa: E402


def wait_for(session: requests.Session, n: int, deadline: float) -> tuple[int, float | None]:
    """Wait until the sandbox holds ``n`` emails: (count, monotonic time it got there).

    ``POST /_sandbox/wait`` answers the moment the n-th email is stored, so the time is
    not rounded up to a polling interval and no polling loads the machine being measured.
    """
    while True:
        left = deadline - time.monotonic()
        response = session.post(
            f"{settings.SANDBOX_URL}/_sandbox/wait",
            json={"accepted": n, "timeout": max(0.0, min(left, 60.0))},
            timeout=max(left, 0.0) + 30,
        )
        now = time.monotonic()
        response.raise_for_status()
        answer = response.json()
        if answer["reached"]:
            return int(answer["accepted"]), now
        if now >= deadline:
            return int(answer["accepted"]), None


def warm_up(session: requests.Session, run: str) -> None:
    """One email through the whole path, so imports and connections are not timed."""
    get_connection().send_messages(django_messages(f"{run}-warmup", 1))
    count, _ = wait_for(session, 1, time.monotonic() + 60)
    if count < 1:
        sys.exit("warm-up email never reached the sandbox; is the worker running?")
    session.post(f"{settings.SANDBOX_URL}/_sandbox/reset", timeout=5).raise_for_status()


def enqueue(n: int, run: str) -> dict[str, Any]:
    connection = get_connection()
    connection.send_messages(django_messages(f"{run}-warmup", 1))  # imports, broker link
    messages = django_messages(run, n)
    start = time.perf_counter()
    connection.send_messages(messages)
    return {"emails": n, "enqueue_s": time.perf_counter() - start}


def deliver(n: int, run: str, timeout: float, warmup: bool) -> dict[str, Any]:
    session = requests.Session()
    if warmup:
        warm_up(session, run)
    messages = django_messages(run, n)
    start, cpu = time.monotonic(), time.process_time()
    get_connection().send_messages(messages)
    enqueued, cpu = time.monotonic(), time.process_time() - cpu
    count, done = wait_for(session, n, start + timeout)
    return {
        "emails": n,
        "enqueue_s": enqueued - start,
        "enqueue_cpu_s": cpu,
        "delivered": count,
        "seconds": None if done is None else done - start,
        "stopped_after_s": None if done is not None else time.monotonic() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["enqueue", "deliver"])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--run", default="bench", help="Tag put in recipients and subjects.")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args()
    if args.mode == "enqueue":
        result = enqueue(args.n, args.run)
    else:
        result = deliver(args.n, args.run, args.timeout, not args.no_warmup)
    result["django"] = django.get_version()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
