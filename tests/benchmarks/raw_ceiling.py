"""The ceiling: one process posting the benchmark's emails straight to the sandbox.

No Django, no database, no broker: a ``requests.Session`` and a loop, one POST /emails
per email (``--batch 100``: POST /emails/batch with 100 at a time). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import requests

from tests.benchmarks.messages import resend_body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    bodies = [resend_body("raw", i) for i in range(args.n)]
    session = requests.Session()
    session.headers["Authorization"] = "Bearer re_benchmark_not_a_real_key"
    session.post(f"{args.url}/emails", json=resend_body("raw-warmup", 0), timeout=10)
    requests.post(f"{args.url}/_sandbox/reset", timeout=10).raise_for_status()
    start = time.perf_counter()
    if args.batch == 1:
        for body in bodies:
            session.post(f"{args.url}/emails", json=body, timeout=10).raise_for_status()
    else:
        for first in range(0, args.n, args.batch):
            chunk = bodies[first : first + args.batch]
            session.post(f"{args.url}/emails/batch", json=chunk, timeout=10).raise_for_status()
    seconds = time.perf_counter() - start
    print(json.dumps({"emails": args.n, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
