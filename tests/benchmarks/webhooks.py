"""Delivery events ingested per second: signed requests through the webhook view.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/wt4 \\
        .venv/bin/python tests/benchmarks/webhooks.py [--events 5000] [--duplicates 0.2]

One process, Django's test client (the whole view: URL routing, Svix verification on the
raw body, parsing, the insert, the match and the delivery status update), PostgreSQL.
Half of the emails exist and half the events find theirs; a share of the requests are
redeliveries of events already stored (Svix resends the same svix-id). Creates a
throwaway database (<name>_bench), measures, and drops it. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from django_mailapi.models import DeliveryEvent, FailedSend, OutboundEmail, Status  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"benchmark secret, 32 bytes long!").decode()
KINDS = ["delivered"] * 6 + ["opened"] * 2 + ["bounced", "complained"]


def signed(payload: dict[str, object], msg_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": stamp,
        "svix-signature": "v1," + base64.b64encode(mac).decode(),
    }
    return body, headers


def requests_for(count: int, duplicates: float, emails: int, rng: random.Random) -> list:
    made: list[tuple[bytes, dict[str, str]]] = []
    for n in range(count):
        if made and rng.random() < duplicates:
            made.append(rng.choice(made))  # a redelivery: same id, same body
            continue
        kind = rng.choice(KINDS)
        data: dict[str, object] = {
            "email_id": f"em-{rng.randrange(emails * 2)}",  # half name no known email
            "to": [f"r{n}@example.org"],
            "subject": "Hi",
        }
        if kind == "bounced":
            data["bounce"] = {"type": "Permanent", "message": "550 5.1.1 user unknown"}
        payload = {"type": f"email.{kind}", "created_at": "2026-11-30T12:00:00.000Z", "data": data}
        made.append(signed(payload, f"msg_{n}"))
    return made


def run(count: int, duplicates: float, emails: int) -> None:
    OutboundEmail.objects.bulk_create(
        OutboundEmail(
            org="bench",
            provider="resend",
            status=Status.SENT,
            idempotency_key=f"k{n}",
            recipients=f"r{n}@example.org",
            recipient_count=1,
            provider_message_id=f"em-{n}",
        )
        for n in range(emails)
    )
    work = requests_for(count, duplicates, emails, random.Random(7))
    client = Client()
    url = "/mailapi/webhooks/resend/"
    latencies: list[float] = []
    answers: dict[int, int] = {}
    started = time.perf_counter()
    for body, headers in work:
        t0 = time.perf_counter()
        response = client.post(url, data=body, content_type="application/json", headers=headers)
        latencies.append(time.perf_counter() - t0)
        answers[response.status_code] = answers.get(response.status_code, 0) + 1
    elapsed = time.perf_counter() - started
    latencies.sort()
    stored = DeliveryEvent.objects.count()
    print(f"requests: {count} ({count - stored} redeliveries), answers: {answers}")
    print(f"stored: {stored} events, {DeliveryEvent.objects.unmatched().count()} unmatched")
    print(f"failed sends written: {FailedSend.objects.count()}")
    print(f"elapsed: {elapsed:.2f} s -> {count / elapsed:,.0f} requests/s")
    print(
        f"per request: median {statistics.median(latencies) * 1000:.2f} ms, "
        f"p95 {latencies[int(len(latencies) * 0.95)] * 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--duplicates", type=float, default=0.2)
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument(
        "--new-connection-per-request",
        action="store_true",
        help="CONN_MAX_AGE=0 (Django's default): connect to PostgreSQL for every request.",
    )
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("This benchmark needs PostgreSQL (DATABASE_URL=postgres://...).")
    connection.settings_dict["TEST"]["NAME"] = f"{connection.settings_dict['NAME']}_bench"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    # Persistent connections (or a pool), as a production web process would have them;
    # with CONN_MAX_AGE=0 every request also pays for a new PostgreSQL connection.
    connection.settings_dict["CONN_MAX_AGE"] = 0 if args.new_connection_per_request else None
    try:
        mailapi = {**settings.MAILAPI, "WEBHOOK_SECRET": SECRET}
        with override_settings(ROOT_URLCONF="tests.urls_webhooks", MAILAPI=mailapi):
            print(
                f"PostgreSQL {connection.pg_version // 10000}, Django {django.__version__}, "
                f"Python {sys.version.split()[0]}, {dt.date.today()}, "
                f"CONN_MAX_AGE={connection.settings_dict['CONN_MAX_AGE']}"
            )
            run(args.events, args.duplicates, args.emails)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
