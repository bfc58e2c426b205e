"""Error catalogs: every documented error of every provider, and our own local errors.

``resolve()`` is the one door in: it returns the documented entry for an error, or,
for a code no catalog knows (an API may add codes at any time, and a custom provider
has no catalog), an entry made up from the HTTP status class, so nothing that records
or shows an error ever has to handle "unknown".

Plain Python on purpose: no Django imports anywhere in this package.
"""

from __future__ import annotations

from . import emitlo, generic, mailapi, resend, sendr
from .base import Catalog, ErrorSpec, RetryClass

__all__ = [
    "CATALOGS",
    "Catalog",
    "ErrorSpec",
    "RetryClass",
    "all_entries",
    "get_catalog",
    "resolve",
    "suggested_action",
]

#: Provider id -> catalog, in the order the error reference lists them.
CATALOGS: dict[str, Catalog] = {
    catalog.provider: catalog
    for catalog in (
        resend.CATALOG,
        sendr.CATALOG,
        generic.CATALOG,
        emitlo.CATALOG,
        mailapi.CATALOG,
    )
}

#: Actions for codes no catalog knows, by HTTP status class.
_TRANSPORT_ACTION = (
    "No HTTP answer came back, so this is a connection or transport problem. "
    "django-mailapi retries with backoff under the same idempotency key; if it keeps "
    "failing, check the network path from the workers to the API and MAILAPI['BASE_URL']."
)
_TIMEOUT_ACTION = (
    "The API answered {status}: it gave up waiting or wants the request later. "
    "django-mailapi retries with backoff under the same idempotency key; nothing to do "
    "unless it keeps happening."
)
_RATE_LIMIT_ACTION = (
    "The API answered 429 with a code this version of django-mailapi does not know; it "
    "means too many requests. django-mailapi waits for Retry-After and retries; if this "
    "recurs, set MAILAPI['RATE_LIMIT'] to your plan's requests per second."
)
_SERVER_ACTION = (
    "The API answered {status} with a code this version of django-mailapi does not know: "
    "a fault on the provider's side. django-mailapi retries with backoff under the same "
    "idempotency key; if it persists, check the provider's status page."
)
_CLIENT_ACTION = (
    "The API answered {status} with a code this version of django-mailapi does not know. "
    "Read the message, fix the request, then re-queue it with mailapi_retry."
)
_SUCCESS_ACTION = (
    "The API answered {status} but reported an error django-mailapi does not know. The "
    "email may have been accepted; django-mailapi retries under the same idempotency key. "
    "Read the message if it recurs."
)
_OTHER_ACTION = (
    "The API answered with the unexpected HTTP status {status}. Check that "
    "MAILAPI['BASE_URL'] points at the API itself, then re-queue with mailapi_retry."
)


def get_catalog(provider: str) -> Catalog | None:
    """The catalog of a provider id (``"resend"``, ..., ``"mailapi"``), or None."""
    return CATALOGS.get(provider)


def all_entries() -> list[ErrorSpec]:
    """Every documented entry: providers in ``CATALOGS`` order, then catalog order."""
    return [entry for catalog in CATALOGS.values() for entry in catalog]


def resolve(provider: str, code: str, http_status: int | None, message: str = "") -> ErrorSpec:
    """The entry for an error as the API (or django-mailapi) reported it.

    Looks the code up in the provider's catalog, telling apart entries that share a
    code and status by ``message``. A local code recorded under a provider (no HTTP
    status) is looked up in the ``mailapi`` catalog. Anything else gets an entry made
    up from the status class: 408, 425, 5xx and no status retry, 429 waits for
    Retry-After, other 4xx are permanent. An empty code becomes ``http_<status>``.
    """
    catalog = get_catalog(provider)
    if catalog is not None and code in catalog:
        entry = catalog.match(code, http_status, message)
        if entry is not None:
            return entry
    if http_status is None and code in mailapi.CATALOG:
        entry = mailapi.CATALOG.get(code)
        if entry is not None:
            return entry
    retry, action = _by_status(http_status)
    if not code:
        code = f"http_{http_status}" if http_status is not None else "unknown_error"
    return ErrorSpec(provider, code, http_status, message, action, retry)


def suggested_action(provider: str, code: str, http_status: int | None, message: str = "") -> str:
    """Our suggested action for an error; never empty."""
    return resolve(provider, code, http_status, message).action


def _by_status(http_status: int | None) -> tuple[RetryClass, str]:
    if http_status is None:
        return RetryClass.RETRY, _TRANSPORT_ACTION
    if http_status in (408, 425):
        return RetryClass.RETRY, _TIMEOUT_ACTION.format(status=http_status)
    if http_status == 429:
        return RetryClass.RETRY_AFTER, _RATE_LIMIT_ACTION
    if http_status >= 500:
        return RetryClass.RETRY, _SERVER_ACTION.format(status=http_status)
    if http_status >= 400:
        return RetryClass.PERMANENT, _CLIENT_ACTION.format(status=http_status)
    if 200 <= http_status < 300:
        return RetryClass.RETRY, _SUCCESS_ACTION.format(status=http_status)
    return RetryClass.PERMANENT, _OTHER_ACTION.format(status=http_status)
