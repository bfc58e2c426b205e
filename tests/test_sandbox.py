"""The sandbox provider, over real HTTP on loopback.

No database and no mocks: each test starts a ``SandboxServer`` on a free port and talks
to it with ``requests`` (or ``http.client`` where ``requests`` would add a header).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import time_machine

from django_mailapi.errors.resend import CATALOG
from django_mailapi.sandbox import FAIL_DOMAIN, SandboxServer
from tests.helpers import FIXTURES, run_sandbox_cli

TIMEOUT = 10

KEY = "re_test_key"


class Api:
    """A Resend client in a few lines: the shape the real provider module sends."""

    def __init__(self, base_url: str, key: str | None = KEY) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "django-mailapi-tests"
        if key is not None:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> requests.Response:
        return self.session.post(
            self.base_url + path, json=body, headers=headers or {}, timeout=TIMEOUT
        )

    def send(self, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        return self.post("/emails", body, headers)

    def batch(self, items: Any, headers: dict[str, str] | None = None) -> requests.Response:
        return self.post("/emails/batch", items, headers)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=TIMEOUT)

    def close(self) -> None:
        self.session.close()


def email(to: str | list[str] = "ada@example.org", **extra: Any) -> dict[str, Any]:
    return {"from": "Acme <noreply@acme.test>", "to": to, "subject": "Hello", **extra}


def wait_until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A fresh server per test; shadows conftest's shared one, which needs Django settings."""
    with SandboxServer(port=0) as server:
        yield server


@pytest.fixture
def api(sandbox: SandboxServer) -> Iterator[Api]:
    client = Api(sandbox.url)
    yield client
    client.close()


def make_api(server: SandboxServer, key: str | None = KEY) -> Api:
    return Api(server.url, key)


# -- sending ------------------------------------------------------------------------------


def test_send_answers_200_with_a_uuid_id(api: Api) -> None:
    response = api.send(email())

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert list(response.json()) == ["id"]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        response.json()["id"],
    )


def test_send_stores_payload_and_headers_without_authorization(
    sandbox: SandboxServer, api: Api
) -> None:
    body = email(["ada@example.org", "Bob <bob@example.org>"], html="<p>Hi</p>")
    response = api.send(body, {"Idempotency-Key": "order/1", "X-Trace": "abc"})

    (stored,) = sandbox.emails
    assert stored["id"] == response.json()["id"]
    assert stored["payload"] == body
    assert stored["idempotency_key"] == "order/1"
    assert stored["batch"] is False
    assert stored["headers"]["x-trace"] == "abc"
    assert stored["headers"]["user-agent"] == "django-mailapi-tests"
    assert "authorization" not in {name.lower() for name in stored["headers"]}
    assert dt.datetime.fromisoformat(stored["received_at"]).tzinfo is not None
    assert sandbox.stats["accepted"] == 1


def test_missing_api_key_answers_401(sandbox: SandboxServer) -> None:
    client = make_api(sandbox, key=None)
    try:
        response = client.send(email())
    finally:
        client.close()

    assert response.status_code == 401
    assert response.json() == {
        "statusCode": 401,
        "name": "missing_api_key",
        "message": CATALOG.get("missing_api_key", 401).message,  # type: ignore[union-attr]
    }
    assert sandbox.emails == []


def test_wrong_api_key_answers_403_when_a_key_is_configured() -> None:
    with SandboxServer(api_key="re_right") as server:
        wrong, right = make_api(server, "re_wrong"), make_api(server, "re_right")
        try:
            refused, accepted = wrong.send(email()), right.send(email())
        finally:
            wrong.close()
            right.close()

    assert refused.status_code == 403
    assert refused.json()["name"] == "invalid_api_key"
    assert accepted.status_code == 200


