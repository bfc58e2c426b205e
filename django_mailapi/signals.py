"""Signals sent as an email moves through the outbox.

- ``message_queued(sender=OutboundEmail, emails=[OutboundEmail, ...])``: rows written by
  the backend, sent inside the transaction that writes them, before dispatch; once per
  task's chunk (at most ``backend.TASK_SIZE`` rows, 1,000; 100 where emails go alone).
- ``message_sent(sender=OutboundEmail, email=OutboundEmail)``: the API accepted it.
- ``send_failed(sender=OutboundEmail, email=OutboundEmail, failure=FailedSend)``: an
  attempt failed; ``failure.will_retry`` says whether another attempt is planned. The
  failures are stored in one multi-row INSERT, so on MySQL (not MariaDB 10.5+), which
  returns no keys from one, ``failure.pk`` is None; its fields are all there.
- ``quota_exceeded(sender=OutboundEmail, email=OutboundEmail, org=str, code=str)``: an
  org was over its daily or monthly quota (ours or the provider's).
- ``delivery_event(sender=DeliveryEvent, event=DeliveryEvent, email=OutboundEmail | None)``:
  a provider's delivery event was stored (in the web process that took the webhook), with
  its email once matched and ``email.delivery_status`` already updated. An event stored
  before its email's id was recorded is sent with ``email=None`` and again, with the
  email, when it is matched (in the worker that recorded the send). Not sent for
  duplicates.
"""

from django.dispatch import Signal

message_queued = Signal()
message_sent = Signal()
send_failed = Signal()
quota_exceeded = Signal()
delivery_event = Signal()
