"""The sandbox posts signed delivery events for what magic recipients ask for."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from svix.webhooks import Webhook

from django_mailapi.sandbox import SandboxServer
from django_mailapi.sandbox.webhooks import BUILDERS, WebhookSender, scenario_for
from tests.helpers import run_sandbox_cli, wait_for
from tests.webhook_helpers import SECRET


class Receiver:
    """A loopback HTTP server that records posts and answers from a script of statuses."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.posts]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


def send(sandbox: SandboxServer | _At, *to: str) -> str:
    response = requests.post(
        f"{sandbox.url}/emails",
        json={"from": "a@example.com", "to": list(to), "subject": "Hi", "text": "x"},
        headers={"Authorization": "Bearer k", "User-Agent": "t"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_each_recipient_gets_the_events_its_address_asks_for(receiver):
    with SandboxServer(webhook_url=receiver.url, webhook_secret=SECRET) as sandbox:
        email_id = send(sandbox, "ann@x.org", "bounced+1@x.org", "complained@x.org")
        assert sandbox.wait_for_webhooks(10)
        log = sandbox.webhook_log

    kinds = sorted((e["data"]["to"][0], e["type"]) for e in receiver.events())
    assert kinds == [
        ("ann@x.org", "email.delivered"),
        ("bounced+1@x.org", "email.bounced"),
        ("complained@x.org", "email.complained"),
        ("complained@x.org", "email.delivered"),
    ]
    assert {e["data"]["email_id"] for e in receiver.events()} == {email_id}
    assert [entry["status"] for entry in log] == [200] * 4
    for headers, body in receiver.posts:  # every one verifies with the svix library
        Webhook(SECRET).verify(body, headers)


@pytest.mark.parametrize(
    ("address", "steps"),
    [
        ("x@y.org", ("delivered",)),
        ("bounce@y.org", ("bounced:hard",)),
        ("Soft-Bounced+a@y.org", ("bounced:soft",)),
        ("delayed@y.org", ("delivery_delayed", "delivered")),
        ("failed@y.org", ("failed",)),
        ("suppressed@y.org", ("suppressed",)),
        ("silent@y.org", ()),
    ],
)
def test_magic_addresses(address, steps):
    assert scenario_for(address) == steps


def test_events_the_provider_does_not_have_are_left_out(receiver):
    with SandboxServer(
        provider="sendr", webhook_url=receiver.url, webhook_secret="plain"
    ) as sandbox:
        requests.post(
            f"{sandbox.url}/emails",
            json={
                "from": "a@x.org",
                "to": ["failed@x.org", "delayed@x.org"],
                "subject": "s",
                "text": "t",
            },
            headers={"Authorization": "Bearer k"},
            timeout=5,
        ).raise_for_status()
        assert sandbox.wait_for_webhooks(10)
    assert [e["type"] for e in receiver.events()] == ["email.delivered"]


def test_a_failing_endpoint_is_retried_with_the_same_event_id_and_a_refusal_is_not(receiver):
    receiver.statuses = [503, 500, 200, 401]
    sender = WebhookSender(receiver.url, SECRET, backoff=0.01)
    try:
        first = BUILDERS["resend"]("e1", {}, "a@x.org")
        second = BUILDERS["resend"]("e2", {}, "b@x.org")
        sender.post(first + second)
        assert sender.wait_idle(10)
    finally:
        sender.stop()
    ids = [headers["svix-id"] for headers, _ in receiver.posts]
    assert ids == [first[0].event_id] * 3 + [second[0].event_id]
    assert [(e["status"], e["attempts"]) for e in sender.log] == [(200, 3), (401, 1)]


def test_retries_are_bounded():
    sender = WebhookSender("http://127.0.0.1:9/nothing-listens", SECRET, attempts=2, backoff=0.01)
    try:
        sender.post(BUILDERS["resend"]("e1", {}, "a@x.org"))
        assert sender.wait_idle(10)
    finally:
        sender.stop()
    assert [(e["status"], e["attempts"]) for e in sender.log] == [(None, 2)]


@pytest.mark.parametrize(
    "url", ["http://example.com/hook", "ftp://127.0.0.1/x", "http://10.0.0.1/"]
)
def test_events_go_to_loopback_only(url):
    with pytest.raises(ValueError, match="loopback"):
        SandboxServer(webhook_url=url, webhook_secret=SECRET)


def test_the_command_line_takes_a_webhook_url_and_secret(receiver):
    def probe(url: str) -> list[dict]:
        send(_At(url), "bounced@x.org")
        return wait_for(
            lambda: requests.get(f"{url}/_sandbox/webhooks", timeout=5).json()["events"], 10
        )

    argv = ["-m", "django_mailapi.sandbox", "--port", "0"]
    argv += ["--webhook-url", receiver.url, "--webhook-secret", SECRET]
    log, code, _stdout, _stderr = run_sandbox_cli(argv, "resend", probe)
    assert code == 0
    assert [(e["type"], e["status"]) for e in log] == [("bounced", 200)]
    assert [e["type"] for e in receiver.events()] == ["email.bounced"]


class _At:
    """Just enough of a SandboxServer for send(): its URL."""

    def __init__(self, url: str) -> None:
        self.url = url
