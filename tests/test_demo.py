"""The embedded default path: SQLite, kombu's filesystem broker, a real worker process and
the sandbox, exactly as `make demo` runs it, with no server of any kind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_sends_through_a_real_worker_on_sqlite_and_a_filesystem_broker(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "MAILAPI_BASE_URL")
    }
    env["EXAMPLE_VAR_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "manage.py", "demo"],
        cwd=ROOT / "example_project",
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert (tmp_path / "db.sqlite3").exists()
    assert "The sandbox received 7 emails." in out
    lines = out.splitlines()
    # Outbox rows: id, org, status, ...
    assert sum(line.split()[2:3] == ["sent"] for line in lines if line[:1].isdigit()) == 7
    # The sandbox reported one of them bounced, with a signed webhook this process took.
    assert any(
        "bounced@example.org" in line and line.rstrip().endswith("bounced") for line in lines
    )
    assert any("hard_bounce" in line and "local  no" in line for line in lines)
    # The bounce put the address on the suppression list: the second email to it is
    # refused by the worker, locally, and never reaches the sandbox.
    assert any(
        "bounced@example.org" in line and " failed " in line and "recipient_suppressed" in line
        for line in lines
    )
    assert any("recipient_suppressed  local  no" in line for line in lines)
    assert any(line.startswith("bounced@example.org  every org  hard_bounce") for line in lines)
    assert sum(line.rstrip().endswith("delivered") for line in lines) >= 6
    assert sum(" deferred " in line and "daily_quota_exceeded" in line for line in lines) == 2
    assert any("invalid_from_address  422    no" in line for line in lines)
    assert any("validation_error      403    no" in line for line in lines)
    assert "acme     3 / 3" in out
    assert "http://127.0.0.1:8000/admin/" in out


def test_example_settings_give_postgresql_the_pool_only_when_asked():
    script = (
        "import json, django; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default'].get('OPTIONS', {})))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/unused",  # never connected to
    )

    def options(pool: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT / "example_project",
            env={**env, "DATABASE_POOL": pool},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert options("true") == '{"pool": {"min_size": 1, "max_size": 4}}'
    assert options("false") == "{}"