def test_missing_user_agent_answers_403(sandbox: SandboxServer) -> None:
    # http.client, unlike requests, sends no User-Agent of its own.
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=TIMEOUT)
    try:
        connection.request(
            "POST",
            "/emails",
            body=b'{"from": "a@b.test", "to": "c@d.test", "subject": "x"}',
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()

    assert response.status == 403
    assert b'"name": "validation_error"' in body
    assert b"User-Agent" in body
    assert sandbox.emails == []


@pytest.mark.parametrize(
    ("body", "name", "message_part"),
    [
        ({"to": "a@b.test"}, "missing_required_field", "Missing `from`, `subject` fields."),
        (email(to=[]), "missing_required_field", "Missing `to` field."),
        (email(to=[f"r{i}@example.org" for i in range(51)]), "validation_error", "at most 50"),
        (email(to="not an address"), "validation_error", "Invalid `to` field."),
        ({**email(), "from": "Acme noreply"}, "invalid_from_address", "Invalid `from` field."),
        (email(attachments=[{"filename": "a.pdf"}]), "invalid_attachment", "`content` or `path`"),
        ([email()], "validation_error", "must be a JSON object"),
    ],
    ids=["from-subject", "empty-to", "51-to", "bad-to", "bad-from", "attachment", "array"],
)
def test_invalid_send_answers_422_with_the_resend_error(
    api: Api, sandbox: SandboxServer, body: Any, name: str, message_part: str
) -> None:
    response = api.send(body)

    assert response.status_code == 422
    assert response.json()["statusCode"] == 422
    assert response.json()["name"] == name
    assert message_part in response.json()["message"]
    assert sandbox.emails == []


# -- schema checks --------------------------------------------------------------------

RESEND_SCHEMA = FIXTURES / "resend_send_email_request.schema.json"


@pytest.fixture
def checked() -> Iterator[SandboxServer]:
    """A sandbox that checks every email against Resend's published request schema."""
    with SandboxServer(port=0, schema=RESEND_SCHEMA) as server:
        yield server


def test_schema_mode_accepts_an_email_that_matches_the_schema(checked: SandboxServer) -> None:
    api = make_api(checked)
    body = email(
        ["ada@example.org"], html="<p>Hi</p>", text="Hi", tags=[{"name": "k", "value": "v"}]
    )

    sent = api.send(body)
    batch = api.batch([body, email("bob@example.org")])

    assert sent.status_code == 200, sent.text
    assert batch.status_code == 200, batch.text
    assert [e["payload"] for e in checked.emails] == [body, body, email("bob@example.org")]


def test_schema_mode_answers_422_validation_error_for_an_email_that_does_not_match(
    checked: SandboxServer,
) -> None:
    api = make_api(checked)
    # The sandbox's own checks let these through; Resend's schema does not.
    unknown_field = email(colour="blue")
    wrong_type = email(scheduled_at=17)

    alone = api.send(unknown_field)
    typed = api.send(wrong_type)
    strict = api.batch([email("bob@example.org"), unknown_field])
    permissive = api.batch(
        [email("bob@example.org"), wrong_type], {"x-batch-validation": "permissive"}
    )

    for response in (alone, typed, strict):
        assert response.status_code == 422
        assert response.json()["statusCode"] == 422
        assert response.json()["name"] == "validation_error"
    assert "colour" in alone.json()["message"]
    assert "scheduled_at" in typed.json()["message"]
    assert permissive.status_code == 200
    assert [error["index"] for error in permissive.json()["errors"]] == [1]
    assert [e["payload"]["to"] for e in checked.emails] == ["bob@example.org"]
    # Without a schema the same email is accepted.
    with SandboxServer(port=0) as plain:
        assert make_api(plain).send(unknown_field).status_code == 200


def test_schema_mode_takes_a_dict_and_refuses_an_invalid_schema() -> None:
    schema = json.loads(RESEND_SCHEMA.read_text())
    with SandboxServer(port=0, schema=schema) as server:
        assert make_api(server).send(email(colour="blue")).status_code == 422

    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        SandboxServer(schema={"type": 17})


def test_schema_mode_without_jsonschema_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema now fails

    with pytest.raises(ImportError, match="needs the jsonschema package"):
        SandboxServer(schema=RESEND_SCHEMA)
    with SandboxServer(port=0) as server:  # no schema, no jsonschema needed
        assert make_api(server).send(email()).status_code == 200


def test_command_line_schema_flag_checks_every_email() -> None:
    def probe(url: str) -> list[int]:
        api = Api(url)
        try:
            return [api.send(email()).status_code, api.send(email(colour="blue")).status_code]
        finally:
            api.close()

    statuses, returncode, _stdout, stderr = run_sandbox_cli(
        ["-m", "django_mailapi.sandbox", "--port", "0", "--schema", str(RESEND_SCHEMA)],
        "resend",
        probe,
    )

    assert statuses == [200, 422]
    assert returncode == 0
    assert stderr == ""


def test_fifty_recipients_and_named_addresses_are_accepted(api: Api) -> None:
    recipients = [f"Reader {i} <r{i}@example.org>" for i in range(50)]
    response = api.send(email(recipients, attachments=[{"filename": "a.txt", "content": "aGk="}]))

    assert response.status_code == 200


def test_body_that_is_not_json_answers_400_validation_error(api: Api) -> None:
    response = api.session.post(api.base_url + "/emails", data=b"{nope", timeout=TIMEOUT)

    assert response.status_code == 400
    assert response.json()["name"] == "validation_error"


def test_unknown_path_answers_404_and_wrong_method_405(api: Api) -> None:
    missing = api.post("/domains", {})
    wrong_method = api.get("/emails")

    assert missing.status_code == 404
    assert missing.json()["name"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {
        "statusCode": 405,
        "name": "method_not_allowed",
        "message": "Method is not allowed for the requested path.",
    }
    assert wrong_method.headers["Allow"] == "POST"


def test_connection_is_kept_alive_between_requests(sandbox: SandboxServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=TIMEOUT)
    headers = {
        "Authorization": f"Bearer {KEY}",
        "User-Agent": "t",
        "Content-Type": "application/json",
    }
    try:
        statuses = []
        for _ in range(3):
            connection.request("POST", "/emails", body=b'{"to": "a@b.test"}', headers=headers)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            assert not response.will_close
        first_socket = connection.sock
        connection.request("GET", "/_sandbox/health")
        connection.getresponse().read()
        assert connection.sock is first_socket
    finally:
        connection.close()

    assert statuses == [422, 422, 422]


# -- idempotency --------------------------------------------------------------------------


def test_idempotent_replay_returns_the_same_id_and_stores_once(
    sandbox: SandboxServer, api: Api
) -> None:
    headers = {"Idempotency-Key": "welcome/42"}
    first = api.send(email(), headers)
    second = api.send(email(), headers)

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert len(sandbox.emails) == 1
    assert sandbox.stats["replays"] == 1


def test_idempotency_keys_are_scoped_per_api_key(sandbox: SandboxServer) -> None:
    one, other = make_api(sandbox, "re_one"), make_api(sandbox, "re_other")
    try:
        first = one.send(email(), {"Idempotency-Key": "shared"})
        second = other.send(email(), {"Idempotency-Key": "shared"})
    finally:
        one.close()
        other.close()

    assert first.json()["id"] != second.json()["id"]
    assert len(sandbox.emails) == 2


def test_idempotency_key_is_forgotten_after_24_hours(sandbox: SandboxServer, api: Api) -> None:
    headers = {"Idempotency-Key": "digest/7"}
    with time_machine.travel(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)) as traveller:
        first = api.send(email(), headers)
        traveller.shift(dt.timedelta(hours=23))
        replay = api.send(email(), headers)
        traveller.shift(dt.timedelta(hours=1))
        fresh = api.send(email(), headers)

    assert replay.json() == first.json()
    assert fresh.status_code == 200
    assert fresh.json() != first.json()
    assert len(sandbox.emails) == 2


def test_same_key_with_a_different_body_answers_409(sandbox: SandboxServer, api: Api) -> None:
    headers = {"Idempotency-Key": "welcome/43"}
    api.send(email(), headers)
    response = api.send(email(subject="Changed"), headers)

    assert response.status_code == 409
    assert response.json()["name"] == "invalid_idempotent_request"
    assert len(sandbox.emails) == 1


def test_same_key_with_the_same_json_written_differently_is_a_replay(
    sandbox: SandboxServer, api: Api
) -> None:
    headers = {"Idempotency-Key": "welcome/44", "Content-Type": "application/json"}
    body = email(subject="Hello")
    url = f"{sandbox.url}/emails"
    first = api.session.post(url, data=json.dumps(body).encode(), headers=headers)
    # The same JSON with its keys in another order and other spacing: not a new request.
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    second = api.session.post(url, data=reordered, headers=headers)

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert len(sandbox.emails) == 1
    assert sandbox.stats["replays"] == 1


@pytest.mark.parametrize("key", ["", "k" * 257], ids=["empty", "257-chars"])
def test_idempotency_key_outside_1_to_256_chars_answers_400(api: Api, key: str) -> None:
    response = api.send(email(), {"Idempotency-Key": key})

    assert response.status_code == 400
    assert response.json()["name"] == "invalid_idempotency_key"
    assert api.send(email(), {"Idempotency-Key": "k" * 256}).status_code == 200


def test_same_key_while_the_first_is_in_progress_answers_409(
    sandbox: SandboxServer, api: Api
) -> None:
    body = email(["ada@example.org", "slow+1000@example.org"])
    headers = {"Idempotency-Key": "slow/1"}
    first: list[requests.Response] = []
    worker = threading.Thread(target=lambda: first.append(api.send(body, headers)))
    worker.start()
    wait_until(lambda: sandbox.stats["slowed"] == 1)

    second = make_api(sandbox)
    try:
        concurrent = second.send(body, headers)
    finally:
        second.close()
    worker.join(TIMEOUT)

    assert concurrent.status_code == 409
    assert concurrent.json()["name"] == "concurrent_idempotent_requests"
    assert first[0].status_code == 200
    assert len(sandbox.emails) == 1
    assert api.send(body, headers).json() == first[0].json()


def test_errors_are_not_replayed_so_the_key_can_be_reused(sandbox: SandboxServer, api: Api) -> None:
    headers = {"Idempotency-Key": "retry/1"}
    rejected = api.send({"to": "a@b.test"}, headers)
    accepted = api.send(email(), headers)

    assert rejected.status_code == 422
    assert accepted.status_code == 200
    assert sandbox.stats["replays"] == 0


# -- magic recipients ---------------------------------------------------------------------


def _catalog_cases() -> list[tuple[str, int, str]]:
    statuses: dict[str, set[int]] = {}
    for entry in CATALOG:
        if entry.http_status is not None:
            statuses.setdefault(entry.code, set()).add(entry.http_status)
    cases = []
    for code, codes_statuses in statuses.items():
        for status in sorted(codes_statuses):
            local = code if len(codes_statuses) == 1 else f"{code}+{status}"
            cases.append((code, status, f"{local}@{FAIL_DOMAIN}"))
    return cases


@pytest.mark.parametrize(
    ("code", "status", "address"), _catalog_cases(), ids=lambda value: str(value)
)
def test_magic_fail_address_answers_every_catalog_error(
    sandbox: SandboxServer, api: Api, code: str, status: int, address: str
) -> None:
    response = api.send(email(["ada@example.org", f"Failing <{address}>"]))

    entry = CATALOG.get(code, status)
    assert entry is not None
    assert response.status_code == status
    assert response.json() == {"statusCode": status, "name": code, "message": entry.message}
    assert sandbox.emails == []


def test_magic_fail_without_status_uses_the_first_documented_one(api: Api) -> None:
    response = api.send(email(cc=[f"validation_error@{FAIL_DOMAIN}"]))

    first = CATALOG.get("validation_error")
    assert first is not None
    assert response.status_code == first.http_status
    assert response.json()["message"] == first.message


def test_magic_fail_with_an_unknown_code_answers_422(api: Api) -> None:
    unknown = api.send(email(bcc=f"no_such_code@{FAIL_DOMAIN}"))
    wrong_status = api.send(email(f"not_found+500@{FAIL_DOMAIN}"))

    assert unknown.status_code == 422
    assert unknown.json()["name"] == "validation_error"
    assert "no_such_code" in unknown.json()["message"]
    assert "unknown to the sandbox" in unknown.json()["message"]
    assert wrong_status.status_code == 422
    assert "500" in wrong_status.json()["message"]


@pytest.mark.parametrize("code", ["rate_limit_exceeded", "daily_quota_exceeded"])
def test_magic_429_carries_retry_after_and_ratelimit_headers(api: Api, code: str) -> None:
    response = api.send(email(f"{code}@{FAIL_DOMAIN}"))

    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-reset"] == "1"
    assert int(response.headers["ratelimit-limit"]) > 0


def test_flaky_address_fails_twice_then_succeeds_under_one_idempotency_key(
    sandbox: SandboxServer, api: Api
) -> None:
    body = email("flaky+2@example.org")
    headers = {"Idempotency-Key": "flaky/1"}
    responses = [api.send(body, headers) for _ in range(4)]

    assert [r.status_code for r in responses] == [500, 500, 200, 200]
    assert responses[0].json()["name"] == "application_error"
    assert responses[3].json() == responses[2].json()
    assert len(sandbox.emails) == 1


def test_flaky_address_without_a_key_is_counted_per_address(api: Api) -> None:
    statuses = [api.send(email("Flaky <flaky+1@example.org>")).status_code for _ in range(3)]
    other = api.send(email("flaky+1@elsewhere.test"))

    assert statuses == [500, 200, 200]
    assert other.status_code == 500


# -- batch ----------------------------------------------------------------------------------


def test_batch_answers_one_id_per_email_and_stores_them(sandbox: SandboxServer, api: Api) -> None:
    response = api.batch([email("a@example.org"), email("b@example.org")])

    assert response.status_code == 200
    ids = [item["id"] for item in response.json()["data"]]
    assert list(response.json()) == ["data"]
    assert [stored["id"] for stored in sandbox.emails] == ids
    assert all(stored["batch"] for stored in sandbox.emails)
    assert [stored["payload"]["to"] for stored in sandbox.emails] == [
        "a@example.org",
        "b@example.org",
    ]


def test_strict_batch_is_rejected_whole_by_one_magic_fail_item(
    sandbox: SandboxServer, api: Api
) -> None:
    items = [email("a@example.org"), email(f"invalid_from_address@{FAIL_DOMAIN}"), email()]
    response = api.batch(items, {"x-batch-validation": "strict"})
    default_mode = api.batch(items)

    assert response.status_code == 422
    assert response.json()["name"] == "invalid_from_address"
    assert default_mode.status_code == 422
    assert sandbox.emails == []


def test_permissive_batch_stores_valid_items_and_reports_failed_indexes(
    sandbox: SandboxServer, api: Api
) -> None:
    items = [
        email("a@example.org"),
        email(f"security_error@{FAIL_DOMAIN}"),
        email("c@example.org"),
        {"from": "Acme <noreply@acme.test>", "subject": "no to"},
    ]
    response = api.batch(items, {"x-batch-validation": "permissive"})

    assert response.status_code == 200
    body = response.json()
    assert len(body["data"]) == 2
    assert body["errors"] == [
        {"index": 1, "message": CATALOG.get("security_error", 451).message},  # type: ignore[union-attr]
        {"index": 3, "message": "Missing `to` field."},
    ]
    assert [stored["payload"]["to"] for stored in sandbox.emails] == [
        "a@example.org",
        "c@example.org",
    ]
    assert [stored["id"] for stored in sandbox.emails] == [item["id"] for item in body["data"]]


def test_batch_of_more_than_100_is_rejected(sandbox: SandboxServer, api: Api) -> None:
    too_many = api.batch([email() for _ in range(101)])
    full = api.batch([email() for _ in range(100)])

    assert too_many.status_code == 422
    assert too_many.json()["name"] == "validation_error"
    assert full.status_code == 200
    assert len(sandbox.emails) == 100


@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_attachments_are_rejected_in_a_batch(sandbox: SandboxServer, api: Api, mode: str) -> None:
    with_attachment = email(attachments=[{"filename": "a.txt", "content": "aGk="}])
    response = api.batch([email(), with_attachment], {"x-batch-validation": mode})

    if mode == "strict":
        assert response.status_code == 422
        assert response.json()["name"] == "validation_error"
        assert "attachments" in response.json()["message"]
        assert sandbox.emails == []
    else:
        assert response.status_code == 200
        assert [error["index"] for error in response.json()["errors"]] == [1]
        assert len(sandbox.emails) == 1


def test_batch_is_idempotent_as_a_whole(sandbox: SandboxServer, api: Api) -> None:
    items = [email("a@example.org"), email("b@example.org")]
    headers = {"Idempotency-Key": "batch/1"}
    first, replay = api.batch(items, headers), api.batch(items, headers)

    assert replay.json() == first.json()
    assert len(sandbox.emails) == 2


# -- rate limiting and faults -----------------------------------------------------------------


def test_rate_limit_answers_429_with_headers_over_the_limit() -> None:
    with SandboxServer(rate_limit=5) as server:
        client = make_api(server)
        try:
            responses = [client.send(email()) for _ in range(6)]
        finally:
            client.close()
        stats = server.stats

    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in responses[:5]] == ["4", "3", "2", "1", "0"]
    assert all(r.headers["ratelimit-limit"] == "5" for r in responses)
    limited = responses[5]
    assert limited.json()["name"] == "rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1
    assert int(limited.headers["ratelimit-reset"]) >= 1
    assert limited.headers["ratelimit-remaining"] == "0"
    assert stats["rate_limited"] == 1
    assert stats["accepted"] == 5


