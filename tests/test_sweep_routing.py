"""The sweeper reaches the workers that read MAILAPI["QUEUE"], as the README sets it up.

Beat knows nothing of MAILAPI: it publishes ``django_mailapi.sweep`` wherever Celery's
routing says. These tests load the example project's settings (the README's install
section made concrete), publish its sweeper beat entry the way beat does (celery's own
``Scheduler.apply_async``) to the test Redis, and look where it lands: in the Redis list
of the QUEUE, and, end to end, with a worker started with ``-Q`` that queue alone, which
runs the sweep and so sends an email whose task was lost.
"""

from __future__ import annotations

import datetime as dt
import json
import runpy
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery
from celery.beat import Scheduler
from django.utils import timezone

from django_mailapi.models import OutboundEmail, Status
from tests.factories import make_email
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.services

EXAMPLE_SETTINGS = ROOT / "example_project" / "example_project" / "settings.py"
ENTRY = "mailapi-sweep"


def example_celery_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, broker_url: str, queue: str
) -> dict[str, Any]:
    """The example project's CELERY_* settings, with this broker and MAILAPI_QUEUE."""
    monkeypatch.setenv("EXAMPLE_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("CELERY_BROKER_URL", broker_url)
    monkeypatch.setenv("MAILAPI_QUEUE", queue)
    values = runpy.run_path(str(EXAMPLE_SETTINGS))
    assert values["MAILAPI"]["QUEUE"] == queue
    return {name: value for name, value in values.items() if name.startswith("CELERY_")}


def publish_as_beat(celery_settings: dict[str, Any]) -> str:
    """Publish the sweeper's beat entry the way beat does; return the task's id."""
    app = Celery("example_project", set_as_current=False)
    app.config_from_object(SimpleNamespace(**celery_settings), namespace="CELERY")
    try:
        scheduler = Scheduler(app, lazy=True)
        entry = scheduler.Entry(name=ENTRY, app=app, **app.conf.beat_schedule[ENTRY])
        return str(scheduler.apply_async(entry, advance=False).id)
    finally:
        app.close()


def waiting(client: Any, queue: str) -> list[tuple[str, str]]:
    """(task name, task id) of each message in ``queue``'s Redis list."""
    messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    return [(m["headers"]["task"], m["headers"]["id"]) for m in messages]


def without_route(celery: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in celery.items() if name != "CELERY_TASK_ROUTES"}


def without_entry_options(celery: dict[str, Any]) -> dict[str, Any]:
    entry = {k: v for k, v in celery["CELERY_BEAT_SCHEDULE"][ENTRY].items() if k != "options"}
    return {**celery, "CELERY_BEAT_SCHEDULE": {ENTRY: entry}}


VARIANTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "as-written": lambda celery: celery,
    "route-alone": without_entry_options,
    "entry-options-alone": without_route,
}


@pytest.fixture
def broker(redis_url: str) -> Any:
    return redis.Redis.from_url(redis_url)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_beat_publishes_the_sweeper_to_the_mailapi_queue(
    variant, monkeypatch, tmp_path, redis_url, broker
):
    queue = f"mailapi-sweep-routing-{uuid.uuid4().hex}"
    celery = VARIANTS[variant](example_celery_settings(monkeypatch, tmp_path, redis_url, queue))
    try:
        task_id = publish_as_beat(celery)
        landed = waiting(broker, queue)
    finally:
        broker.delete(queue)

    assert landed == [("django_mailapi.sweep", task_id)]


def test_without_route_or_options_beat_sends_the_sweeper_to_the_default_queue(
    monkeypatch, tmp_path, redis_url, broker
):
    """What the README's settings prevent: a sweep no ``-Q mail`` worker ever reads."""
    queue = f"mailapi-sweep-routing-{uuid.uuid4().hex}"
    default = f"{queue}-default"
    celery = without_route(
        without_entry_options(example_celery_settings(monkeypatch, tmp_path, redis_url, queue))
    )
    celery["CELERY_TASK_DEFAULT_QUEUE"] = default  # Celery's "celery", kept apart here
    try:
        task_id = publish_as_beat(celery)
        landed, stray = waiting(broker, queue), waiting(broker, default)
    finally:
        broker.delete(queue, default)

    assert (landed, stray) == ([], [("django_mailapi.sweep", task_id)])


@pytest.mark.django_db(transaction=True)
def test_a_worker_reading_only_the_mailapi_queue_runs_the_beat_sweep(
    sandbox, settings, server_db, celery_worker, monkeypatch, tmp_path, redis_url
):
    # The session's worker runs with -Q <this queue> and reads nothing else.
    queue = settings.MAILAPI["QUEUE"]
    lost = make_email(
        status=Status.QUEUED,
        org="default",
        attempts=0,
        next_attempt_at=timezone.now() - dt.timedelta(hours=1),
    )

    publish_as_beat(example_celery_settings(monkeypatch, tmp_path, redis_url, queue))

    wait_for(lambda: OutboundEmail.objects.filter(pk=lost.pk, status=Status.SENT).exists(), 30)
    assert [email["idempotency_key"] for email in sandbox.emails] == [lost.idempotency_key]
