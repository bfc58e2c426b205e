"""The error catalogs against the seed pages they were written from.

The seed pages are read from tests/fixtures/seeds (copies of ../shared/seeds, so the
tests run on a clean clone); every code on a page must be in its catalog. No database.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from django_mailapi import errors
from django_mailapi.errors import (
    CATALOGS,
    Catalog,
    ErrorSpec,
    RetryClass,
    all_entries,
    get_catalog,
    resolve,
    suggested_action,
)
from django_mailapi.errors import resend as resend_errors

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "fixtures" / "seeds"
SHARED_SEEDS = HERE.parents[1] / "shared" / "seeds"
PACKAGE = Path(errors.__file__).resolve().parent

Pair = tuple[str, int]


def seed(prefix: str) -> str:
    (path,) = SEEDS.glob(f"{prefix}_*.txt")
    return path.read_text(encoding="utf-8")


def markdown_to_text(text: str) -> str:
    """Render the bits of Markdown the Resend page uses in its messages."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return text.replace("\\_", "_").strip()


def resend_full_page() -> list[tuple[str, int, str, str]]:
    """(code, status, message, suggested action) of every entry on seed 000."""
    rows = re.findall(
        r"^### `(\w+)`\s*\n\s*"
        r"\* \*\*Status:\*\* (\d{3})\s*\n"
        r"\* \*\*Message:\*\* (.*)\n"
        r"\* \*\*Suggested action:\*\* (.*)$",
        seed("000"),
        flags=re.MULTILINE,
    )
    return [(code, int(status), message, action) for code, status, message, action in rows]


def resend_short_page() -> list[Pair]:
    """(code, status) of every entry on seed 001 (the code sits on the line before Status)."""
    return [
        (code, int(status))
        for code, status in re.findall(r"([a-z_]+)\n- Status: (\d{3})", seed("001"))
    ]


def sendr_page() -> list[tuple[str, int, str]]:
    """(code, status, cause) of every entry on seed 002; the unnamed 500 is internal_error."""
    lines = seed("002").splitlines()
    rows = []
    for index, line in enumerate(lines):
        status = re.fullmatch(r"Status: (\d{3})", line.strip())
        if not status:
            continue
        named = re.fullmatch(r"[a-z_]+", lines[index - 1].strip())
        code = named.group(0) if named else None
        cause = lines[index + 1].strip()
        assert cause.startswith("Cause: ")
        rows.append((code, int(status.group(1)), cause.removeprefix("Cause: ")))
    unnamed = [row for row in rows if row[0] is None]
    assert [status for _, status, _ in unnamed] == [500]
    return [(code or "internal_error", status, cause) for code, status, cause in rows]


def generic_page() -> list[tuple[str, int, str, str]]:
    """(code, status, description, action) of every table row of seed 003."""
    return [
        (code, int(status), description, action)
        for code, status, description, action in re.findall(
            r"^([a-z_]+) \| (\d{3}) \| (.*?) \| (.*?) \|$", seed("003"), flags=re.MULTILINE
        )
    ]


def emitlo_page() -> list[Pair]:
    """(code, status) of every "CODE — status" heading of seed 004."""
    return [
        (code, int(status))
        for code, status in re.findall(r"^([A-Z_]+) — (\d{3})$", seed("004"), flags=re.MULTILINE)
    ]


def emitlo_examples() -> dict[str, str]:
    """The example message seed 004 gives for a code, where it gives one."""
    found = re.findall(r'"code": "([A-Z_]+)",\s*"message": "((?:[^"\\]|\\.)*)"', seed("004"))
    return {code: json.loads(f'"{message}"') for code, message in found}


SEED_PAIRS: dict[str, list[Pair]] = {
    "resend": [(code, status) for code, status, _, _ in resend_full_page()] + resend_short_page(),
    "sendr": [(code, status) for code, status, _ in sendr_page()],
    "generic": [(code, status) for code, status, _, _ in generic_page()],
    "emitlo": emitlo_page(),
}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9_]+", text.lower())


def shared_runs(action: str, page: str, length: int = 7) -> set[tuple[str, ...]]:
    """Runs of ``length`` words that the action and the seed page have in common."""
    page_words = words(page)
    page_runs = {tuple(page_words[i : i + length]) for i in range(len(page_words) - length + 1)}
    action_words = words(action)
    return {
        tuple(action_words[i : i + length]) for i in range(len(action_words) - length + 1)
    } & page_runs


# -- the seeds themselves ----------------------------------------------------------


def test_seed_parsers_find_every_entry() -> None:
    assert len(resend_full_page()) == 24
    assert len(resend_short_page()) == 21
    assert len(sendr_page()) == 15
    assert len(generic_page()) == 16
    assert len(emitlo_page()) == 9


