"""``make bench``: django-mailapi against django-celery-email + django-anymail, end to end.

Everything runs on this machine, in one go, against the same services:

* PostgreSQL at DATABASE_URL (default postgres://postgres@127.0.0.1:5432/): a database
  ``mailapi_bench`` (BENCH_DATABASE_NAME) is dropped and created for each run;
* Redis at REDIS_URL (default redis://127.0.0.1:6379/14), flushed before each scenario;
* the sandbox provider (a fresh ``SandboxServer`` on loopback per scenario);
* real ``celery worker`` processes, the same Celery settings for both sides: one solo
  process each in most rows, and Celery's defaults (prefork, one child per CPU) in the
  "Celery defaults" rows, whose sandbox checks every email against Resend's schema.

The peer lives in its own virtualenv (tests/benchmarks/.peer-venv, built on first use):
it is not a dependency of django-mailapi. Results: a table on stdout,
tests/benchmarks/results/latest.json, and profile-*.txt for the worker profile. Nothing
here asserts a timing. See tests/benchmarks/README.md for what each scenario means.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402

from django_mailapi.sandbox import SandboxServer  # noqa: E402
from django_mailapi.sandbox import server as sandbox_server  # noqa: E402

BENCH = ROOT / "tests" / "benchmarks"
RESULTS = BENCH / "results"
PEER_VENV = BENCH / ".peer-venv"
PEER_PYTHON = PEER_VENV / "bin" / "python"
OURS_PYTHON = Path(sys.executable)
QUEUE = "mailapi-bench"

#: What the peer virtualenv holds, besides Django (pinned below).
PEER_PACKAGES = [
    "django-celery-email",
    "django-anymail[resend]",
    "celery[redis]",
    "redis",
    "psycopg[binary]",
    "requests",
]
#: Used for the peer when django-celery-email does not work with our Django version.
PEER_FALLBACK_DJANGO = "django>=4.2,<5.0"

N = 2000  # emails per throughput scenario
N_LIMITED = 500  # emails per rate-limited scenario
SANDBOX_RATE = 5.0  # requests per second the sandbox allows in the rate-limited scenarios
PEER_LIMITED_STOP = 120.0  # seconds after which the rate-limited peer is stopped
DELIVER_TIMEOUT = 300.0  # bound on any other delivery scenario
SUPPRESSED = 10_000  # rows in the suppression list for the "suppressed" scenario
#: What the sandbox checks every email against in the "Celery defaults" rows, as a real
#: API validates what it receives (the sandbox imports jsonschema only for this).
RESEND_SCHEMA = ROOT / "tests" / "fixtures" / "resend_send_email_request.schema.json"


def sandbox_nodelay(on: bool) -> None:
    """TCP_NODELAY on the sandbox's connections (socketserver's own switch).

    The sandbox sets it. ``--sandbox-as-shipped`` (the name predates that) turns it off,
    so each request stalls about 40 ms on the client's delayed ACK, which behaves like
    the round trip to a real API.
    """
    sandbox_server._Handler.disable_nagle_algorithm = on


# --- processes: every one we start is killed on the way out -----------------------------
_children: list[subprocess.Popen[bytes]] = []


def _kill_children() -> None:
    for proc in _children:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


atexit.register(_kill_children)
signal.signal(signal.SIGTERM, _exit_on_signal)
signal.signal(signal.SIGHUP, _exit_on_signal)


def say(text: str) -> None:
    print(text, flush=True)


# --- configuration -------------------------------------------------------------------------
@dataclass
class Services:
    server_url: str  # PostgreSQL server, any database
    db_name: str
    redis_url: str

    def db_url(self, name: str | None = None) -> str:
        parts = urlparse(self.server_url)
        return urlunparse(parts._replace(path=f"/{name or self.db_name}"))

    @classmethod
    def from_env(cls) -> Services:
        return cls(
            server_url=os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/",
            db_name=os.environ.get("BENCH_DATABASE_NAME", "mailapi_bench"),
            redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
        )


def child_env(services: Services, settings: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": settings,
        "BENCH_DATABASE_URL": services.db_url(),
        "BENCH_REDIS_URL": services.redis_url,
        "BENCH_QUEUE": QUEUE,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("VIRTUAL_ENV", "DATABASE_URL", "REDIS_URL", "MAILAPI_REQUIRE_SERVICES"):
        env.pop(name, None)
    env.update(extra)
    return env


def ours_env(
    services: Services, sandbox: SandboxServer, *, pool: bool = True, **mailapi: Any
) -> dict[str, str]:
    rate = mailapi.get("RATE_LIMIT")
    return child_env(
        services,
        "tests.benchmarks.settings_ours",
        BENCH_SANDBOX_URL=sandbox.url,
        BENCH_BATCH_SIZE=str(mailapi.get("BATCH_SIZE", 100)),
        BENCH_RATE_LIMIT="" if rate is None else str(rate),
        BENCH_DB_POOL="1" if pool else "0",
    )


def peer_env(services: Services, sandbox: SandboxServer) -> dict[str, str]:
    return child_env(services, "tests.benchmarks.settings_peer", BENCH_SANDBOX_URL=sandbox.url)


# --- the peer's virtualenv -----------------------------------------------------------------
def _pip_install(requirements: list[str]) -> None:
    subprocess.run(
        [str(PEER_PYTHON), "-m", "pip", "install", "--quiet", *requirements],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _peer_works(services: Services) -> str | None:
    """Send one email through django-celery-email's task body and anymail to a sandbox.

    Returns None if it arrived, else what went wrong.
    """
    snippet = (
        "import django, json; django.setup()\n"
        "from django.core.mail import EmailMultiAlternatives\n"
        "from djcelery_email.tasks import send_emails\n"
        "from djcelery_email.utils import email_to_dict\n"
        "m = EmailMultiAlternatives('smoke', 'text', 'a@example.com', ['b@example.com'])\n"
        "m.attach_alternative('<p>html</p>', 'text/html')\n"
        "print(send_emails(json.loads(json.dumps([email_to_dict(m)]))))\n"
    )
    with SandboxServer(port=0) as sandbox:
        done = subprocess.run(
            [str(PEER_PYTHON), "-c", snippet],
            env=peer_env(services, sandbox),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if sandbox.stats["accepted"] == 1 and done.returncode == 0:
            return None
    return (done.stderr or done.stdout).strip()[-600:] or "no email reached the sandbox"


def peer_venv(services: Services) -> dict[str, Any]:
    """Build (once) and check the peer virtualenv; returns what went into it."""
    ours_django = importlib.metadata.version("django")
    wanted = [*PEER_PACKAGES, f"django=={ours_django}"]
    stamp = PEER_VENV / ".installed"
    note = ""
    if not stamp.exists() or json.loads(stamp.read_text()).get("wanted") != wanted:
        say(f"Building the peer virtualenv in {PEER_VENV.relative_to(ROOT)} (first run only)...")
        if not PEER_PYTHON.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        _pip_install(wanted)
        problem = _peer_works(services)
        if problem is not None:
            note = (
                f"django-celery-email did not work with Django {ours_django} "
                f"({problem.splitlines()[-1] if problem else '?'}); the peer runs on "
                f"{PEER_FALLBACK_DJANGO}."
            )
            say(note)
            _pip_install([PEER_FALLBACK_DJANGO])
            problem = _peer_works(services)
            if problem is not None:
                raise SystemExit(f"The peer does not work in {PEER_VENV}:\n{problem}")
        stamp.write_text(json.dumps({"wanted": wanted, "note": note}))
    else:
        note = json.loads(stamp.read_text()).get("note", "")
    versions = subprocess.run(
        [
            str(PEER_PYTHON),
            "-c",
            "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "['django', 'celery', 'django-celery-email', 'django-anymail', 'requests', 'kombu']}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"versions": json.loads(versions.stdout), "note": note}


# --- services ------------------------------------------------------------------------------
def recreate_database(services: Services) -> None:
    with psycopg.connect(services.db_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{services.db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{services.db_name}"')
    subprocess.run(
        [str(OURS_PYTHON), "-m", "django", "migrate", "--noinput", "-v", "0"],
        env=child_env(services, "tests.benchmarks.settings_ours"),
        cwd=ROOT,
        check=True,
    )


def drop_database(services: Services) -> None:
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(services.db_url("postgres"), autocommit=True) as conn,
    ):
        conn.execute(f'DROP DATABASE IF EXISTS "{services.db_name}" WITH (FORCE)')


def clean_slate(services: Services) -> None:
    """Empty the outbox tables and the broker's database before a scenario."""
    with psycopg.connect(services.db_url(), autocommit=True) as conn:
        # CASCADE: tables that refer to the outbox (delivery events, suppressions) go too.
        conn.execute(
            "TRUNCATE django_mailapi_failedsend, django_mailapi_outboundemail,"
            " django_mailapi_usagecounter CASCADE"
        )
    redis.Redis.from_url(services.redis_url).flushdb()


