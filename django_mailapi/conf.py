"""The MAILAPI settings: each declared once, read lazily.

Every key of ``settings.MAILAPI`` is one :class:`Setting` on :class:`MailapiSettings`,
which holds together its default, the type the README shows, a one-line description,
the test a configured value must pass and the system check id that reports a value
failing it. ``DEFAULTS``, the typed attributes, the system checks (``checks.py``) and
the README's settings and checks tables (``tests/readme.py`` writes them, a test
compares) all come from these declarations, so a new setting is added in one place.

Nothing is cached: every attribute reads Django's settings at the moment it is used,
so ``override_settings(MAILAPI=...)`` works in tests without any reset.

Options can also come from a Django 6.1 ``MAILERS`` entry's ``OPTIONS`` (passed to the
backend as keyword arguments, in either case: ``api_key`` or ``API_KEY``). Those
override ``MAILAPI`` for the messages sent through that mailer; the worker finds them
again by the mailer's alias, which is stored on the row (the key itself never is).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, overload
from urllib.parse import urlparse

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from .exceptions import ImproperlyConfigured
from .providers import resolve_provider_class

T = TypeVar("T")

QUOTA_UNITS = ("recipient", "message")
#: What may add an address to the suppression list on its own (SUPPRESS_ON).
SUPPRESS_REASONS = ("hard_bounce", "complaint")
ON_QUOTA_EXCEEDED_CHOICES = ("defer", "fail")


# --- what a configured value must be ---------------------------------------------------
def _is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_positive_int(value: Any) -> bool:
    return _is_int(value, 1)


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or test(value)


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda value: value in choices


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _is_importable_callable(value: Any) -> bool:
    if callable(value):
        return True
    if not isinstance(value, str):
        return False
    try:
        return callable(import_string(value))
    except ImportError:
        return False


def _is_provider(value: Any) -> bool:
    try:
        resolve_provider_class(value)
    except Exception:  # a class whose module fails to import is as wrong as a missing one
        return False
    return True


# --- how a value is read ---------------------------------------------------------------
def _is_address_list(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(item, str) and "@" in item for item in value)
    )


def _addresses(value: Any) -> list[str] | None:
    return [str(item) for item in value] if value else None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_float(value: Any) -> float | None:
    return float(value) if value else None


def _optional_str(value: Any) -> str | None:
    return str(value) if value else None


def _url(value: Any) -> str | None:
    return str(value).rstrip("/") if value else None


def _is_secret_or_secrets(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(item, str) and item for item in value)
    )


def _is_reason_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(item in SUPPRESS_REASONS for item in value)


def _reasons(value: Any) -> frozenset[str]:
    return frozenset(str(item) for item in value or ())


def _secrets(value: Any) -> list[str]:
    """WEBHOOK_SECRET as a list: one secret, several, or none."""
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value if item]


def _batch_size(value: Any) -> int:
    return max(1, int(value))


def _function(value: Any) -> Callable[..., Any] | None:
    """A callable, or a dotted path to one imported now; None or "" for none."""
    if value is None or value == "":
        return None
    found: object = value
    if isinstance(value, str):
        try:
            found = import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"Cannot import {value!r}: {exc}", code="configuration_error"
            ) from exc
    if not callable(found):
        raise ImproperlyConfigured(f"{value!r} is not callable.", code="configuration_error")
    return found


class Setting(Generic[T]):
    """One MAILAPI key: its default, README entry, validation and system check.

    On :class:`MailapiSettings` it is a descriptor: ``conf.TIMEOUT`` reads
    ``MAILAPI["TIMEOUT"]`` (or the default) and returns it through ``read``.
    """

    name: str

    def __init__(
        self,
        default: Any,
        *,
        read: Callable[[Any], T],
        type: str,
        doc: str,
        check_id: str,
        valid: Callable[[Any], bool],
        expect: str,
        hint: str,
        required_unless: str | None = None,
    ) -> None:
        self.default = default
        self.read = read
        #: The type as the README names it.
        self.type = type
        #: What the setting does, in one line (the README's last column).
        self.doc = doc
        self.check_id = check_id
        #: Whether a configured value is acceptable (it is given the raw value).
        self.valid = valid
        #: What the value must be: "MAILAPI['X'] must be <expect>." in the check message.
        self.expect = expect
        self.hint = hint
        #: For a required setting: the other key that makes it optional when set.
        self.required_unless = required_unless

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Setting[T]: ...

    @overload
    def __get__(self, obj: MailapiSettings, owner: type) -> T: ...

    def __get__(self, obj: MailapiSettings | None, owner: type) -> Setting[T] | T:
        if obj is None:
            return self
        return self.read(obj.get(self.name))

    @property
    def required(self) -> bool:
        return self.required_unless is not None

    def problem(self, config: Mapping[str, Any]) -> str | None:
        """What is wrong with this key in ``config`` (a raw MAILAPI dict), or None."""
        if (
            self.required_unless is not None
            and not config.get(self.name)
            and not config.get(self.required_unless)
        ):
            return f"MAILAPI['{self.name}'] is not set."
        if self.name in config and not self.valid(config[self.name]):
            return f"MAILAPI['{self.name}'] must be {self.expect}."
        return None

    @property
    def problem_summary(self) -> str:
        """The README's "what is wrong" entry for this setting's check id."""
        if self.required_unless is not None:
            return f"no `{self.name}` (and no `{self.required_unless}`), or it is not {self.expect}"
        return f"`{self.name}` is not {self.expect}"


class MailapiSettings:
    """Read-only view of the MAILAPI setting (plus optional per-mailer overrides).

    The declarations below are in the README's order.
    """

    PROVIDER = Setting(
        "resend",
        read=str,
        type="str",
        doc="`resend`, `sendr`, `emitlo`, `generic`, or a dotted path to a `Provider` subclass",
        check_id="mailapi.E002",
        valid=_is_provider,
        expect="a known provider or an importable `Provider` subclass",
        hint="Use 'resend', 'sendr', 'emitlo', 'generic' or a dotted path to a subclass of "
        "django_mailapi.providers.base.Provider.",
    )
    API_KEY = Setting(
        None,
        read=_optional_str,
        type="str",
        doc="the provider's API key; never stored in the database",
        check_id="mailapi.E001",
        valid=_optional(lambda value: isinstance(value, str)),
        expect="a string",
        hint="Set MAILAPI['API_KEY'] to your provider's API key, read from the environment "
        "(e.g. env('MAILAPI_API_KEY')), or set an API_KEY_RESOLVER.",
        required_unless="API_KEY_RESOLVER",
    )
    API_KEY_RESOLVER = Setting(
        None,
        read=_function,
        type="dotted path / callable",
        doc="`callable(org) -> key` for projects with several provider accounts",
        check_id="mailapi.E016",
        valid=_optional(_is_importable_callable),
        expect="a callable or an importable dotted path to one",
        hint="Point it at a function taking an org name and returning an API key.",
    )
    BASE_URL = Setting(
        None,
        read=_url,
        type="str",
        doc="`None` = the provider's public URL; point it at the sandbox in development",
        check_id="mailapi.E003",
        valid=_optional(_is_http_url),
        expect="an http(s) URL",
        hint="Set it to the API's base URL, e.g. 'https://api.resend.com', or None for the "
        "provider's public URL.",
    )
    TIMEOUT = Setting(
        10.0,
        read=float,
        type="float",
        doc="seconds per HTTP request",
        check_id="mailapi.E005",
        valid=_is_positive_number,
        expect="a positive number of seconds",
        hint="Use a float such as 10.0.",
    )
    DEFAULT_ORG = Setting(
        "default",
        read=str,
        type="str",
        doc="org of messages nothing else assigns",
        check_id="mailapi.E006",
        valid=lambda value: isinstance(value, str) and 0 < len(value) <= 100,
        expect="a string of 1 to 100 characters",
        hint="Use a short org name such as 'default'.",
    )
    ORG_RESOLVER = Setting(
        None,
        read=_function,
        type="dotted path / callable",
        doc="`callable(message) -> str | None`",
        check_id="mailapi.E007",
        valid=_optional(_is_importable_callable),
        expect="a callable or an importable dotted path to one",
        hint="Point it at a function taking an EmailMessage and returning an org name or None.",
    )
    DAILY_LIMIT = Setting(
        None,
        read=_optional_int,
        type="int",
        doc="default cap per org per UTC day; `None` = unlimited",
        check_id="mailapi.E008",
        valid=_optional(_is_int),
        expect="`None` or a non-negative integer",
        hint="Use None for no daily cap, or a number of units per UTC day.",
    )
    MONTHLY_LIMIT = Setting(
        None,
        read=_optional_int,
        type="int",
        doc="default cap per org per UTC month",
        check_id="mailapi.E009",
        valid=_optional(_is_int),
        expect="`None` or a non-negative integer",
        hint="Use None for no monthly cap, or a number of units per UTC month.",
    )
    QUOTA_UNIT = Setting(
        "recipient",
        read=str,
        type="str",
        doc='`"recipient"` counts to+cc+bcc (as Resend does); `"message"` counts one per email',
        check_id="mailapi.E010",
        valid=_one_of(*QUOTA_UNITS),
        expect="`recipient` or `message`",
        hint="'recipient' counts to+cc+bcc as Resend does; 'message' counts one per email.",
    )
    ON_QUOTA_EXCEEDED = Setting(
        "defer",
        read=str,
        type="str",
        doc='`"defer"` until the period resets, or `"fail"`',
        check_id="mailapi.E011",
        valid=_one_of(*ON_QUOTA_EXCEEDED_CHOICES),
        expect="`defer` or `fail`",
        hint="'defer' waits for the next UTC day or month; 'fail' records a failure at once.",
    )
    MAX_RETRIES = Setting(
        8,
        read=int,
        type="int",
        doc="retries of transient errors before `retries_exhausted`",
        check_id="mailapi.E012",
        valid=_is_int,
        expect="a non-negative integer",
        hint="Use a small number such as 8.",
    )
    QUEUE = Setting(
        None,
        read=_optional_str,
        type="str",
        doc="Celery queue for send tasks; `None` = the default queue",
        check_id="mailapi.E013",
        valid=_optional(lambda value: isinstance(value, str) and value != ""),
        expect="`None` or a queue name",
        hint="Use None for Celery's default queue, or the name your workers consume (-Q).",
    )
    BATCH_SIZE = Setting(
        100,
        read=_batch_size,
        type="int",
        doc="emails per API call where the provider has a batch endpoint (Resend, Sendr); "
        "1 = one request per email",
        check_id="mailapi.E014",
        valid=lambda value: _is_int(value, 1) and value <= 100,
        expect="an integer from 1 to 100",
        hint="Use 100 (the batch endpoints' maximum) or 1 to send one email per request.",
    )
    RATE_LIMIT = Setting(
        None,
        read=_optional_float,
        type="float",
        doc="API requests per second shared by all workers; `None` = off",
        check_id="mailapi.E015",
        valid=_optional(_is_positive_number),
        expect="`None` or a positive number of requests per second",
        hint="Use your plan's limit, e.g. 5 for Resend's default.",
    )
    CHECK_QUOTA_ON_ENQUEUE = Setting(
        False,
        read=bool,
        type="bool",
        doc="raise `QuotaExceeded` in `send_mail` when the org is already over",
        check_id="mailapi.E017",
        valid=_is_bool,
        expect="a boolean",
        hint="Use True or False.",
    )
    KEEP_SENT_PAYLOAD = Setting(
        True,
        read=bool,
        type="bool",
        doc="`False` drops an email's body once the API accepted it",
        check_id="mailapi.E018",
        valid=_is_bool,
        expect="a boolean",
        hint="Use True or False.",
    )
    WEBHOOK_SECRET = Setting(
        None,
        read=_secrets,
        type="str / list of str",
        doc="the signing secret(s) of your providers' webhooks (Resend's `whsec_…`); a "
        "request is accepted if any one verifies it; `None` = the webhook endpoints answer 404",
        check_id="mailapi.E025",
        valid=_optional(_is_secret_or_secrets),
        expect="`None`, a non-empty string or a list of non-empty strings",
        hint="Set it to the signing secret your provider shows for the endpoint, read from "
        "the environment (e.g. env('MAILAPI_WEBHOOK_SECRET')); a list while rotating.",
    )
    WEBHOOK_TOLERANCE_SECONDS = Setting(
        300,
        read=int,
        type="int",
        doc="how far a webhook's signed timestamp may be from now, either way, before the "
        "request is refused (401)",
        check_id="mailapi.E026",
        valid=_is_positive_int,
        expect="a positive whole number of seconds",
        hint="Remove it to use the default (300, as Svix's own libraries use).",
    )
    SUPPRESS_ON = Setting(
        ["hard_bounce", "complaint"],
        read=_reasons,
        type="list of str",
        doc="delivery events that add their address to the suppression list: a hard bounce "
        "for every org, a complaint for the complaining email's org (a provider-side "
        "suppression counts as the bounce or complaint it names); `[]` = only rows added by "
        "hand",
        check_id="mailapi.E027",
        valid=_is_reason_list,
        expect='a list of `"hard_bounce"` and/or `"complaint"`',
        hint='Use ["hard_bounce", "complaint"] (the default), one of them, or [] to add '
        "suppressions only by hand (mailapi_suppress, the admin).",
    )
    LEASE_SECONDS = Setting(
        30,
        read=int,
        type="int",
        doc="how long a worker's claim on an email lasts before another may take it; a live "
        "worker renews it before each API request when less than half (and at least "
        "`TIMEOUT` + 5 s) is left, so a long task keeps its emails and a dead worker's are "
        "free again within this time",
        check_id="mailapi.E019",
        valid=_is_positive_int,
        expect="a positive whole number of seconds",
        hint="Remove it to use the default (30).",
    )
    SWEEP_AFTER_SECONDS = Setting(
        30,
        read=int,
        type="int",
        doc="a due email still waiting this long is re-dispatched by the sweeper",
        check_id="mailapi.E020",
        valid=_is_positive_int,
        expect="a positive whole number of seconds",
        hint="Remove it to use the default (30).",
    )
    RETRY_BASE_DELAY = Setting(
        2.0,
        read=float,
        type="float",
        doc="first retry delay in seconds; doubles per attempt, with jitter",
        check_id="mailapi.E022",
        valid=_is_positive_number,
        expect="a positive number of seconds",
        hint="Remove it to use the default (2.0).",
    )
    RETRY_MAX_DELAY = Setting(
        900.0,
        read=float,
        type="float",
        doc="cap on one retry delay",
        check_id="mailapi.E023",
        valid=_is_positive_number,
        expect="a positive number of seconds",
        hint="Remove it to use the default (900.0).",
    )
    MAX_ETA_SECONDS = Setting(
        1500,
        read=int,
        type="int",
        doc="longer waits are left to the sweeper instead of a Celery countdown (kept under "
        "the broker's redelivery limits: Redis's visibility timeout, RabbitMQ's 30-minute "
        "consumer_timeout)",
        check_id="mailapi.E021",
        valid=_is_positive_int,
        expect="a positive whole number of seconds",
        hint="Remove it to use the default (1500).",
    )
    OVERRIDE_RECIPIENTS = Setting(
        None,
        read=_addresses,
        type="list of str",
        doc="staging: every email goes to these addresses instead (cc and bcc dropped; the "
        "original recipients stay on the row); `manage.py check` reports it (mailapi.I001)",
        check_id="mailapi.E024",
        valid=_optional(_is_address_list),
        expect="None or a non-empty list of email addresses",
        hint='Use a list such as ["qa@example.com"], or remove it.',
    )

    def __init__(self, overrides: Mapping[str, Any] | None = None, mailer: str = "") -> None:
        self._overrides = {k.upper(): v for k, v in (overrides or {}).items()}
        self.mailer = mailer

    def raw(self) -> dict[str, Any]:
        """The user's MAILAPI dict merged with overrides (no defaults)."""
        user = getattr(django_settings, "MAILAPI", None) or {}
        if not isinstance(user, Mapping):
            raise ImproperlyConfigured(
                "settings.MAILAPI must be a dict.", code="configuration_error"
            )
        merged = dict(user)
        merged.update(self._overrides)
        return merged

    def get(self, name: str) -> Any:
        """The raw value of ``name`` (as configured, or its default)."""
        raw = self.raw()
        return raw[name] if name in raw else DEFAULTS[name]

    def api_key_for(self, org: str) -> str:
        """The API key to use for ``org``: the resolver's answer, else API_KEY."""
        resolver = self.API_KEY_RESOLVER
        key = resolver(org) if resolver is not None else None
        key = key or self.API_KEY
        if not key:
            raise ImproperlyConfigured(
                "No API key: set MAILAPI['API_KEY'] (or an API_KEY_RESOLVER that "
                f"returns a key for org {org!r}).",
                code="configuration_error",
            )
        return str(key)


#: Every setting, by name, in the order declared.
SETTINGS: dict[str, Setting[Any]] = {
    name: value for name, value in vars(MailapiSettings).items() if isinstance(value, Setting)
}

#: Each setting's default.
DEFAULTS: dict[str, Any] = {name: setting.default for name, setting in SETTINGS.items()}


def mailer_options(alias: str) -> dict[str, Any]:
    """OPTIONS of a Django 6.1 MAILERS entry, or {} when there is none."""
    if not alias:
        return {}
    mailers = getattr(django_settings, "MAILERS", None) or {}
    entry = mailers.get(alias) or {}
    return dict(entry.get("OPTIONS") or {})


def get_settings(mailer: str = "") -> MailapiSettings:
    """Settings for messages sent through ``mailer`` (a MAILERS alias, or "")."""
    return MailapiSettings(mailer_options(mailer), mailer=mailer)


#: The settings as configured in MAILAPI; read lazily on every attribute access.
mailapi_settings = MailapiSettings()
