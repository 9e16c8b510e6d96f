"""Connector specs, Retry-After, error classification, credentials and redaction."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from uwf.auth import (
    REDACTED,
    Credentials,
    StaticAuth,
    build_credentials,
    env_or_sandbox_resolver,
    redact,
)
from uwf.connectors import ConnectorSpec, NetworkPolicy, OperationSpec, builtin_connectors
from uwf.connectors.runtime import ConnectorRuntime, Target, parse_retry_after
from uwf.errors import (
    ExpressionError,
    FatalError,
    OutcomeUnknownError,
    RetryableError,
    UwfError,
)
from uwf.metadata import ConnectionSpec, SecretRef

# The test servers listen on loopback over http: allowed here, as a deployment would.
LOOPBACK = NetworkPolicy.parse("127.0.0.1")


def zendesk_data() -> dict[str, Any]:
    """The built-in Zendesk spec as plain data, to edit."""
    text = (resources.files("uwf.connectors") / "specs" / "zendesk.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


# -- the built-in spec -----------------------------------------------------------------------


def test_builtin_zendesk_spec_loads() -> None:
    spec = builtin_connectors()["zendesk"]

    assert spec.name == "Zendesk Support"
    assert set(spec.auth) == {"api_token", "bearer"}
    assert set(spec.objects) == {"case", "user", "comment", "account", "contact"}
    assert set(spec.objects["case"].operations) == {
        "get",
        "update",
        "create",
        "assign",
        "add_comment",
    }
    assert set(spec.objects["user"].operations) == {"get", "lookup"}
    assert spec.health is not None


def test_operation_finds_what_the_spec_declares_and_nothing_else() -> None:
    spec = builtin_connectors()["zendesk"]

    update = spec.operation("case", "update")
    assert update is not None
    assert (update.method, update.path) == ("PUT", "/api/v2/tickets/{{ record_id }}.json")
    assert spec.operation("case", "lookup") is None
    assert spec.operation("organization", "get") is None


def test_builtin_templates_render_a_request() -> None:
    update = builtin_connectors()["zendesk"].operation("case", "update")
    assert update is not None
    context = {"record_id": 123, "fields": {"priority": "high"}}

    assert update.compiled["path"].evaluate(context) == "/api/v2/tickets/123.json"
    assert update.compiled["body"].evaluate(context) == {"ticket": {"priority": "high"}}


# -- a bad spec fails when it is loaded, not when it is first used ----------------------------


def _break(data: dict[str, Any], where: str, value: Any) -> None:
    *parents, last = where.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value


# where → (the bad value, the expression the error must quote)
BAD_TEMPLATES: dict[str, tuple[str, Any, str]] = {
    "path": (
        "objects.case.operations.get.path",
        "/api/v2/tickets/{{ record_id.[ }}.json",
        "`record_id.[`",
    ),
    "body": (
        "objects.case.operations.update.body",
        {"ticket": "{{ nosuch(fields) }}"},
        "`nosuch(fields)`",
    ),
    "query": (
        "objects.user.operations.lookup.query",
        {"query": "email:{{ criteria. }}"},
        "`criteria.`",
    ),
    "result": ("objects.case.operations.get.result", "ticket.[", "`ticket.[`"),
    "verify-marker": (
        "objects.case.operations.add_comment.verify.marker",
        "metadata.[",
        "`metadata.[`",
    ),
    "health": ("health.path", "/api/v2/{{ me( }}", "`me(`"),
    "error-message": ("errors.message", "error || [", "`error || [`"),
    "auth": ("auth.bearer.token", "{{ token. }}", "`token.`"),
}


@pytest.mark.parametrize("where", BAD_TEMPLATES)
def test_a_bad_template_fails_at_load(where: str) -> None:
    place, value, quoted = BAD_TEMPLATES[where]
    data = zendesk_data()
    _break(data, place, value)

    with pytest.raises((ValidationError, UwfError)) as info:
        ConnectorSpec.model_validate(data)
    assert quoted in str(info.value)


def test_a_bad_template_is_reported_with_its_place_in_the_spec() -> None:
    place, value, _ = BAD_TEMPLATES["path"]
    data = zendesk_data()
    _break(data, place, value)

    with pytest.raises(ValidationError, match=r"(?s)case.*get.*record_id\.\["):
        ConnectorSpec.model_validate(data)


def test_an_unknown_field_in_a_spec_fails_at_load() -> None:
    data = zendesk_data()
    data["objects"]["case"]["operations"]["get"]["verb"] = "GET"

    with pytest.raises(ValidationError, match="verb"):
        ConnectorSpec.model_validate(data)


def test_an_unknown_operation_name_fails_at_load() -> None:
    data = zendesk_data()
    data["objects"]["case"]["operations"]["delete"] = {"method": "DELETE", "path": "/x"}

    with pytest.raises(ValidationError, match="delete"):
        ConnectorSpec.model_validate(data)


# -- idempotency -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "extra", "expected"),
    [
        ("GET", {}, True),
        ("PUT", {}, True),
        ("PATCH", {}, True),
        ("DELETE", {}, True),
        ("POST", {}, False),
        ("POST", {"idempotency_header": "Idempotency-Key"}, True),
        ("POST", {"idempotent": True}, True),
        ("PUT", {"idempotent": False}, False),
        ("POST", {"idempotency_header": "Idempotency-Key", "idempotent": False}, False),
    ],
)
def test_is_idempotent(method: str, extra: dict[str, Any], expected: bool) -> None:
    operation = OperationSpec.model_validate({"method": method, "path": "/x", **extra})

    assert operation.is_idempotent is expected


def test_builtin_zendesk_comments_are_not_resent_blindly_and_creates_carry_a_key() -> None:
    ticket = builtin_connectors()["zendesk"].objects["case"].operations

    assert ticket["add_comment"].is_idempotent is False
    assert ticket["add_comment"].verify is not None
    assert ticket["create"].is_idempotent is True
    assert ticket["update"].is_idempotent is True


@pytest.mark.parametrize(
    ("canonical", "expected"),
    [
        (
            {"account_id": "5f1c2a8e-0000-4000-8000-00000000000a", "last_name": "Scully"},
            {
                "parentcustomerid_account@odata.bind": "/accounts(5f1c2a8e-0000-4000-8000-"
                "00000000000a)",
                "lastname": "Scully",
            },
        ),
        ({"owner_id": "/systemusers(abc)"}, {"ownerid@odata.bind": "/systemusers(abc)"}),
        ({"owner_id": "x)/../y"}, {"ownerid@odata.bind": "/systemusers(x%29%2F..%2Fy)"}),
        ({"email": "a@b.test"}, {"emailaddress1": "a@b.test"}),
    ],
    ids=["bare-account-id", "path-as-given", "hostile-id-encoded", "no-lookup"],
)
def test_dynamics_contact_writes_bind_lookups_by_path(
    canonical: dict[str, Any], expected: dict[str, Any]
) -> None:
    """A bare id becomes the record's path; a path is kept; nothing else is touched."""
    contact = builtin_connectors()["dynamics"].objects["contact"]
    context = {"fields": contact.to_native(canonical), "record_id": "r", "step_key": "e:s"}
    for name in ("create", "update"):
        operation = contact.operations[name]  # type: ignore[index]
        assert operation.compiled["body"].evaluate(context) == expected


