"""`make demo`: a handful of emails through EMAIL_BACKEND -> a real Celery worker -> the
local sandbox provider, then the outcome with error codes and suggested actions. The
sandbox then reports what became of each email with signed delivery events, which this
process receives at /mailapi/webhooks/resend/ (one of them a hard bounce, which puts the
address on the suppression list: a second email to it is refused by the worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.urls import reverse
from django.utils import timezone

import django_mailapi
from django_mailapi import quota
from django_mailapi.models import (
    DeliveryEvent,
    FailedSend,
    OrgQuota,
    OutboundEmail,
    Status,
    Suppression,
    UsageCounter,
)
from django_mailapi.sandbox import SandboxServer

PROJECT_DIR = Path(settings.BASE_DIR)
VAR = Path(settings.VAR)


class Command(BaseCommand):
    help = "Send a few emails through a real worker to the sandbox and show what happened."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0)
        self._clear()
        web = self._start_web()
        path = reverse("mailapi-webhook", kwargs={"provider": "resend"})
        webhook_url = f"http://127.0.0.1:{web.server_address[1]}{path}"
        sandbox = SandboxServer(
            port=0, webhook_url=webhook_url, webhook_secret=settings.MAILAPI["WEBHOOK_SECRET"]
        )
        with sandbox:
            settings.MAILAPI = {**settings.MAILAPI, "BASE_URL": sandbox.url}
            self.stdout.write(f"Sandbox provider (resend) listening on {sandbox.url}")
            self.stdout.write(f"Delivery events come back to {webhook_url}")
            worker = self._start_worker(sandbox.url)
            try:
                self._send()
                self._wait()
                self._wait_for_events(sandbox)
                self._send_again()
                self._wait()
            finally:
                worker.terminate()
                worker.wait(20)
            self._report(sandbox)
        web.shutdown()
        web.server_close()

    def _start_web(self) -> ThreadedWSGIServer:
        """This project's own views (the webhook) served from a thread on loopback."""

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadedWSGIServer(("127.0.0.1", 0), Quiet)
        server.set_app(get_wsgi_application())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _wait_for_events(self, sandbox: SandboxServer, timeout: float = 30.0) -> None:
        # The sandbox posts after each accepted email; the last may still be on its way.
        if not sandbox.wait_for_webhooks(timeout):
            self.stderr.write("Gave up waiting for delivery events; showing what came.")

    def _clear(self) -> None:
        for model in (
            Suppression,
            DeliveryEvent,
            FailedSend,
            OutboundEmail,
            UsageCounter,
            OrgQuota,
        ):
            model.objects.all().delete()
        broker = VAR / "broker"
        if broker.is_dir():
            for stale in broker.iterdir():
                stale.unlink()

    def _start_worker(self, sandbox_url: str) -> subprocess.Popen[bytes]:
        log = VAR / "worker.log"
        env = {**os.environ, "MAILAPI_BASE_URL": sandbox_url}
        command = [
            sys.executable, "-m", "celery", "-A", "example_project", "worker",
            "-Q", settings.MAILAPI["QUEUE"], "-P", "solo",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "INFO", "-f", str(log),
        ]  # fmt: skip
        log.write_text("")
        proc = subprocess.Popen(
            command,
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"The Celery worker did not start; see {log}")
            time.sleep(0.2)
        self.stdout.write(f"Celery worker started (pid {proc.pid}, log {log})")
        return proc

    def _send(self) -> None:
        OrgQuota.objects.create(org="acme", daily_limit=3)
        self.stdout.write("Org 'acme' gets a daily limit of 3 recipients.\n")
        msg = mail.EmailMultiAlternatives(
            "Welcome to Example Shop",
            "Thanks for signing up.",
            to=["ann@example.org"],
            cc=["team@example.org"],
        )
        msg.attach_alternative("<h1>Welcome!</h1><p>Thanks for signing up.</p>", "text/html")
        msg.attach("terms.txt", "Be nice.", "text/plain")
        msg.send()
        mail.send_mail("Your receipt", "Order #1001: 2 items.", None, ["bob@example.org"])
        with django_mailapi.for_org("acme"):
            for n in range(5):
                mail.send_mail(f"Acme report {n + 1}", "Weekly numbers.", None, [f"r{n}@acme.test"])
        mail.send_mail("Flaky once", "Retried once, then sent.", None, ["flaky+1@example.org"])
        # Accepted by the API, then bounced: the sandbox reports it with a signed webhook.
        mail.send_mail("Old address", "Sent, then bounced.", None, ["bounced@example.org"])
        mail.send_mail(
            "Bad sender", "The API refuses this.", None, ["invalid_from_address@fail.sandbox.test"]
        )
        mail.send_mail(
            "Unverified domain",
            "The API refuses this.",
            None,
            ["validation_error+403@fail.sandbox.test"],
        )
        self.stdout.write(f"Sent {OutboundEmail.objects.count()} emails with send_mail().")

    def _send_again(self) -> None:
        # The hard bounce put the address on the suppression list: the worker checks it
        # just before sending, so this one fails locally and never reaches the API.
        mail.send_mail("Old address, again", "Refused locally.", None, ["bounced@example.org"])
        self.stdout.write(
            "Sent another email to bounced@example.org, on the suppression list since its "
            "hard bounce."
        )

    def _wait(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        busy = [Status.QUEUED, Status.SENDING]
        while OutboundEmail.objects.filter(status__in=busy).exists():
            if time.monotonic() > deadline:
                self.stderr.write("Gave up waiting for the worker; showing what is done.")
                return
            time.sleep(0.3)

    def _report(self, sandbox: SandboxServer) -> None:
        out = self.stdout.write
        out(f"\nThe sandbox received {len(sandbox.emails)} emails.\n")
        out("Outbox")
        rows = [
            (
                str(e.pk),
                e.org,
                e.status,
                e.recipients[:34],
                str(e.attempts),
                e.last_error_code,
                e.delivery_status,
            )
            for e in OutboundEmail.objects.order_by("pk")
        ]
        out(table(("id", "org", "status", "to", "tries", "last error", "delivery"), rows))
        out("\nFailed sends (one per failed attempt)")
        rows = [
            (
                str(f.email_id),
                f.error_code,
                str(f.http_status or "local"),
                "yes" if f.will_retry else "no",
                shorten(f.suggested_action, 90),
            )
            for f in FailedSend.objects.order_by("pk")
        ]
        out(table(("email", "code", "http", "retry", "suggested action"), rows))
        out("\nDelivery events (signed webhooks from the sandbox, verified and stored)")
        rows = [
            (
                str(d.email_id or "?"),
                d.type,
                d.recipient[:34],
                d.email.delivery_status if d.email else "",
            )
            for d in DeliveryEvent.objects.select_related("email").order_by("email_id", "id")
        ]
        out(table(("email", "event", "recipient", "delivery status"), rows))
        out("\nSuppression list (added by the hard bounce; manage.py mailapi_suppress list)")
        rows = [
            (row.address, row.org or "every org", row.reason, f"#{row.event_id or '-'}")
            for row in Suppression.objects.order_by("address")
        ]
        out(table(("address", "org", "reason", "from event"), rows))
        out("\nUsage today (UTC)")
        now = timezone.now()
        rows = []
        for org in sorted(set(OutboundEmail.objects.values_list("org", flat=True))):
            limits = quota.limits_for(org)
            used = quota.usage(org, now)
            rows.append(
                (
                    org,
                    f"{used['day']} / {limits.daily if limits.daily is not None else '∞'}",
                    f"{used['month']} / {limits.monthly if limits.monthly is not None else '∞'}",
                )
            )
        out(table(("org", "today", "this month"), rows))
        out(
            "\nTo look around in the admin:\n"
            "  cd example_project\n"
            "  ../.venv/bin/python manage.py createsuperuser\n"
            "  ../.venv/bin/python manage.py runserver\n"
            "then open http://127.0.0.1:8000/admin/ and find the emails under “Mail API”."
        )


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])