def test_rate_limit_headers_are_on_every_api_response() -> None:
    with SandboxServer(rate_limit=10) as server:
        client, anonymous = make_api(server), make_api(server, key=None)
        try:
            responses = [
                client.send(email()),
                client.send({"to": "a@b.test"}),
                client.post("/domains", {}),
                anonymous.send(email()),
            ]
        finally:
            client.close()
            anonymous.close()

    assert [r.status_code for r in responses] == [200, 422, 404, 401]
    for response in responses:
        assert response.headers["ratelimit-limit"] == "10"
        assert "ratelimit-remaining" in response.headers
        assert "ratelimit-reset" in response.headers
    assert responses[1].headers["ratelimit-remaining"] == "8"


def test_rate_limit_is_counted_per_api_key() -> None:
    with SandboxServer(rate_limit=1) as server:
        one, other = make_api(server, "re_one"), make_api(server, "re_other")
        try:
            statuses = [one.send(email()).status_code, other.send(email()).status_code]
            statuses.append(one.send(email()).status_code)
        finally:
            one.close()
            other.close()

    assert statuses == [200, 200, 429]


def test_fail_rate_one_answers_500_or_drops_and_stores_nothing() -> None:
    outcomes: Counter[str] = Counter()
    with SandboxServer(fail_rate=1.0, seed=3) as server:
        client = make_api(server)
        try:
            for _ in range(12):
                try:
                    response = client.send(email())
                except requests.ConnectionError:
                    outcomes["dropped"] += 1
                else:
                    assert response.status_code == 500
                    assert response.json()["name"] == "internal_server_error"
                    outcomes["500"] += 1
        finally:
            client.close()
        stats, emails = server.stats, server.emails

    assert emails == []
    assert outcomes["dropped"] > 0
    assert outcomes["500"] > 0
    assert stats["resets"] == outcomes["dropped"]
    assert stats["errors_by_status"] == {"500": outcomes["500"]}
    assert stats["requests"] == 12


