"""Reserve quota many times from one process; run by tests/test_quota_concurrency.py.

Usage: python tests/quota_race.py ORG ATTEMPTS NOW_ISO
Prints "ready", waits for a line on stdin (so all processes start together), reserves
1 unit ATTEMPTS times, and prints how many reservations were granted.
"""

from __future__ import annotations

import datetime as dt
import os
import sys


def main() -> None:
    org, attempts, now_iso = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django_mailapi import quota
    from django_mailapi.exceptions import QuotaExceeded

    now = dt.datetime.fromisoformat(now_iso)
    print("ready", flush=True)
    sys.stdin.readline()
    granted = 0
    for _ in range(attempts):
        try:
            quota.reserve(org, 1, now)
        except QuotaExceeded:
            continue
        granted += 1
    print(granted, flush=True)


if __name__ == "__main__":
    main()
