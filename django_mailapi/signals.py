"""Signals sent as an email moves through the outbox.

- ``message_queued(sender=OutboundEmail, emails=[OutboundEmail, ...])``: rows written by
  the backend, sent inside the transaction that writes them, before dispatch; once per
  task's chunk (at most ``backend.TASK_SIZE`` rows, 1,000; 100 where emails go alone).
- ``message_sent(sender=OutboundEmail, email=OutboundEmail)``: the API accepted it.
- ``send_failed(sender=OutboundEmail, email=OutboundEmail, failure=FailedSend)``: an
  attempt failed; ``failure.will_retry`` says whether another attempt is planned.
- ``quota_exceeded(sender=OutboundEmail, email=OutboundEmail, org=str, code=str)``: an
  org was over its daily or monthly quota (ours or the provider's).
"""

from django.dispatch import Signal

message_queued = Signal()
message_sent = Signal()
send_failed = Signal()
quota_exceeded = Signal()