# -- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("Wed, 99 Oct 2015 07:28:00 GMT", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_with_a_future_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)

    seconds = parse_retry_after(format_datetime(when, usegmt=True))

    assert seconds is not None
    assert 85 <= seconds <= 90


@pytest.mark.parametrize("header", ["inf", "nan"])
def test_parse_retry_after_ignores_non_numbers_float_accepts(header: str) -> None:
    assert parse_retry_after(header) is None


# -- error classification, against a CRM double on loopback ----------------------------------


def _crm_app() -> web.Application:
    """A CRM that answers `/status/<code>` with that status and a Zendesk-style error body."""

    async def handle(request: web.Request) -> web.Response:
        status = int(request.match_info["code"])
        if status == 200:
            return web.json_response({"ticket": {"id": 1, "priority": "high"}})
        headers = {"Retry-After": "12"} if status in (429, 503) else {}
        body = {"error": "RecordInvalid", "description": f"status {status} from the double"}
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/status/{code}", handle)
    return app


@pytest.fixture
async def crm() -> AsyncIterator[str]:
    server = TestServer(_crm_app())
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def runtime() -> AsyncIterator[ConnectorRuntime]:
    rt = ConnectorRuntime(LOOPBACK)
    try:
        yield rt
    finally:
        await rt.close()


def _target(base_url: str) -> Target:
    return Target(
        connection="acme-zendesk",
        base_url=base_url,
        spec=builtin_connectors()["zendesk"],
        auth=StaticAuth(Credentials({"Authorization": "Bearer S3CRET"}, ("S3CRET",))),
        timeout_seconds=5,
        config={},
    )


def _operation(
    method: str, *, idempotent: bool | None = None, result: str = "body.ticket"
) -> OperationSpec:
    return OperationSpec.model_validate(
        {"method": method, "path": "/status/{{ record_id }}", "result": result}
        | ({} if idempotent is None else {"idempotent": idempotent})
    )