@pytest.mark.skipif(not SHARED_SEEDS.is_dir(), reason="../shared/seeds is not checked out")
def test_fixture_seeds_are_copies_of_the_shared_seeds() -> None:
    shared = {path.name: path.read_bytes() for path in SHARED_SEEDS.glob("00[0-4]_*.txt")}
    copies = {path.name: path.read_bytes() for path in SEEDS.glob("*.txt")}
    assert copies == shared


# -- completeness ----------------------------------------------------------------


@pytest.mark.parametrize("provider", sorted(SEED_PAIRS))
def test_every_seed_code_is_in_its_catalog_with_an_action_and_retry_class(
    provider: str,
) -> None:
    catalog = CATALOGS[provider]
    for code, status in SEED_PAIRS[provider]:
        entries = catalog.candidates(code, status)
        assert entries, f"{provider} {code} {status} is missing"
        for entry in entries:
            assert entry.action.strip()
            assert isinstance(entry.retry, RetryClass)
            assert entry.message.strip()


def test_resend_messages_are_the_fuller_pages_messages() -> None:
    for code, status, message, _ in resend_full_page():
        documented = {entry.message for entry in resend_errors.CATALOG.candidates(code, status)}
        assert markdown_to_text(message) in documented, (code, status)


def test_resend_keeps_each_403_validation_error_as_its_own_entry() -> None:
    entries = resend_errors.CATALOG.candidates("validation_error", 403)
    assert len(entries) == 3
    assert len({entry.action for entry in entries}) == 3
    assert [entry.docs_url for entry in entries] == [
        "https://resend.com/docs/knowledge-base/403-error-resend-dev-domain",
        "https://resend.com/docs/knowledge-base/403-error-domain-mismatch",
        "https://resend.com/docs/knowledge-base/domain-already-registered",
    ]


def test_resend_has_the_newer_codes_and_a_422_validation_error() -> None:
    catalog = resend_errors.CATALOG
    for code, status in [
        ("suspended_api_key", 403),
        ("invalid_permission", 403),
        ("email_above_quota", 403),
        ("resource_locked", 409),
        ("missing_required_parameter", 422),
        ("service_unavailable", 503),
        ("validation_error", 422),
    ]:
        assert catalog.candidates(code, status), (code, status)


def test_sendr_messages_are_the_pages_causes() -> None:
    for code, status, cause in sendr_page():
        (entry,) = CATALOGS["sendr"].candidates(code, status)
        assert cause.startswith(entry.message), code
    assert CATALOGS["sendr"].candidates("forbidden", 403)


def test_generic_messages_are_the_pages_descriptions() -> None:
    for code, status, description, _ in generic_page():
        (entry,) = CATALOGS["generic"].candidates(code, status)
        assert entry.message == description


def test_emitlo_messages_are_the_pages_examples() -> None:
    examples = emitlo_examples()
    assert "ATTACHMENT_TOO_LARGE" in examples
    for code, status in emitlo_page():
        (entry,) = CATALOGS["emitlo"].candidates(code, status)
        if code in examples:
            assert entry.message == examples[code]


def test_mailapi_catalog_has_the_local_codes() -> None:
    catalog = CATALOGS["mailapi"]
    expected = {
        "daily_quota_exceeded": RetryClass.DEFER_DAY,
        "monthly_quota_exceeded": RetryClass.DEFER_MONTH,
        "org_paused": RetryClass.DEFER_DAY,
        "invalid_from_address": RetryClass.PERMANENT,
        "invalid_recipient": RetryClass.PERMANENT,
        "header_injection": RetryClass.PERMANENT,
        "invalid_content": RetryClass.PERMANENT,
        "quota_too_small": RetryClass.PERMANENT,
        "attachment_too_large": RetryClass.PERMANENT,
        "message_too_large": RetryClass.PERMANENT,
        "too_many_recipients": RetryClass.PERMANENT,
        "unsupported_feature": RetryClass.PERMANENT,
        "connection_error": RetryClass.RETRY,
        "timeout": RetryClass.RETRY,
        "invalid_response": RetryClass.RETRY,
        "retries_exhausted": RetryClass.PERMANENT,
        "unexpected_error": RetryClass.RETRY,
        "configuration_error": RetryClass.PERMANENT,
        "payload_missing": RetryClass.PERMANENT,
        "cancelled": RetryClass.PERMANENT,
        "batch_member_refused": RetryClass.PERMANENT,
        "provider_mismatch": RetryClass.PERMANENT,
        "missing_to_recipient": RetryClass.PERMANENT,
        "recipient_suppressed": RetryClass.PERMANENT,
        # Reported by delivery events, after the API accepted the email.
        "hard_bounce": RetryClass.PERMANENT,
        "soft_bounce": RetryClass.PERMANENT,
        "complaint": RetryClass.PERMANENT,
        "suppressed": RetryClass.PERMANENT,
        "delivery_failed": RetryClass.PERMANENT,
        "invalid_tags": RetryClass.PERMANENT,
        "invalid_metadata": RetryClass.PERMANENT,
        "invalid_send_at": RetryClass.PERMANENT,
    }
    assert {entry.code: entry.retry for entry in catalog} == expected
    assert all(entry.http_status is None for entry in catalog)
    org_paused = catalog.get("org_paused")
    assert org_paused is not None
    assert "mailapi_quota ORG --resume" in org_paused.action
    assert "mailapi_retry" in org_paused.action


