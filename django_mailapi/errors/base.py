"""The shape of an error catalog entry and of a catalog.

This package is plain Python on purpose: the sandbox server, the providers and the
admin all read it, and none of them should need Django set up to do so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum


class RetryClass(str, Enum):
    """What the outbox does after an error of this kind."""

    #: Transient: try again with exponential backoff and jitter.
    RETRY = "retry"
    #: Transient, and the API says when: wait for Retry-After / ratelimit-reset.
    RETRY_AFTER = "retry_after"
    #: A daily quota is used up: defer to the next UTC midnight.
    DEFER_DAY = "defer_day"
    #: A monthly quota is used up: defer to the first of next month (UTC).
    DEFER_MONTH = "defer_month"
    #: Retrying cannot help: record it and stop.
    PERMANENT = "permanent"

    @property
    def is_transient(self) -> bool:
        return self in (RetryClass.RETRY, RetryClass.RETRY_AFTER)

    @property
    def is_quota(self) -> bool:
        return self in (RetryClass.DEFER_DAY, RetryClass.DEFER_MONTH)


@dataclass(frozen=True)
class ErrorSpec:
    """One documented error: what the API says and what we suggest doing about it."""

    provider: str
    code: str
    #: None for local codes that never come with an HTTP response.
    http_status: int | None
    #: The API's own message, as its error page gives it.
    message: str
    #: Our suggested action, in our own words, faithful to the provider's page.
    action: str
    retry: RetryClass
    docs_url: str = ""


@dataclass(frozen=True)
class Entries:
    """Makes one provider's catalog entries, so a catalog names its provider and its
    documentation link once: ``entry = Entries("sendr", DOCS_URL)``, then
    ``entry(code, http_status, message, action)``; an entry is permanent unless it says."""

    provider: str
    docs_url: str = ""

    def __call__(
        self,
        code: str,
        http_status: int | None,
        message: str,
        action: str,
        retry: RetryClass = RetryClass.PERMANENT,
        docs_url: str | None = None,
    ) -> ErrorSpec:
        link = self.docs_url if docs_url is None else docs_url
        return ErrorSpec(self.provider, code, http_status, message, action, retry, link)


class Catalog:
    """All documented errors of one provider, looked up by (code, HTTP status)."""

    def __init__(self, provider: str, entries: Iterable[ErrorSpec]) -> None:
        self.provider = provider
        self.entries: tuple[ErrorSpec, ...] = tuple(entries)
        self._by_key: dict[tuple[str, int | None], ErrorSpec] = {}
        self._by_code: dict[str, ErrorSpec] = {}
        for entry in self.entries:
            if entry.provider != provider:
                raise ValueError(f"{entry.code!r} belongs to {entry.provider!r}, not {provider!r}")
            self._by_key.setdefault((entry.code, entry.http_status), entry)
            self._by_code.setdefault(entry.code, entry)

    def __iter__(self) -> Iterator[ErrorSpec]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str, http_status: int | None = None) -> ErrorSpec | None:
        """The entry for this code at this status, else the first entry for the code."""
        return self._by_key.get((code, http_status)) or self._by_code.get(code)

    def candidates(self, code: str, http_status: int | None = None) -> list[ErrorSpec]:
        """Every entry documented for this code at this status, in catalog order."""
        return [e for e in self.entries if e.code == code and e.http_status == http_status]

    def match(
        self, code: str, http_status: int | None = None, message: str = ""
    ) -> ErrorSpec | None:
        """Like :meth:`get`, but tells apart entries that share a (code, status) by message.

        Some APIs reuse one code for several situations (Resend answers 403
        ``validation_error`` for "only testing emails", "domain not verified" and
        "domain registered already"), and each wants a different action. The API's
        message is compared with each documented message; the entry whose
        distinctive words it contains the largest share of wins. Ties, and messages
        that share no distinctive word with any entry, fall back to :meth:`get`.
        """
        found = self.candidates(code, http_status)
        if len(found) < 2 or not message:
            return self.get(code, http_status)
        return best_match(found, message) or self.get(code, http_status)


_WORD = re.compile(r"[a-z0-9]+")
#: Backticked parts of a documented message are placeholders (`domain.com`,
#: `youremail@domain.com`) that the real message replaces with the user's values.
_PLACEHOLDER = re.compile(r"`[^`]*`")


def message_words(message: str, *, drop_placeholders: bool = False) -> frozenset[str]:
    """The lower-case words of a message, for comparing an API message with a documented one."""
    if drop_placeholders:
        message = _PLACEHOLDER.sub(" ", message)
    return frozenset(_WORD.findall(message.lower()))


def best_match(entries: Iterable[ErrorSpec], message: str) -> ErrorSpec | None:
    """The entry whose documented message best matches ``message``, or None if none does.

    Words that every entry's message contains cannot tell the entries apart, so
    they are ignored. The score of an entry is the share of its remaining words
    found in ``message``; the first entry with the highest positive score wins,
    unless another entry scores the same.
    """
    entries = list(entries)
    vocabularies = [message_words(e.message, drop_placeholders=True) for e in entries]
    if not vocabularies:
        return None
    common = frozenset.intersection(*vocabularies)
    said = message_words(message)
    scores: list[float] = []
    for words in vocabularies:
        distinctive = words - common
        scores.append(len(distinctive & said) / len(distinctive) if distinctive else 0.0)
    best = max(scores)
    if best <= 0 or scores.count(best) > 1:
        return None
    return entries[scores.index(best)]
