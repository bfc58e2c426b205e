"""Errors that django-mailapi raises itself, before, around or instead of an API call.

None of them comes with an HTTP response, so every ``http_status`` is None. Messages
are our own short statements of what happened; actions say what to do about it.
"""

from __future__ import annotations

from .base import Catalog, ErrorSpec, RetryClass

PROVIDER = "mailapi"

_PERMANENT = RetryClass.PERMANENT


def _entry(code: str, message: str, action: str, retry: RetryClass = _PERMANENT) -> ErrorSpec:
    return ErrorSpec(PROVIDER, code, None, message, action, retry)


CATALOG = Catalog(
    PROVIDER,
    [
        _entry(
            "daily_quota_exceeded",
            "The org has used up its daily sending limit.",
            "django-mailapi holds the email and sends it after the next UTC midnight. To send "
            "sooner, raise the org's limit with `manage.py mailapi_quota ORG --daily N` (or "
            "MAILAPI['DAILY_LIMIT'] for every org), then run `manage.py mailapi_retry --org "
            "ORG`.",
            RetryClass.DEFER_DAY,
        ),
        _entry(
            "monthly_quota_exceeded",
            "The org has used up its monthly sending limit.",
            "django-mailapi holds the email until the first of next month, UTC. To send "
            "sooner, raise the org's limit with `manage.py mailapi_quota ORG --monthly N` (or "
            "MAILAPI['MONTHLY_LIMIT'] for every org), then run `manage.py mailapi_retry --org "
            "ORG`.",
            RetryClass.DEFER_MONTH,
        ),
        _entry(
            "quota_too_small",
            "The email has more recipients than the org's daily or monthly limit allows.",
            "Waiting cannot help: the email alone is over the limit. Split it into emails with "
            "fewer recipients, or raise the limit (`manage.py mailapi_quota ORG --daily N`), "
            "then re-queue it (Retry now on its admin page, or `manage.py mailapi_retry ID`).",
        ),
        _entry(
            "org_paused",
            "Sending is paused for this org.",
            "The email is held, not lost. When the org may send again, resume the org with "
            "`manage.py mailapi_quota ORG --resume`, then `mailapi_retry` (for example "
            "`manage.py mailapi_retry --org ORG`) sends what was held.",
            RetryClass.DEFER_DAY,
        ),
        _entry(
            "invalid_from_address",
            "The from address is missing or is not a valid email address.",
            "Give the email a sender written `user@example.com` or `Name <user@example.com>` "
            "(its from_email, or DEFAULT_FROM_EMAIL), then send it again.",
        ),
        _entry(
            "invalid_recipient",
            "A recipient address is not a valid email address.",
            "Correct the address in to, cc, bcc or reply-to (the failed send names it), then "
            "send the email again.",
        ),
        _entry(
            "header_injection",
            "A header value contains a line break.",
            "A subject, address or custom header holds a newline, which could smuggle in "
            "extra headers; it usually comes from user input. Strip line breaks from those "
            "values and send a new email.",
        ),
        _entry(
            "invalid_content",
            "The message body contains characters email cannot carry (NUL).",
            "Remove the NUL (\\x00) characters from the text or HTML body (they usually come "
            "from binary data pasted into a template), then send the email again.",
        ),
        _entry(
            "attachment_too_large",
            "An attachment is larger than the provider accepts.",
            "Compress the attachment, or put the file somewhere reachable and send a link "
            "instead. The limit depends on the provider and, for some, on the plan.",
        ),
        _entry(
            "message_too_large",
            "The email, attachments included, is larger than the provider accepts.",
            "Make the email smaller: trim the HTML, compress or drop attachments, or link to "
            "large files instead of attaching them.",
        ),
        _entry(
            "too_many_recipients",
            "The email has more recipients than the provider takes in one send.",
            "Split the recipients over several emails (Resend takes at most 50 addresses in "
            "`to`), or use send_mass_mail to give each recipient their own email.",
        ),
        _entry(
            "unsupported_feature",
            "The email uses something the provider cannot carry.",
            "The failed send names the feature and the provider (for example inline images "
            "or custom headers). Remove it from the email, or set MAILAPI['PROVIDER'] to a "
            "provider that supports it, then send again.",
        ),
        _entry(
            "connection_error",
            "Could not connect to the API.",
            "django-mailapi retries with backoff under the same idempotency key. If it keeps "
            "failing, check DNS, firewalls and proxies between the workers and the API, and "
            "MAILAPI['BASE_URL'].",
            RetryClass.RETRY,
        ),
        _entry(
            "timeout",
            "The API did not answer within MAILAPI['TIMEOUT'] seconds.",
            "The API may have accepted the email anyway. django-mailapi retries with the same "
            "Idempotency-Key, so providers that honour it do not send twice. If timeouts "
            "recur, raise MAILAPI['TIMEOUT'].",
            RetryClass.RETRY,
        ),
        _entry(
            "invalid_response",
            "The API answered 2xx with a body django-mailapi could not read.",
            "The email may have been accepted. django-mailapi retries with the same "
            "Idempotency-Key, which makes the retry safe where the provider honours it. If it "
            "recurs, check that MAILAPI['BASE_URL'] reaches the API itself and not a proxy or "
            "login page.",
            RetryClass.RETRY,
        ),
        _entry(
            "retries_exhausted",
            "Every attempt failed, up to MAILAPI['MAX_RETRIES'].",
            "The earlier failed sends of this email show the underlying error (its admin "
            "page names it at the top); deal with that, then re-queue the email with Retry "
            "now on that page or `manage.py mailapi_retry ID`. If outages outlast the "
            "retries, raise MAILAPI['MAX_RETRIES'].",
        ),
        _entry(
            "configuration_error",
            "django-mailapi is not configured to send (for example, no API key).",
            "Run `manage.py check` and fix what the mailapi checks report (for example set "
            "MAILAPI['API_KEY']), restart the workers, then re-queue with `mailapi_retry`.",
        ),
        _entry(
            "payload_missing",
            "The email's stored payload was dropped, so it cannot be sent.",
            "Nothing is left to send from this row (its payload was removed, for example with "
            "MAILAPI['KEEP_SENT_PAYLOAD'] = False or by mailapi_purge). Send the email again "
            "from your application.",
        ),
        _entry(
            "invalid_tags",
            "message.tags is not a list of short strings the provider accepts.",
            "Give message.tags as a list of strings of ASCII letters, digits, underscores "
            "and dashes, at most 256 characters each (what Resend and Sendr accept), and "
            "send the email again.",
        ),
        _entry(
            "invalid_metadata",
            "message.metadata is not a dict of string keys and string values the provider accepts.",
            "Give message.metadata as a dict whose keys and values are strings (keys of "
            "ASCII letters, digits, underscores and dashes, at most 256 characters; turn "
            "numbers into strings yourself), and send the email again.",
        ),
        _entry(
            "invalid_send_at",
            "message.send_at is not an aware datetime within a year from now.",
            "Give message.send_at as a timezone-aware datetime (django.utils.timezone.now() "
            "plus a timedelta, for one) no more than 365 days ahead, and send the email "
            "again. A time in the past sends at once.",
        ),
        _entry(
            "missing_to_recipient",
            "The provider's API needs at least one address in to, and this email has only "
            "cc or bcc recipients.",
            "Put at least one address in to. For a mailing whose recipients must not see "
            "each other, send one email per recipient (or put your own address in to and "
            "the others in bcc); Emitlo, which takes one recipient per call, sends every "
            "cc and bcc address its own copy.",
        ),
        _entry(
            "provider_mismatch",
            "The email was queued for one provider, and the workers are now configured "
            "for another.",
            "The email was not sent, so no API key went to the wrong provider. Either set "
            "MAILAPI['PROVIDER'] (or the MAILERS alias's OPTIONS) back to the provider "
            "named in the message and re-queue it (Retry now on its admin page, or "
            "`manage.py mailapi_retry ID`), or "
            "send the email again from your application so it is queued for the new one.",
        ),
        _entry(
            "batch_member_refused",
            "Another email of the same batch was refused before sending, and a batch the "
            "API may already have is only ever sent again whole.",
            "Look at the batch's other emails (same batch key in the admin) for the refusal "
            "that held this one back, fix its cause, then re-queue them together with "
            '`manage.py mailapi_retry ID ...` or the admin\'s "retry now".',
        ),
        _entry(
            "recipient_suppressed",
            "A recipient is on the suppression list (an earlier hard bounce, spam "
            "complaint, unsubscribe or a manual entry), so django-mailapi left them out.",
            "Nothing was sent to the addresses the failed send names; the other recipients, "
            "if any, got the email. If an address works again (a typo fixed, the recipient "
            "asked to be mailed), remove it with `manage.py mailapi_suppress remove ADDR` or "
            "in the admin's Suppressions list, then send the email again from your "
            "application.",
        ),
        _entry(
            "unexpected_error",
            "django-mailapi hit an unexpected error while sending (a bug, not an API answer).",
            "The email is kept and retried with backoff. Look for the traceback in the worker "
            "log under the django_mailapi logger and report it; once fixed, re-queue anything "
            "that failed with `manage.py mailapi_retry --code unexpected_error`.",
            RetryClass.RETRY,
        ),
        _entry(
            "cancelled",
            "The email was cancelled before it was sent.",
            "Someone cancelled it from the admin or a command; nothing needs fixing. If it "
            "should go out after all, send it again from your application.",
        ),
        # After acceptance: the provider's delivery events (webhooks). The email was sent
        # (status "sent"); these say it did not arrive. Never retried by django-mailapi.
        _entry(
            "hard_bounce",
            "The receiving mail server refused the email for good: the address does not "
            "exist or cannot receive mail.",
            "Do not mail this address again: correct it if it is a typo, or ask the "
            "recipient for another. Resend and Emitlo add hard-bounced addresses to their "
            "own suppression lists, and every further send to one counts against your "
            "sending reputation. The failed send's message holds the server's reason.",
        ),
        _entry(
            "soft_bounce",
            "The email bounced for a reason that may pass (mailbox full, message too large, "
            "server unavailable), or the provider could not tell which kind of bounce.",
            "The provider has already tried for a while before reporting it, and "
            "django-mailapi does not resend it. Read the reason in the message: for a full "
            "mailbox or a busy server, send again later; for a message too large, make it "
            "smaller. An address that keeps soft-bouncing should be treated as a hard bounce.",
        ),
        _entry(
            "complaint",
            "The recipient marked the email as spam.",
            "Send this recipient nothing more unless they ask for it: take them off every "
            "list that is not transactional, and make unsubscribing easy. Providers watch "
            "complaint rates and suspend senders whose rate climbs; Resend and Emitlo "
            "suppress the address.",
        ),
        _entry(
            "suppressed",
            "The provider did not send the email: the address is on its suppression list "
            "after an earlier bounce or spam complaint.",
            "The reason (for Resend: previous_bounce or previous_complaint) is in the "
            "message. Check the address with the recipient; only if it works again, remove "
            "it from the provider's suppression list (its dashboard), then send again from "
            "your application.",
        ),
        _entry(
            "delivery_failed",
            "The provider accepted the email, then failed to send it (Resend's email.failed: "
            "for example reached_daily_quota, an invalid recipient, or a domain or API key "
            "problem).",
            "Read the reason in the message. reached_daily_quota: wait for the provider's "
            "quota to reset or raise your plan (and set DAILY_LIMIT below it); a domain or "
            "key problem: fix it in the provider's dashboard. Then send the email again from "
            "your application; mailapi_retry does not resend an email the API accepted.",
        ),
    ],
)