# -- the content rules -------------------------------------------------------------


def test_only_transient_quota_and_rate_limit_codes_are_not_permanent() -> None:
    expected = {
        ("resend", "concurrent_idempotent_requests"): RetryClass.RETRY,
        ("resend", "resource_locked"): RetryClass.RETRY,
        ("resend", "rate_limit_exceeded"): RetryClass.RETRY_AFTER,
        ("resend", "daily_quota_exceeded"): RetryClass.DEFER_DAY,
        ("resend", "monthly_quota_exceeded"): RetryClass.DEFER_MONTH,
        ("resend", "application_error"): RetryClass.RETRY,
        ("resend", "internal_server_error"): RetryClass.RETRY,
        ("resend", "service_unavailable"): RetryClass.RETRY,
        ("sendr", "rate_limited"): RetryClass.RETRY_AFTER,
        ("sendr", "daily_limit_reached"): RetryClass.DEFER_DAY,
        ("sendr", "monthly_limit_reached"): RetryClass.DEFER_MONTH,
        ("sendr", "overage_limit_reached"): RetryClass.DEFER_MONTH,
        ("sendr", "internal_error"): RetryClass.RETRY,
        ("generic", "rate_limit_exceeded"): RetryClass.RETRY_AFTER,
        ("generic", "internal_error"): RetryClass.RETRY,
        ("generic", "service_unavailable"): RetryClass.RETRY,
        ("emitlo", "RATE_LIMITED"): RetryClass.RETRY_AFTER,
        ("emitlo", "INTERNAL_ERROR"): RetryClass.RETRY,
    }
    for entry in all_entries():
        if entry.provider == "mailapi":
            continue
        wanted = expected.get((entry.provider, entry.code), RetryClass.PERMANENT)
        assert entry.retry is wanted, (entry.provider, entry.code, entry.http_status)


def test_every_5xx_entry_retries() -> None:
    for entry in all_entries():
        if entry.http_status is not None and entry.http_status >= 500:
            assert entry.retry is RetryClass.RETRY, (entry.provider, entry.code)


@pytest.mark.parametrize(
    ("provider", "prefixes"),
    [("resend", ["000", "001"]), ("sendr", ["002"]), ("generic", ["003"]), ("emitlo", ["004"])],
)
def test_actions_are_our_own_words(provider: str, prefixes: list[str]) -> None:
    pages = [seed(prefix) for prefix in prefixes]
    for entry in CATALOGS[provider]:
        for page in pages:
            assert not shared_runs(entry.action, page), (entry.code, entry.action)


def test_actions_do_not_repeat_the_seed_action_column() -> None:
    seed_actions = {
        (code, status, " ".join(words(markdown_to_text(action))))
        for code, status, _, action in resend_full_page()
    } | {(code, status, " ".join(words(action))) for code, status, _, action in generic_page()}
    for entry in all_entries():
        for code, status, action in seed_actions:
            if (entry.code, entry.http_status) == (code, status):
                assert " ".join(words(entry.action)) != action
                assert action not in " ".join(words(entry.action))


def test_docs_urls_are_absolute_where_the_seed_links_and_empty_otherwise() -> None:
    prefixes = {
        "resend": ("https://resend.com/docs/api-reference/errors", "https://resend.com/docs/"),
        "sendr": ("https://docs.sendr.dev/docs/errors",),
        "emitlo": ("https://emitlo-docs.pages.dev/reference/errors/",),
    }
    for entry in all_entries():
        if entry.provider in ("generic", "mailapi"):
            assert entry.docs_url == ""
        else:
            assert entry.docs_url.startswith(prefixes[entry.provider]), entry


def test_rate_limit_and_quota_actions_mention_what_django_mailapi_does() -> None:
    for entry in all_entries():
        if entry.retry is RetryClass.RETRY_AFTER:
            assert "Retry-After" in entry.action
            assert "MAILAPI['RATE_LIMIT']" in entry.action
        if entry.retry.is_quota and entry.provider != "mailapi":
            assert "defers the email" in entry.action


def test_the_errors_package_does_not_import_django() -> None:
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] != "django", f"{path.name} imports {name}"


