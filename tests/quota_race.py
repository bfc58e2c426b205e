"""Reserve quota many times from one process; run by tests/test_quota_concurrency.py.

Usage: python tests/quota_race.py ORG ATTEMPTS NOW_ISO [keep|churn]
Prints "ready", waits for a line on stdin (so all processes start together), reserves
1 unit ATTEMPTS times, and prints how many reservations were granted. With "churn" each
granted reservation is released again at once (an email that was not sent), so
reservations and releases run at the same time and lock the same counters.
"""

from __future__ import annotations

import datetime as dt
import os
import sys


def main() -> None:
    org, attempts, now_iso = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    churn = sys.argv[4:] == ["churn"]
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
            day = quota.reserve(org, 1, now)
        except QuotaExceeded:
            continue
        granted += 1
        if churn:
            quota.release(org, 1, day, failed=False)
    print(granted, flush=True)


if __name__ == "__main__":
    main()
