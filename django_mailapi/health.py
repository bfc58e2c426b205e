"""A check for django-health-check 4 (``pip install "django-mailapi[health]"``).

List it among the checks of django-health-check's view::

    path("ht/", HealthCheckView.as_view(checks=[
        "health_check.checks.Database",
        ("django_mailapi.health.MailAPI", {"max_age": 600}),
    ]))

It reads the same figures as ``manage.py mailapi_status`` and fails, as that command's
``--max-age`` does, when the oldest due email has waited longer than ``max_age``
seconds: no worker is taking email from the outbox. A waiting email that is not yet due
(deferred by quota, scheduled for later) is not stuck and does not count. Failed sends
do not fail it: they are the API's answers, recorded and retried, not a sign that the
outbox stopped (alert on them from ``mailapi_status --format json``; README, Monitoring).

This module imports django-health-check; nothing else in django-mailapi does, so it is
not a dependency unless this check is used.
"""

from __future__ import annotations

import dataclasses

from django.db import DatabaseError, connections, router
from django.utils import timezone
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from .models import OutboundEmail
from .status import StatusReport


@dataclasses.dataclass
class MailAPI(HealthCheck):  # type: ignore[misc]  # django-health-check has no types
    """Is mail flowing? Unavailable when the oldest due email waited too long."""

    #: Seconds the oldest due email may wait (ten sweeps at the 15 s beat schedule).
    max_age: int = 600

    def run(self) -> None:
        # django-health-check runs a check in a thread of its own: close the connection
        # this opened there, as its database check does, rather than leave it open.
        connection = connections[router.db_for_read(OutboundEmail)]
        opened_here = connection.connection is None
        try:
            report = StatusReport.read(timezone.now())
        except DatabaseError as exc:
            raise ServiceUnavailable(f"the outbox cannot be read ({type(exc).__name__})") from exc
        finally:
            if opened_here:
                connection.close()
        waited = report.oldest_due_seconds
        if waited is not None and waited > self.max_age:
            raise ServiceUnavailable(
                f"the oldest due email has waited {waited} s, longer than {self.max_age} s: "
                "no worker is taking email from the outbox"
            )
