"""Sendr's documented errors (https://docs.sendr.dev/docs/errors).

Sendr's page gives a cause rather than the API's message, so the cause is the message
here. Its unnamed 500 entry is ``internal_error``, the code Sendr's OpenAPI spec uses;
``forbidden`` also comes from that spec (it documents no cause, so its message is the
spec's description of the 403 response). The actions are ours.
"""

from __future__ import annotations

from .base import Catalog, Entries, RetryClass

PROVIDER = "sendr"
DOCS_URL = "https://docs.sendr.dev/docs/errors"


_entry = Entries(PROVIDER, DOCS_URL)


CATALOG = Catalog(
    PROVIDER,
    [
        _entry(
            "unauthorized",
            401,
            "The Authorization header is missing, malformed, or the API key does not exist.",
            "Requests must carry `Authorization: Bearer <api_key>`. Check that "
            "MAILAPI['API_KEY'] holds the whole key with no stray spaces or characters, and "
            "that the key is still listed under API Keys in the Sendr dashboard.",
        ),
        _entry(
            "expired_key",
            401,
            "The API key has passed its expiration date.",
            "This key has expired. Make a new one in the Sendr dashboard, update the "
            "environment variable MAILAPI['API_KEY'] is read from, restart the workers and "
            "re-queue with mailapi_retry.",
        ),
        _entry(
            "insufficient_scope",
            403,
            "The API key's scope does not have permission to call this endpoint.",
            "The key's scope is too narrow for this call (full_access > sending_access > "
            "read_only). Sending needs sending_access or more, creating or deleting needs "
            "full_access, reading needs read_only or more; create a key with the scope "
            "required.",
        ),
        _entry(
            "forbidden",
            403,
            "Insufficient API key scope",
            "The key may not call this endpoint. Use a key whose scope covers it; sending "
            "email takes at least sending_access.",
        ),
        _entry(
            "domain_not_verified",
            403,
            "The from address uses a domain that has not been verified with Sendr.",
            "Add the sender's domain under Domains in the Sendr dashboard, publish its SPF, "
            "DKIM and DMARC records, press Verify and give DNS time to propagate; then "
            "re-queue with mailapi_retry. In development, a test-mode API key avoids this.",
        ),
        _entry(
            "plan_limit_reached",
            403,
            "Your plan's resource limit has been reached (e.g., max domains, API keys, "
            "templates, or webhooks).",
            "The plan allows no more of this kind of resource. Remove domains, keys, "
            "templates or webhooks you no longer use, or move to a bigger plan.",
        ),
        _entry(
            "payment_required",
            402,
            "Your account is on a paid plan and has exceeded the monthly email quota, but no "
            "valid payment method is on file. Overage billing requires a payment method.",
            "Sending past the monthly quota is billed as overage, which needs a payment "
            "method. Add one under Billing in the Sendr dashboard, then re-queue with "
            "mailapi_retry.",
        ),
        _entry(
            "billing_suspended",
            402,
            "Your account has been suspended due to a failed payment that was not resolved.",
            "Sendr suspended the account over an unpaid charge. Update the payment method "
            "under Billing; once a payment goes through the account comes back on its own, "
            "and mailapi_retry re-queues the held emails.",
        ),
        _entry(
            "daily_limit_reached",
            429,
            "Your organization has hit the daily email sending limit for your plan.",
            "The plan's daily limit is used up (Free: 100 a day; paid plans have none). "
            "django-mailapi defers the email to the next UTC day, when Sendr's counter "
            "resets at midnight UTC. Upgrade to a paid plan to send without a daily limit.",
            RetryClass.DEFER_DAY,
        ),
        _entry(
            "monthly_limit_reached",
            429,
            "Your organization has hit the monthly email quota on a plan without overage "
            "support (Free plan).",
            "The Free plan's monthly quota is used up. django-mailapi defers the email to "
            "the first of next month, UTC (Sendr resets at its billing period). To keep "
            "sending, upgrade to Pro or Business, which bill overage, then run mailapi_retry.",
            RetryClass.DEFER_MONTH,
        ),
        _entry(
            "overage_limit_reached",
            429,
            "Your organization has hit the overage cap for this billing period. The cap is 3\u00d7 "
            "the monthly quota.",
            "Overage is capped at three times the monthly quota, and that cap is reached. "
            "django-mailapi defers the email to next month, UTC; for a temporary raise before "
            "then, ask Sendr support and run mailapi_retry once it is granted.",
            RetryClass.DEFER_MONTH,
        ),
        _entry(
            "rate_limited",
            429,
            "Too many API requests in a short period.",
            "The key made too many requests in a short window. django-mailapi already waits "
            "for Retry-After and retries with backoff; if this recurs, set "
            "MAILAPI['RATE_LIMIT'] to your plan's requests per second (see Sendr's Rate "
            "Limits guide).",
            RetryClass.RETRY_AFTER,
        ),
        _entry(
            "validation_error",
            422,
            "The request body failed schema validation.",
            "The failed send's details hold `errors`, one item per rejected field with its "
            "path and the reason. Correct those fields, then re-queue with mailapi_retry.",
        ),
        _entry(
            "payload_too_large",
            413,
            "The request body exceeds the size limit.",
            "The email is over Sendr's limits (HTML 5 MB, text 1 MB, about 40 MB in all with "
            "attachments). Trim the HTML, compress the attachments, or link to big files "
            "instead of attaching them.",
        ),
        _entry(
            "not_found",
            404,
            "The requested resource does not exist or belongs to a different organization.",
            "Check the ID: it needs the prefix of its kind (em_ for emails, dom_ for domains "
            "and so on) and must belong to your own organization, since IDs are scoped to "
            "one organization.",
        ),
        _entry(
            "internal_error",
            500,
            "An internal server error occurred on Sendr's side.",
            "A passing fault at Sendr. django-mailapi retries with exponential backoff; if it "
            "goes on, look for an incident on status.sendr.dev.",
            RetryClass.RETRY,
        ),
    ],
)
