"""``manage.py mailapi_sendtest --to ADDR``: one email through the whole pipeline."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.management.base import CommandError, CommandParser

from django_mailapi.backend import EmailBackend
from django_mailapi.management.arguments import MailapiCommand, positive_number
from django_mailapi.models import FailedSend, OutboundEmail, Status

SETTLED = (Status.SENT, Status.FAILED, Status.DEFERRED, Status.CANCELLED)


class SendTest:
    """Send one email through the configured pipeline and wait for its outcome."""

    def __init__(self, to: str, org: str | None, timeout: float) -> None:
        self.to, self.org, self.timeout = to, org, timeout

    def send(self) -> OutboundEmail:
        message = EmailMessage(
            "django-mailapi test email",
            "This is a test email sent by `manage.py mailapi_sendtest`.",
            settings.DEFAULT_FROM_EMAIL,
            [self.to],
        )
        if self.org:
            message.org = self.org  # type: ignore[attr-defined]
        backend = EmailBackend()
        before = OutboundEmail.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        backend.send_messages([message])
        return OutboundEmail.objects.filter(pk__gt=before, recipients=self.to).latest("pk")

    def wait(self, email: OutboundEmail) -> OutboundEmail:
        deadline = time.monotonic() + self.timeout
        while email.status not in SETTLED and time.monotonic() < deadline:
            time.sleep(0.2)
            email.refresh_from_db()
        return email


class Command(MailapiCommand):
    help = "Send one test email through EMAIL_BACKEND, a worker and the API, and report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", required=True, help="recipient address")
        parser.add_argument("--org", help="org to send as (default: DEFAULT_ORG)")
        parser.add_argument(
            "--timeout",
            type=positive_number("--timeout", "seconds"),
            default=30.0,
            help="seconds to wait for a worker (30)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        test = SendTest(options["to"], options["org"], options["timeout"])
        email = test.send()
        self.stdout.write(f"Queued email #{email.pk} for {email.recipients} (org {email.org}).")
        email = test.wait(email)
        if email.status == Status.SENT:
            self.stdout.write(
                f"Sent: the API accepted it as {email.provider_message_id} "
                f"after {email.attempts} attempt(s)."
            )
            return
        if email.status in (Status.QUEUED, Status.SENDING):
            raise CommandError(
                f"Email #{email.pk} is still {email.status} after {test.timeout:g}s: is a "
                "Celery worker running and consuming "
                f"{EmailBackend().conf.QUEUE or 'the default queue'}?"
            )
        failure = FailedSend.objects.filter(email=email).order_by("-pk").first()
        detail = (
            f"{failure.error_code} ({failure.http_status or 'local'}): {failure.message}\n"
            f"Suggested action: {failure.suggested_action}"
            if failure
            else email.last_error_code
        )
        raise CommandError(f"Email #{email.pk} is {email.status}: {detail}")