def seed_suppressions(services: Services, n: int) -> None:
    """``n`` rows on the suppression list, none of them a recipient of the run: the
    worker's check reads an index of that size and leaves every email as it is, so the
    run delivers as many emails as the others and measures the check alone. Four in
    five are for every org (hard bounces), the rest for the benchmark's org."""
    with psycopg.connect(services.db_url(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO django_mailapi_suppression (org, address, reason, note, created_at)"
            " SELECT CASE WHEN mod(g, 5) = 0 THEN 'default' END, 'gone-' || g || '@example.com',"
            " CASE WHEN mod(g, 5) = 0 THEN 'complaint' ELSE 'hard_bounce' END, '', now()"
            " FROM generate_series(1, %s) AS g",
            [n],
        )
        # Vacuumed now, so autovacuum does not come for the new rows during the run.
        conn.execute("VACUUM ANALYZE django_mailapi_suppression")


def settle(services: Services) -> None:
    """Write out what the setup just changed (the emptied tables, seeded rows), so the
    checkpointer's work lands before the timed part of a run, the same for every run."""
    with psycopg.connect(services.db_url(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def outbox_counts(services: Services) -> dict[str, int]:
    with psycopg.connect(services.db_url()) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM django_mailapi_outboundemail GROUP BY status"
        ).fetchall()
        failed = conn.execute("SELECT count(*) FROM django_mailapi_failedsend").fetchone()
    counts = {str(status): int(count) for status, count in rows}
    counts["failed_attempts_recorded"] = int(failed[0]) if failed else 0
    return counts


@contextlib.contextmanager
def worker(
    python: Path, env: dict[str, str], name: str, *, defaults: bool = False
) -> Iterator[None]:
    """A real ``celery worker`` for the duration of the block: one solo process, or with
    ``defaults`` Celery's own choice (prefork, as many children as CPUs: no -P, no -c)."""
    log = RESULTS / f"worker-{name}.log"
    pool = [] if defaults else ["-P", "solo"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(python),
                "-m",
                "celery",
                "-A",
                "tests.benchmarks.celeryapp",
                "worker",
                *pool,
                "-Q",
                QUEUE,
                "-n",
                f"bench-{name}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )
    _children.append(proc)
    try:
        deadline = time.monotonic() + 60
        # "ready." is logged once every prefork child is up.
        while "ready." not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def run_json(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a helper script; its last stdout line is a JSON object."""
    done = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(cmd[1]).name} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def driver(
    python: Path, env: dict[str, str], mode: str, n: int, timeout: float = DELIVER_TIMEOUT
) -> dict[str, Any]:
    cmd = [str(python), str(BENCH / "driver.py"), mode, "--n", str(n), "--timeout", str(timeout)]
    return run_json(cmd, env, timeout + 120)


# --- scenarios -----------------------------------------------------------------------------
@dataclass
class Result:
    key: str
    label: str
    group: str  # rows are compared with the peer's row of the same group
    side: str  # ours | peer | raw
    emails: int
    delivered: int
    seconds: float | None
    enqueue_s: float | None = None
    rate_limited: int | None = None  # 429s the sandbox answered
    requests: int | None = None  # API requests the sandbox received
    duplicates: int | None = None
    outbox: dict[str, int] | None = None
    ratio_vs_peer: float | None = None
    #: Seconds of every run of this scenario, in order; ``seconds`` is their median.
    runs: list[float | None] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def emails_per_s(self) -> float | None:
        return self.delivered / self.seconds if self.seconds else None


def median_of(runs: list[Result]) -> Result:
    """The median run (the lower one of an even count), carrying every run's seconds.

    A run that did not finish counts as the slowest; duplicates are the most any run saw.
    """
    ordered = sorted(runs, key=lambda r: (r.seconds is None, r.seconds or 0.0))
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.runs = [r.seconds for r in runs]
    seen = [r.duplicates for r in runs if r.duplicates is not None]
    chosen.duplicates = max(seen) if seen else None
    return chosen


def duplicates(sandbox: SandboxServer) -> int:
    emails = sandbox.emails
    return len(emails) - len({tuple(e["payload"].get("to") or ()) for e in emails})


def enqueue_scenario(services: Services, side: str) -> Result:
    clean_slate(services)
    with SandboxServer(port=0) as sandbox:
        if side == "ours":
            out = driver(OURS_PYTHON, ours_env(services, sandbox), "enqueue", N)
            label = "enqueue: ours, EmailBackend.send_messages"
        else:
            out = driver(PEER_PYTHON, peer_env(services, sandbox), "enqueue", N)
            label = "enqueue: peer, CeleryEmailBackend.send_messages"
    # The tasks must really be on the broker (the warm-up email's too).
    tasks = int(redis.Redis.from_url(services.redis_url).llen(QUEUE))  # type: ignore[arg-type]
    if not tasks:
        raise RuntimeError(f"{side}: send_messages published no task to {QUEUE}")
    return Result(
        key=f"enqueue-{side}",
        label=label,
        group="enqueue",
        side=side,
        emails=N,
        delivered=N,
        seconds=out["enqueue_s"],
        enqueue_s=out["enqueue_s"],
        note=f"no worker running; {tasks} tasks on the broker afterwards",
        extra={"tasks_published": tasks},
    )


def deliver_scenario(
    services: Services,
    *,
    key: str,
    label: str,
    group: str,
    side: str,
    n: int,
    sandbox_rate: float | None = None,
    timeout: float = DELIVER_TIMEOUT,
    pool: bool = True,
    suppressed: int = 0,
    celery_defaults: bool = False,
    **mailapi: Any,
) -> Result:
    """``celery_defaults``: the worker on Celery's defaults (prefork, one child per CPU),
    our side without a connection pool, and a sandbox that checks each email's schema."""
    clean_slate(services)
    if suppressed:
        seed_suppressions(services, suppressed)
    settle(services)
    schema = RESEND_SCHEMA if celery_defaults else None
    if celery_defaults:
        pool = False
    with SandboxServer(port=0, rate_limit=sandbox_rate, schema=schema) as sandbox:
        if side == "ours":
            python, env = OURS_PYTHON, ours_env(services, sandbox, pool=pool, **mailapi)
        else:
            python, env = PEER_PYTHON, peer_env(services, sandbox)
        with worker(python, env, key, defaults=celery_defaults):
            out = driver(python, env, "deliver", n, timeout)
        stats = sandbox.stats
        dups = duplicates(sandbox)
    note = ""
    if out["seconds"] is None:
        note = f"stopped after {out['stopped_after_s']:.0f} s with {out['delivered']} of {n}"
    return Result(
        key=key,
        label=label,
        group=group,
        side=side,
        emails=n,
        delivered=int(out["delivered"]),
        seconds=out["seconds"] if out["seconds"] is not None else out["stopped_after_s"],
        enqueue_s=out["enqueue_s"],
        rate_limited=int(stats["rate_limited"]),
        requests=int(stats["requests"]),
        duplicates=dups,
        outbox=outbox_counts(services) if side == "ours" else None,
        note=note,
        extra=({"mailapi": mailapi} if mailapi else {})
        | ({} if pool or side != "ours" else {"db_pool": False})
        | ({"suppressed_addresses": suppressed} if suppressed else {})
        | ({"celery_defaults": True, "sandbox_schema": RESEND_SCHEMA.name} if schema else {})
        | ({"errors_by_status": stats["errors_by_status"]} if stats["errors_by_status"] else {}),
    )


def raw_scenario(services: Services, batch: int, *, schema: bool = False) -> Result:
    with SandboxServer(port=0, schema=RESEND_SCHEMA if schema else None) as sandbox:
        out = run_json(
            [
                str(OURS_PYTHON),
                str(BENCH / "raw_ceiling.py"),
                "--url",
                sandbox.url,
                "--n",
                str(N),
                "--batch",
                str(batch),
            ],
            child_env(services, "tests.benchmarks.settings_ours"),
            DELIVER_TIMEOUT,
        )
        accepted, stats = sandbox.stats["accepted"], sandbox.stats
    what = "POST /emails, one per email" if batch == 1 else f"POST /emails/batch of {batch}"
    return Result(
        key=f"raw-{'defaults-' if schema else ''}{'single' if batch == 1 else f'batch{batch}'}",
        label=f"{'defaults: ' if schema else ''}raw ceiling: requests.Session, {what}",
        group="defaults" if schema else "e2e",
        side="raw",
        emails=N,
        delivered=int(accepted),
        seconds=out["seconds"],
        requests=int(stats["requests"]),
        rate_limited=int(stats["rate_limited"]),
        note="one process, no Django, no database, no broker"
        + (", sandbox checking the schema" if schema else ""),
        extra={"sandbox_schema": RESEND_SCHEMA.name} if schema else {},
    )


def profile_scenario(
    services: Services, batch_size: int, *, defaults: bool = False
) -> dict[str, Any]:
    """``defaults``: as in the Celery-defaults rows, no connection pool (a new database
    connection per call, as a worker with CONN_MAX_AGE 0 opens one per task) and a
    sandbox that checks each email's schema."""
    clean_slate(services)
    name = "profile-defaults.txt" if defaults else f"profile-batch{batch_size}.txt"
    with SandboxServer(port=0, schema=RESEND_SCHEMA if defaults else None) as sandbox:
        out = run_json(
            [
                str(OURS_PYTHON),
                str(BENCH / "profile_worker.py"),
                "--batch-size",
                str(batch_size),
                "--n",
                str(N),
                "--out",
                str(RESULTS / name),
                *(["--new-connection-per-call"] if defaults else []),
            ],
            ours_env(services, sandbox, pool=not defaults, BATCH_SIZE=batch_size),
            DELIVER_TIMEOUT * 2,
        )
    return out | ({"defaults": True} if defaults else {})


def suppression_check_scenario(
    services: Services, suppressed: int, rounds: int = 9
) -> dict[str, Any]:
    """The check's own cost, in one process (suppression_check.py)."""
    clean_slate(services)
    with SandboxServer(port=0) as sandbox:
        return run_json(
            [
                str(OURS_PYTHON),
                str(BENCH / "suppression_check.py"),
                "--n",
                str(N),
                "--suppressed",
                str(suppressed),
                "--rounds",
                str(rounds),
            ],
            ours_env(services, sandbox, BATCH_SIZE=100),
            DELIVER_TIMEOUT * 2,
        )


# --- where the CPU goes ---------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int | str) -> float | None:
    """User + system CPU seconds of a live process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


class _BackendWatch:
    """CPU of the PostgreSQL backends serving ``db_name``, sampled every 10 ms from
    /proc (only when the server runs on this machine): a backend's last few ms before it
    exits are missed, so the figure is a floor."""

    def __init__(self, services: Services) -> None:
        self.db_name = services.db_name
        self.postmaster: int | None = None
        with psycopg.connect(services.db_url(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        with contextlib.suppress(OSError, ValueError, TypeError):
            status = Path(f"/proc/{row[0] if row else 0}/status").read_text()
            self.postmaster = int(status.split("PPid:")[1].split()[0])
        self.seen: dict[str, tuple[float, float]] = {}
        self.own = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.thread_time()
        needle = f" {self.db_name} ".encode()
        children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children")
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    with contextlib.suppress(OSError):
                        if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                            cpu = _cpu_seconds(pid)
                            if cpu is not None:
                                self.seen[pid] = (self.seen.get(pid, (cpu, cpu))[0], cpu)
            self.own = time.thread_time() - start
            self._stop.wait(0.01)

    def __enter__(self) -> _BackendWatch:
        if self.postmaster is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    @property
    def seconds(self) -> float | None:
        if self.postmaster is None:
            return None
        return sum(last - first for first, last in self.seen.values())


def cpu_scenario(services: Services, side: str, rounds: int = 3) -> dict[str, Any]:
    """Where the CPU of one end-to-end run in the Celery-defaults setting goes: the
    enqueueing process (``send_messages`` alone), the worker (main process and its
    children), the sandbox (this process, less the sampling thread) and PostgreSQL's
    backends. Untimed runs of their own, after the table's, since sampling costs CPU."""
    runs = []
    for _ in range(rounds):
        clean_slate(services)
        settle(services)
        with SandboxServer(port=0, schema=RESEND_SCHEMA) as sandbox:
            if side == "ours":
                python, env = OURS_PYTHON, ours_env(services, sandbox, pool=False, BATCH_SIZE=100)
            else:
                python, env = PEER_PYTHON, peer_env(services, sandbox)
            with worker(python, env, f"cpu-{side}", defaults=True):
                pids = _group_pids(_children[-1].pid)
                before = {pid: _cpu_seconds(pid) or 0.0 for pid in pids}
                with _BackendWatch(services) as backends:
                    mine = time.process_time()
                    out = driver(python, env, "deliver", N)
                    mine = time.process_time() - mine - backends.own
                after = {pid: _cpu_seconds(pid) or 0.0 for pid in pids}
        runs.append(
            {
                "seconds": out["seconds"],
                "enqueue_cpu_s": out.get("enqueue_cpu_s"),
                "worker_cpu_s": sum(after[pid] - before[pid] for pid in pids),
                "sandbox_cpu_s": mine,
                "postgresql_cpu_s": backends.seconds,
            }
        )
    summary: dict[str, Any] = {"side": side, "runs": runs}
    for name in runs[0]:
        values = sorted(r[name] for r in runs if r[name] is not None)
        summary[name] = round(values[(len(values) - 1) // 2], 3) if values else None
    return summary


# --- report --------------------------------------------------------------------------------
def add_ratios(results: list[Result]) -> None:
    peers = {r.group: r for r in results if r.side == "peer"}
    for result in results:
        peer = peers.get(result.group)
        if peer is None or result is peer:
            continue
        ours, theirs = result.emails_per_s, peer.emails_per_s
        if ours and theirs:
            result.ratio_vs_peer = ours / theirs


def table(results: list[Result]) -> str:
    header = (
        f"{'scenario':<58} {'emails':>11} {'seconds':>8} {'emails/s':>9} {'vs peer':>8} {'429s':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        emails = f"{r.delivered:,}" if r.delivered == r.emails else f"{r.delivered} of {r.emails}"
        seconds = f"{r.seconds:.2f}" if r.seconds is not None else "-"
        rate = f"{r.emails_per_s:,.1f}" if r.emails_per_s else "-"
        if r.side == "peer":
            ratio = "1.0x"
        elif r.ratio_vs_peer is not None:
            ratio = f"{r.ratio_vs_peer:,.1f}x"
        else:
            ratio = "-"
        limited = "-" if r.rate_limited is None else str(r.rate_limited)
        lines.append(f"{r.label:<58} {emails:>11} {seconds:>8} {rate:>9} {ratio:>8} {limited:>5}")
    return "\n".join(lines)


def targets(results: list[Result]) -> list[dict[str, Any]]:
    by_key = {r.key: r for r in results}

    def check(name: str, key: str, floor: float) -> dict[str, Any]:
        result = by_key.get(key)
        ratio = result.ratio_vs_peer if result else None
        return {
            "target": name,
            "scenario": key,
            "ratio": None if ratio is None else round(ratio, 2),
            "needed": floor,
            "met": None if ratio is None else ratio >= floor,  # None: not run
        }

    def suppression_cost() -> dict[str, Any]:
        """The end-to-end ratio with SUPPRESSED rows in the list, against the one without."""
        with_rows, without = (
            by_key.get("e2e-ours-batch100-suppressed"),
            by_key.get("e2e-ours-batch100"),
        )
        kept = None
        if with_rows and without and with_rows.ratio_vs_peer and without.ratio_vs_peer:
            kept = with_rows.ratio_vs_peer / without.ratio_vs_peer
        rows = with_rows.extra.get("suppressed_addresses", 0) if with_rows else SUPPRESSED
        return {
            "target": f"{rows:,} suppressions: end-to-end ratio within 5% of the one without",
            "scenario": "e2e-ours-batch100-suppressed",
            "ratio": None if kept is None else round(kept, 3),
            "needed": 0.95,
            "met": None if kept is None else kept >= 0.95,
        }

    return [
        suppression_cost(),
        check(
            "Celery defaults (prefork, no DB pool), schema-checking sandbox: end-to-end >= 5x "
            "the peer",
            "defaults-ours",
            5,
        ),
        check("batching on: end-to-end >= 5x the peer, no rate limit", "e2e-ours-batch100", 5),
        check("5 req/s limit: >= 50x the peer's emails/s (RATE_LIMIT=5)", "limited-ours-rl5", 50),
        check("5 req/s limit: >= 50x the peer's emails/s (no RATE_LIMIT)", "limited-ours", 50),
        check("BATCH_SIZE=1: not slower than the peer", "e2e-ours-batch1", 1),
    ]


def machine(services: Services, peer: dict[str, Any]) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with psycopg.connect(services.db_url()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    info = redis.Redis.from_url(services.redis_url).info("server")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ours": {
            p: importlib.metadata.version(p)
            for p in ("django", "celery", "kombu", "requests", "psycopg")
        },
        "peer": peer["versions"],
        "peer_note": peer["note"],
        "postgresql": row[0] if row else "?",
        "redis": info.get("redis_version", "?"),
    }


def report_run(result: Result) -> None:
    rate = f"{result.emails_per_s:,.1f} emails/s" if result.emails_per_s else ""
    say(f"    {result.delivered} emails in {result.seconds:.2f} s  {rate}  {result.note}")


def main() -> None:
    global N, N_LIMITED
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-profile", action="store_true", help="Leave out the worker profile.")
    parser.add_argument(
        "--skip-limited", action="store_true", help="Leave out the rate-limited scenarios."
    )
    parser.add_argument(
        "--sandbox-as-shipped",
        action="store_true",
        help="Turn Nagle's algorithm back on in the sandbox (about 40 ms per request, "
        "like a real API's round trip).",
    )
    parser.add_argument(
        "--output", default="latest.json", help="File name for the JSON, in results/."
    )
    parser.add_argument("--emails", type=int, default=N, help="Emails per throughput scenario.")
    parser.add_argument(
        "--limited-emails", type=int, default=N_LIMITED, help="Emails per rate-limited scenario."
    )
    parser.add_argument(
        "--suppressed",
        type=int,
        default=SUPPRESSED,
        help="Rows in the suppression list for the end-to-end run that measures the "
        f"worker's check (default {SUPPRESSED:,}; 0 leaves that run out).",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="Runs of each scenario but the rate-limited ones, in interleaved rounds; "
        "the table shows each one's median (default 5).",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="Run only the scenarios whose title (as printed) contains TEXT; repeatable. "
        "For trying a change: a full run is what the README quotes.",
    )
    args = parser.parse_args()
    N, N_LIMITED = args.emails, args.limited_emails
    rounds = max(1, args.repeat)

    started = time.monotonic()
    sandbox_nodelay(not args.sandbox_as_shipped)
    services = Services.from_env()
    RESULTS.mkdir(parents=True, exist_ok=True)
    say(f"PostgreSQL database {services.db_url()} (recreated), Redis {services.redis_url}")
    peer = peer_venv(services)
    recreate_database(services)
    results: list[Result] = []
    profiles: list[dict[str, Any]] = []
    try:
        plan: list[tuple[str, Any]] = [
            ("enqueue 2,000: ours", lambda: enqueue_scenario(services, "ours")),
            ("enqueue 2,000: peer", lambda: enqueue_scenario(services, "peer")),
            (
                "end to end 2,000: ours, BATCH_SIZE=100",
                lambda: deliver_scenario(
                    services,
                    key="e2e-ours-batch100",
                    label="end to end: ours, BATCH_SIZE=100 (default)",
                    group="e2e",
                    side="ours",
                    n=N,
                    BATCH_SIZE=100,
                ),
            ),
            *(
                [
                    (
                        f"end to end 2,000: ours, BATCH_SIZE=100, {args.suppressed:,} suppressed",
                        lambda: deliver_scenario(
                            services,
                            key="e2e-ours-batch100-suppressed",
                            label=f"end to end: ours, BATCH_SIZE=100, {args.suppressed:,} "
                            "suppressions",
                            group="e2e",
                            side="ours",
                            n=N,
                            suppressed=args.suppressed,
                            BATCH_SIZE=100,
                        ),
                    )
                ]
                if args.suppressed
                else []
            ),
            (
                "end to end 2,000: peer",
                lambda: deliver_scenario(
                    services,
                    key="e2e-peer",
                    label="end to end: peer, django-celery-email + anymail",
                    group="e2e",
                    side="peer",
                    n=N,
                ),
            ),
            (
                "end to end 2,000: ours, BATCH_SIZE=100, no database connection pool",
                lambda: deliver_scenario(
                    services,
                    key="e2e-ours-batch100-nopool",
                    label="end to end: ours, BATCH_SIZE=100, no DB pool",
                    group="e2e",
                    side="ours",
                    n=N,
                    pool=False,
                    BATCH_SIZE=100,
                ),
            ),
            (
                "end to end 2,000: ours, BATCH_SIZE=1",
                lambda: deliver_scenario(
                    services,
                    key="e2e-ours-batch1",
                    label="end to end: ours, BATCH_SIZE=1 (no batching)",
                    group="e2e",
                    side="ours",
                    n=N,
                    BATCH_SIZE=1,
                ),
            ),
            ("raw ceiling: one POST per email", lambda: raw_scenario(services, 1)),
            ("raw ceiling: batches of 100", lambda: raw_scenario(services, 100)),
            # Both sides on Celery's defaults, against a sandbox that checks every email.
            (
                "Celery defaults, end to end 2,000: ours, BATCH_SIZE=100",
                lambda: deliver_scenario(
                    services,
                    key="defaults-ours",
                    label="defaults: ours, BATCH_SIZE=100, no DB pool",
                    group="defaults",
                    side="ours",
                    n=N,
                    celery_defaults=True,
                    BATCH_SIZE=100,
                ),
            ),
            (
                "Celery defaults, end to end 2,000: peer",
                lambda: deliver_scenario(
                    services,
                    key="defaults-peer",
                    label="defaults: peer, django-celery-email + anymail",
                    group="defaults",
                    side="peer",
                    n=N,
                    celery_defaults=True,
                ),
            ),
            (
                "Celery defaults, raw ceiling: one POST per email, schema checked",
                lambda: raw_scenario(services, 1, schema=True),
            ),
            (
                "Celery defaults, raw ceiling: batches of 100, schema checked",
                lambda: raw_scenario(services, 100, schema=True),
            ),
        ]
        # The rate-limited scenarios run once: the peer's takes two minutes.
        once: list[tuple[str, Any]] = []
        if not args.skip_limited:
            once = [
                (
                    "sandbox at 5 req/s, 500: ours, RATE_LIMIT=5",
                    lambda: deliver_scenario(
                        services,
                        key="limited-ours-rl5",
                        label="5 req/s sandbox: ours, RATE_LIMIT=5",
                        group="limited",
                        side="ours",
                        n=N_LIMITED,
                        sandbox_rate=SANDBOX_RATE,
                        BATCH_SIZE=100,
                        RATE_LIMIT=SANDBOX_RATE,
                    ),
                ),
                (
                    "sandbox at 5 req/s, 500: ours, no RATE_LIMIT",
                    lambda: deliver_scenario(
                        services,
                        key="limited-ours",
                        label="5 req/s sandbox: ours, no RATE_LIMIT",
                        group="limited",
                        side="ours",
                        n=N_LIMITED,
                        sandbox_rate=SANDBOX_RATE,
                        BATCH_SIZE=100,
                    ),
                ),
                (
                    f"sandbox at 5 req/s, 500: peer (stopped after {PEER_LIMITED_STOP:.0f} s)",
                    lambda: deliver_scenario(
                        services,
                        key="limited-peer",
                        label=f"5 req/s sandbox: peer (stopped at {PEER_LIMITED_STOP:.0f} s)",
                        group="limited",
                        side="peer",
                        n=N_LIMITED,
                        sandbox_rate=SANDBOX_RATE,
                        timeout=PEER_LIMITED_STOP,
                    ),
                ),
            ]
        if args.only:
            plan = [entry for entry in plan if any(text in entry[0] for text in args.only)]
            once = [entry for entry in once if any(text in entry[0] for text in args.only)]
        # The others run --repeat times, in rounds that interleave them, so a slow minute
        # on a shared machine lands on both sides.
        runs: dict[str, list[Result]] = {title: [] for title, _ in plan}
        for round_ in range(1, rounds + 1):
            for title, scenario in plan:
                say(f"  {title} (run {round_} of {rounds}) ...")
                runs[title].append(scenario())
                report_run(runs[title][-1])
        results += [median_of(runs[title]) for title, _ in plan]
        for title, scenario in once:
            say(f"  {title} ...")
            results.append(scenario())
            report_run(results[-1])
        if not args.skip_profile:
            for batch_size in (100, 1):
                say(f"  profile: outbox.process in one process, BATCH_SIZE={batch_size} ...")
                profiles.append(profile_scenario(services, batch_size))
                say(f"    {profiles[-1]['file']}")
            say("  profile: as in the Celery-defaults rows (no pool, schema-checking sandbox) ...")
            profiles.append(profile_scenario(services, 100, defaults=True))
            say(f"    {profiles[-1]['file']}")
        cpu: list[dict[str, Any]] = []
        if not args.skip_profile and any(title.startswith("Celery defaults") for title, _ in plan):
            for side in ("ours", "peer"):
                say(f"  CPU per process, Celery defaults, end to end: {side} (3 untimed runs) ...")
                cpu.append(cpu_scenario(services, side))
        check: dict[str, Any] | None = None
        if not args.skip_profile and args.suppressed:
            say(f"  the suppression check in one process, {args.suppressed:,} rows ...")
            check = suppression_check_scenario(services, args.suppressed)
        info = machine(services, peer)
    finally:
        _kill_children()
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(services.redis_url).flushdb()
        drop_database(services)

    add_ratios(results)
    report = {
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "total_seconds": round(time.monotonic() - started, 1),
        "machine": info,
        "settings": {
            "emails": N,
            "emails_rate_limited": N_LIMITED,
            "sandbox_rate_limit": SANDBOX_RATE,
            "peer_stopped_after_s": PEER_LIMITED_STOP,
            "worker": "celery worker -P solo, one process, for each side; in the defaults "
            "rows celery worker with no -P or -c (prefork, one child per CPU) for each side",
            "defaults_rows": "both sides on Celery's defaults, ours without a DB pool "
            "(CONN_MAX_AGE 0), the sandbox checking every email against "
            f"{RESEND_SCHEMA.name}",
            "repeat": rounds,
            "ours_db_pool": "Django's connection pool (Django 5.1+), but for the no-pool row",
            "sandbox_tcp_nodelay": not args.sandbox_as_shipped,
        },
        "results": [{**asdict(r), "emails_per_s": r.emails_per_s} for r in results],
        "targets": targets(results),
        "profiles": profiles,
        "cpu_defaults": cpu,
        "suppression_check": check,
    }
    (RESULTS / args.output).write_text(json.dumps(report, indent=2) + "\n")

    say("")
    say(table(results))
    say(
        f"Seconds: the median of {rounds} interleaved runs "
        "(rate-limited rows: one run); every run's time is in the JSON."
    )
    say("")
    for target in report["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not run"}[target["met"]]
        say(f"  {verdict:<8} {target['target']} (ratio {target['ratio']})")
    for profile in profiles:
        seconds = profile["seconds"]
        say(
            f"  profile BATCH_SIZE={profile['batch_size']}"
            f"{' (defaults)' if profile.get('defaults') else ''}: "
            f"{profile['wall_s']:.2f} s in process, "
            + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items())
        )
    for item in cpu:
        say(
            f"  CPU, Celery defaults, {item['side']} (median of {len(item['runs'])} untimed runs, "
            f"{item['seconds']} s each): enqueue {item['enqueue_cpu_s']} s, worker "
            f"{item['worker_cpu_s']} s, sandbox {item['sandbox_cpu_s']} s, PostgreSQL "
            f"{item['postgresql_cpu_s']} s"
        )
    if check:
        say(
            f"  suppression check, {check['suppressed']:,} rows, {check['emails']:,} emails in "
            f"one process: {check['process_s_without']:.3f} s without, "
            f"{check['process_s_with']:.3f} s with ({check['slower_by']:+.1%}); "
            f"{check['list_queries']} list queries took {check['list_query_s'] * 1000:.1f} ms"
        )
    say("")
    say(
        f"{info['cpu_count']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"ours: Django {info['ours']['django']} / Celery {info['ours']['celery']}, "
        f"peer: Django {info['peer']['django']} / Celery {info['peer']['celery']} / "
        f"django-celery-email {info['peer']['django-celery-email']} / "
        f"django-anymail {info['peer']['django-anymail']}"
    )
    if info["peer_note"]:
        say(info["peer_note"])
    say(f"Written: {(RESULTS / args.output).relative_to(ROOT)}; took {report['total_seconds']} s")


if __name__ == "__main__":
    main()