async def test_a_successful_call_returns_the_selected_result_and_a_redacted_record(
    crm: str, runtime: ConnectorRuntime
) -> None:
    result = await runtime.call(_target(crm), _operation("PUT"), {"record_id": 200})

    assert result.result == {"id": 1, "priority": "high"}
    assert result.request["headers"]["Authorization"] == REDACTED
    assert "S3CRET" not in json.dumps([result.request, result.response])
    assert result.response["status"] == 200


async def test_result_reads_body_status_headers_and_the_operation_input(
    crm: str, runtime: ConnectorRuntime
) -> None:
    operation = _operation(
        "GET",
        result='{id: body.ticket.id, status: status, type: headers."content-type", '
        "asked: input.record_id}",
    )

    result = await runtime.call(_target(crm), operation, {"record_id": 200})

    assert result.result == {
        "id": 1,
        "status": 200,
        "type": "application/json; charset=utf-8",
        "asked": 200,
    }


@pytest.mark.parametrize(
    ("status", "method", "idempotent", "error"),
    [
        (429, "POST", False, RetryableError),
        (503, "POST", False, RetryableError),
        (500, "PUT", None, RetryableError),
        (502, "GET", None, RetryableError),
        (500, "POST", None, OutcomeUnknownError),
        (504, "PUT", False, OutcomeUnknownError),
        (400, "PUT", None, FatalError),
        (404, "GET", None, FatalError),
        (422, "POST", None, FatalError),
    ],
)
async def test_http_status_becomes_an_error_class(
    crm: str,
    runtime: ConnectorRuntime,
    status: int,
    method: str,
    idempotent: bool | None,
    error: type[Exception],
) -> None:
    with pytest.raises(error) as info:
        await runtime.call(
            _target(crm), _operation(method, idempotent=idempotent), {"record_id": status}
        )

    assert type(info.value) is error
    assert info.value.status == status  # type: ignore[attr-defined]
    assert f"Zendesk Support answered {status}" in str(info.value)
    assert f"RecordInvalid: status {status} from the double" in str(info.value)
    assert info.value.context == {"connection": "acme-zendesk"}  # type: ignore[attr-defined]


async def test_a_rate_limited_call_carries_the_crms_retry_after(
    crm: str, runtime: ConnectorRuntime
) -> None:
    with pytest.raises(RetryableError) as info:
        await runtime.call(_target(crm), _operation("POST"), {"record_id": 429})

    assert info.value.retry_after == 12.0


async def test_nothing_listening_is_retryable(runtime: ConnectorRuntime) -> None:
    with pytest.raises(RetryableError, match="could not connect to acme-zendesk"):
        await runtime.call(_target("http://127.0.0.1:9"), _operation("POST"), {"record_id": 200})


# -- credentials and redaction ---------------------------------------------------------------


def _connection(auth: dict[str, Any]) -> ConnectionSpec:
    return ConnectionSpec.model_validate(
        {
            "kind": "connection",
            "name": "acme-zendesk",
            "tenant": "acme",
            "connector": "zendesk",
            "base_url": "https://acme.zendesk.com",
            "auth": auth,
        }
    )


API_TOKEN_AUTH = {
    "type": "api_token",
    "email": "admin@acme.test",
    "token": {"env": "ACME_ZENDESK_TOKEN"},
}


def test_api_token_credentials_are_basic_email_slash_token() -> None:
    asked: list[SecretRef] = []

    def resolve(ref: SecretRef) -> str:
        asked.append(ref)
        return "TOKEN-123"

    creds = build_credentials(_connection(API_TOKEN_AUTH), builtin_connectors()["zendesk"], resolve)

    expected = "Basic " + base64.b64encode(b"admin@acme.test/token:TOKEN-123").decode()
    assert creds.headers == {"Authorization": expected}
    assert asked == [SecretRef(env="ACME_ZENDESK_TOKEN")]
    assert "TOKEN-123" in creds.secrets
    assert expected in creds.secrets


def test_bearer_credentials() -> None:
    creds = build_credentials(
        _connection({"type": "bearer", "token": {"env": "T"}}),
        builtin_connectors()["zendesk"],
        lambda ref: "TOKEN-123",
    )

    assert creds.headers == {"Authorization": "Bearer TOKEN-123"}


def test_an_auth_type_the_connector_lacks_is_fatal() -> None:
    connection = _connection({"type": "basic", "username": "u", "password": {"env": "P"}})

    with pytest.raises(FatalError, match="connector 'zendesk' does not support auth 'basic'"):
        build_credentials(connection, builtin_connectors()["zendesk"], lambda ref: "x")


