"""Peak memory of one large email in the web process and in the worker.

    .venv/bin/python tests/benchmarks/memory.py [--mb 35]

One email whose attachment comes to ``--mb`` MB after base64 (what Resend counts against
its 40 MB) is sent with ``EmailBackend.send_messages`` in one fresh process, and sent
on to a sandbox on loopback with ``outbox.process`` in another. Each process reports its
resident set size after Django's setup and its peak (``ru_maxrss``) after the work, so
the difference is what the email cost. Needs PostgreSQL (a database ``mailapi_memory``
is created and dropped) and Redis (tasks are published to a queue nobody consumes).
Measures and prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DB_NAME = "mailapi_memory"
SERVER = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/").rstrip("/")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


def child(role: str, megabytes: float) -> None:
    import django

    django.setup()
    from django.core.mail import EmailMessage

    from django_mailapi import outbox
    from django_mailapi.backend import EmailBackend
    from django_mailapi.models import OutboundEmail

    before = current_mb()
    if role == "web":
        raw = os.urandom(int(megabytes * 1024 * 1024 * 3 / 4))
        msg = EmailMessage("Large", "See the attachment.", "a@example.com", ["b@example.com"])
        msg.attach("large.bin", raw, "application/octet-stream")
        del raw
        before = current_mb()  # the message itself is the caller's, not ours
        EmailBackend().send_messages([msg])
        outcome = {"queued": OutboundEmail.objects.count()}
    else:
        pks = list(OutboundEmail.objects.values_list("pk", flat=True))
        outcome = outbox.process(pks)
    print(json.dumps({"before_mb": before, "peak_mb": peak_mb(), "outcome": outcome}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=35.0, help="attachment MB after base64")
    args = parser.parse_args()

    import psycopg

    from django_mailapi.sandbox import SandboxServer

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    sandbox = SandboxServer(port=0).start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.benchmarks.settings_ours",
        "BENCH_DATABASE_URL": f"{SERVER}/{DB_NAME}",
        "BENCH_SANDBOX_URL": sandbox.url,
        "BENCH_QUEUE": "mailapi-memory-nobody",
    }
    try:
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=120,
        )
        results = {}
        for role in ("web", "worker"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", role, str(args.mb)],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
            )
            results[role] = json.loads(done.stdout.strip().splitlines()[-1])
        received = sandbox.stats
    finally:
        sandbox.stop()
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')

    print(f"one email with {args.mb:g} MB of base64 attachment")
    print(f"{'process':<8} {'after setup':>12} {'peak':>8} {'the email cost':>15}  outcome")
    for role, found in results.items():
        cost = found["peak_mb"] - found["before_mb"]
        print(
            f"{role:<8} {found['before_mb']:>9.0f} MB {found['peak_mb']:>5.0f} MB "
            f"{cost:>12.0f} MB  {found['outcome']}"
        )
    print(f"sandbox: {received['requests']} request(s), {received['accepted']} accepted")
    out = ROOT / "tests" / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "memory.json").write_text(json.dumps({"mb": args.mb, **results}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], float(sys.argv[3]))
    else:
        main()