def test_knobs_change_live_by_attribute(sandbox: SandboxServer, api: Api) -> None:
    sandbox.fail_rate = 1.0
    for _ in range(3):
        with contextlib.suppress(requests.ConnectionError):
            assert api.send(email()).status_code == 500
    assert sandbox.emails == []
    sandbox.fail_rate = 0.0
    sandbox.rate_limit = 1
    statuses = [api.send(email()).status_code for _ in range(2)]

    assert statuses == [200, 429]
    with pytest.raises(ValueError, match="fail_rate"):
        sandbox.fail_rate = 1.5
    with pytest.raises(ValueError, match="rate_limit"):
        sandbox.rate_limit = 0


# -- control endpoints --------------------------------------------------------------------


def test_control_endpoints_report_and_reset(sandbox: SandboxServer, api: Api) -> None:
    control = requests.Session()  # no Authorization: control endpoints need none
    try:
        sent = api.send(email(), {"Idempotency-Key": "c/1"})
        api.send({"to": "a@b.test"})

        health = control.get(sandbox.url + "/_sandbox/health", timeout=TIMEOUT)
        emails = control.get(sandbox.url + "/_sandbox/emails", timeout=TIMEOUT)
        stats = control.get(sandbox.url + "/_sandbox/stats", timeout=TIMEOUT)
        reset = control.post(sandbox.url + "/_sandbox/reset", timeout=TIMEOUT)
        after = control.get(sandbox.url + "/_sandbox/stats", timeout=TIMEOUT)
        resent = api.send(email(), {"Idempotency-Key": "c/1"})
    finally:
        control.close()

    assert health.json() == {"ok": True}
    assert [stored["id"] for stored in emails.json()["emails"]] == [sent.json()["id"]]
    assert stats.json() == {
        "requests": 2,
        "accepted": 1,
        "errors_by_status": {"422": 1},
        "rate_limited": 0,
        "replays": 0,
        "resets": 0,
        "slowed": 0,
    }
    assert reset.status_code == 200
    assert after.json()["requests"] == 0
    assert after.json()["errors_by_status"] == {}
    # reset also forgets idempotency keys
    assert resent.json() != sent.json()
    assert len(sandbox.emails) == 1