def test_repr_of_credentials_never_shows_the_secret() -> None:
    creds = build_credentials(
        _connection(API_TOKEN_AUTH), builtin_connectors()["zendesk"], lambda ref: "TOKEN-123"
    )
    encoded = creds.headers["Authorization"].removeprefix("Basic ")

    for text in (repr(creds), str(creds), f"{creds}", f"{[creds]}"):
        assert "TOKEN-123" not in text
        assert encoded not in text
    assert repr(creds) == "Credentials(headers=['Authorization'], secrets=2)"


def test_env_resolver_reads_the_environment_and_says_which_variable_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolve = env_or_sandbox_resolver(lambda crm: {"api_token": "sandbox-token"})
    monkeypatch.setenv("ACME_ZENDESK_TOKEN", "from-env")

    assert resolve(SecretRef(env="ACME_ZENDESK_TOKEN")) == "from-env"
    assert resolve(SecretRef(sandbox="zendesk", field="api_token")) == "sandbox-token"
    monkeypatch.delenv("ACME_ZENDESK_TOKEN")
    with pytest.raises(FatalError, match="environment variable ACME_ZENDESK_TOKEN is not set"):
        resolve(SecretRef(env="ACME_ZENDESK_TOKEN"))
    with pytest.raises(FatalError, match=r"no credential 'password' \(known: api_token\)"):
        resolve(SecretRef(sandbox="zendesk", field="password"))


def test_redact_removes_auth_headers_secret_keys_and_secret_values() -> None:
    record = {
        "method": "PUT",
        "url": "https://acme.zendesk.com/api/v2/tickets/1.json?key=S3CRET",
        "headers": {
            "Accept": "application/json",
            "Authorization": "Basic YWJj",
            "X-API-Key": "k-1",
            "Cookie": "session=abc",
        },
        "body": {
            "ticket": {"comment": {"body": "the token is S3CRET, do not share"}},
            "Password": "hunter2",
            "client_secret": "cs",
            "access_token": "at",
            "list": ["S3CRET", {"deep": "x-S3CRET-y-0THER"}, 3, None, True],
        },
    }
    original = copy.deepcopy(record)

    redacted = redact(record, ("S3CRET", "0THER"))

    assert redacted == {
        "method": "PUT",
        "url": f"https://acme.zendesk.com/api/v2/tickets/1.json?key={REDACTED}",
        "headers": {
            "Accept": "application/json",
            "Authorization": REDACTED,
            "X-API-Key": REDACTED,
            "Cookie": REDACTED,
        },
        "body": {
            "ticket": {"comment": {"body": f"the token is {REDACTED}, do not share"}},
            "Password": REDACTED,
            "client_secret": REDACTED,
            "access_token": REDACTED,
            "list": [REDACTED, {"deep": f"x-{REDACTED}-y-{REDACTED}"}, 3, None, True],
        },
    }
    assert record == original


def test_redact_ignores_empty_secrets() -> None:
    assert redact({"note": "nothing secret"}, ("",)) == {"note": "nothing secret"}


def test_a_bad_auth_template_in_a_spec_is_caught_before_credentials_are_built() -> None:
    data = zendesk_data()
    data["auth"]["api_token"]["username"] = "{{ email. }}/token"

    with pytest.raises((ValidationError, ExpressionError)):
        ConnectorSpec.model_validate(data)


def test_the_reference_page_is_generated_from_the_models() -> None:
    from uwf.connectors import reference_markdown

    page = Path(__file__).resolve().parents[2] / "docs" / "reference" / "connector-spec.md"
    assert page.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/reference/connector-spec.md is stale: "
        "run `uwf connectors reference > docs/reference/connector-spec.md`"
    )


@pytest.mark.parametrize(
    ("canonical", "expected"),
    [
        (
            {"owner_id": "5f1c2a8e-0000-4000-8000-00000000000b", "priority": "high"},
            {
                "ownerid@odata.bind": "/systemusers(5f1c2a8e-0000-4000-8000-00000000000b)",
                "prioritycode": 1,
            },
        ),
        ({"owner_id": "/teams(abc)"}, {"ownerid@odata.bind": "/teams(abc)"}),
        ({"subject": "Printer"}, {"title": "Printer"}),
    ],
    ids=["bare-owner-id", "path-as-given", "no-lookup"],
)
def test_dynamics_case_writes_bind_the_owner_by_path(
    canonical: dict[str, Any], expected: dict[str, Any]
) -> None:
    case = builtin_connectors()["dynamics"].objects["case"]
    context = {"fields": case.to_native(canonical), "record_id": "r", "step_key": "e:s"}
    for name in ("create", "update"):
        operation = case.operations[name]  # type: ignore[index]
        assert operation.compiled["body"].evaluate(context) == expected