# -- lookups -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "docs_slug"),
    [
        (
            "You can only send testing emails to your own email address (me@gmail.com). "
            "To send emails to other recipients, please verify a domain at resend.com/domains, "
            "and change the `from` address to an email using this domain.",
            "403-error-resend-dev-domain",
        ),
        (
            "The acme.io domain is not verified. Please, add and verify your domain.",
            "403-error-domain-mismatch",
        ),
        ("The `acme.io` domain has been registered already.", "domain-already-registered"),
    ],
)
def test_each_resend_403_validation_error_message_maps_to_its_own_entry(
    message: str, docs_slug: str
) -> None:
    entry = resend_errors.match("validation_error", 403, message)
    assert entry is not None
    assert entry.docs_url.endswith(docs_slug)
    assert resolve("resend", "validation_error", 403, message) is entry
    assert suggested_action("resend", "validation_error", 403, message) == entry.action


def test_resend_match_falls_back_to_get() -> None:
    first = resend_errors.CATALOG.get("validation_error", 403)
    assert resend_errors.match("validation_error", 403, "") is first
    assert resend_errors.match("validation_error", 403, "zzz qqq") is first
    assert resend_errors.match("validation_error", 422, "Invalid `to` field.") == (
        resend_errors.CATALOG.get("validation_error", 422)
    )
    assert resend_errors.match("no_such_code", 400, "anything") is None


def test_resolve_returns_the_documented_entry() -> None:
    entry = resolve("sendr", "daily_limit_reached", 429, "Daily limit reached")
    assert entry.provider == "sendr"
    assert entry.retry is RetryClass.DEFER_DAY
    assert resolve("resend", "validation_error", 422) is resend_errors.CATALOG.get(
        "validation_error", 422
    )
    assert resolve("mailapi", "timeout", None).retry is RetryClass.RETRY


def test_resolve_finds_a_local_code_recorded_under_a_provider() -> None:
    entry = resolve("resend", "connection_error", None, "Connection refused")
    assert entry.provider == "mailapi"
    assert entry.retry is RetryClass.RETRY


@pytest.mark.parametrize(
    ("http_status", "retry"),
    [
        (418, RetryClass.PERMANENT),
        (400, RetryClass.PERMANENT),
        (408, RetryClass.RETRY),
        (425, RetryClass.RETRY),
        (429, RetryClass.RETRY_AFTER),
        (500, RetryClass.RETRY),
        (503, RetryClass.RETRY),
        (None, RetryClass.RETRY),
    ],
)
@pytest.mark.parametrize("provider", ["resend", "emitlo", "myapp.providers.Custom"])
def test_resolve_synthesizes_unknown_codes_by_status_class(
    provider: str, http_status: int | None, retry: RetryClass
) -> None:
    entry = resolve(provider, "brand_new_code", http_status, "Something new happened.")
    assert entry == ErrorSpec(
        provider, "brand_new_code", http_status, "Something new happened.", entry.action, retry
    )
    assert entry.action.strip()
    assert suggested_action(provider, "brand_new_code", http_status) == entry.action


def test_unknown_4xx_action_tells_the_user_to_fix_and_retry() -> None:
    action = suggested_action("resend", "brand_new_code", 418)
    assert "418" in action
    assert "mailapi_retry" in action


def test_resolve_names_an_empty_code_after_the_status() -> None:
    assert resolve("resend", "", 502).code == "http_502"
    assert resolve("resend", "", None).code == "unknown_error"


def test_registry_order_and_lookup() -> None:
    assert list(CATALOGS) == ["resend", "sendr", "generic", "emitlo", "mailapi"]
    assert get_catalog("resend") is resend_errors.CATALOG
    assert get_catalog("nope") is None
    entries = all_entries()
    assert entries == [entry for catalog in CATALOGS.values() for entry in catalog]
    assert entries == all_entries()
    assert isinstance(CATALOGS["mailapi"], Catalog)


def test_entries_belong_to_their_catalog() -> None:
    for provider, catalog in CATALOGS.items():
        assert catalog.provider == provider
        assert all(entry.provider == provider for entry in catalog)


def test_mailapi_errors_json_lists_every_code_of_every_seed_page() -> None:
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("mailapi_errors", "--format", "json", stdout=out)
    listed = {
        (row["provider"], row["code"], row["http_status"]) for row in json.loads(out.getvalue())
    }
    wanted = (
        [("resend", code, status) for code, status, _m, _a in resend_full_page()]
        + [("resend", code, status) for code, status in resend_short_page()]
        + [("sendr", code, status) for code, status, _c in sendr_page()]
        + [("generic", code, status) for code, status, _d, _a in generic_page()]
        + [("emitlo", code, status) for code, status in emitlo_page()]
    )
    assert len(wanted) > 80
    assert sorted(set(wanted) - listed) == []