def test_wait_answers_when_the_count_is_reached_or_the_time_is_up(
    sandbox: SandboxServer, api: Api
) -> None:
    wait = sandbox.url + "/_sandbox/wait"
    answers: list[requests.Response] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            requests.post(wait, json={"accepted": 2, "timeout": 20}, timeout=TIMEOUT)
        )
    )
    waiter.start()
    api.send(email())
    time.sleep(0.2)
    assert waiter.is_alive()  # one of two: still waiting
    api.send(email("bo@example.org"))
    waiter.join(TIMEOUT)

    late = requests.post(wait, json={"accepted": 3, "timeout": 0.3}, timeout=TIMEOUT)
    now = requests.post(wait, json={"accepted": 0}, timeout=TIMEOUT)
    bad = [
        requests.post(wait, json=body, timeout=TIMEOUT)
        for body in ({}, {"accepted": -1}, {"accepted": 1, "timeout": 10_000}, [1])
    ]

    assert answers[0].status_code == 200
    assert answers[0].json()["reached"] is True and answers[0].json()["accepted"] == 2
    assert late.json()["reached"] is False and late.json()["accepted"] == 2
    assert now.json()["reached"] is True
    assert [response.status_code for response in bad] == [422] * 4
    assert "accepted" in bad[0].json()["message"]


