import datetime as dt
import io

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.utils import timezone

from django_mailapi.backend import EmailBackend
from django_mailapi.models import OutboundEmail

pytestmark = pytest.mark.django_db


def test_mailapi_sweep_reports_how_many_it_dispatched():
    EmailBackend().send_messages([EmailMessage("s", "b", "a@example.com", ["b@example.com"])])
    OutboundEmail.objects.update(next_attempt_at=timezone.now() - dt.timedelta(hours=1))
    out = io.StringIO()
    call_command("mailapi_sweep", stdout=out)
    assert out.getvalue() == "Dispatched 1 email(s).\n"
    out = io.StringIO()
    call_command("mailapi_sweep", stdout=out)
    assert out.getvalue() == "Dispatched 0 email(s).\n"