def test_control_config_changes_knobs_live(sandbox: SandboxServer, api: Api) -> None:
    changed = requests.post(
        sandbox.url + "/_sandbox/config", json={"rate_limit": 1}, timeout=TIMEOUT
    )
    statuses = [api.send(email()).status_code for _ in range(2)]
    bad = requests.post(sandbox.url + "/_sandbox/config", json={"fail_rate": 2}, timeout=TIMEOUT)
    unknown = requests.post(sandbox.url + "/_sandbox/config", json={"speed": 1}, timeout=TIMEOUT)
    current = requests.get(sandbox.url + "/_sandbox/config", timeout=TIMEOUT)

    assert changed.json() == {"rate_limit": 1.0, "fail_rate": 0.0}
    assert sandbox.rate_limit == 1.0
    assert statuses == [200, 429]
    assert bad.status_code == 422
    assert unknown.status_code == 422
    assert current.json() == {"rate_limit": 1.0, "fail_rate": 0.0}


def test_control_endpoints_answer_404_and_405(sandbox: SandboxServer) -> None:
    missing = requests.get(sandbox.url + "/_sandbox/nothing", timeout=TIMEOUT)
    wrong = requests.get(sandbox.url + "/_sandbox/reset", timeout=TIMEOUT)

    assert missing.status_code == 404
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"
    assert sandbox.stats["requests"] == 0


# -- lifecycle --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_non_loopback_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SandboxServer(host=host)


def test_stopped_server_refuses_connections() -> None:
    server = SandboxServer().start()
    url = server.url
    assert requests.get(url + "/_sandbox/health", timeout=TIMEOUT).json() == {"ok": True}
    server.stop()
    server.stop()  # stopping twice is harmless

    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/_sandbox/health", timeout=TIMEOUT)


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "django_mailapi.sandbox", "--port", "0"],
        ["-m", "django", "mailapi_sandbox", "--port", "0", "--settings", "tests.settings"],
    ],
    ids=["python-m", "manage-py"],
)
def test_command_line_prints_its_url_and_stops_on_ctrl_c(argv: list[str]) -> None:
    health, returncode, stdout, stderr = run_sandbox_cli(
        argv, "resend", lambda url: requests.get(url + "/_sandbox/health", timeout=TIMEOUT)
    )

    assert health.json() == {"ok": True}
    assert returncode == 0
    assert stdout == ""
    assert stderr == ""
