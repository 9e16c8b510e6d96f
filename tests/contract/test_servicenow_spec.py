"""The ServiceNow connector and sandbox against ServiceNow's published Table API description.

Every request the connector spec makes (each operation, its `verify`, `health`) is rendered from
the spec, sent to the sandbox, and validated with openapi-core against
``shared/crm-specs/servicenow/openapi/now/table.json`` (the REST API Explorer export), together
with the sandbox's answer. Error bodies are compared with the responses recorded from a real
instance (``shared/crm-specs/servicenow/fixtures``).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from tests.sandbox_server import RunningSandbox, serve_sandbox
from uwf.connectors import OperationSpec, VerifySpec, builtin_connectors

SHARED = Path(__file__).resolve().parents[3] / "shared" / "crm-specs"
SNOW = SHARED / "servicenow"
TABLE_JSON = SNOW / "openapi" / "now" / "table.json"
FIXTURES = SNOW / "fixtures" / "now" / "table" / "{tableName}"

if not TABLE_JSON.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(f"{TABLE_JSON} is required in CI", pytrace=False)
    pytest.skip(f"the published specs are not checked out at {SHARED}", allow_module_level=True)


def fixture(*parts: str) -> Any:
    return json.loads(FIXTURES.joinpath(*parts).read_text())


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with serve_sandbox(tmp_path_factory.mktemp("home"), "servicenow") as running:
        yield running


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(TABLE_JSON.read_text())
    return spec


@pytest.fixture(scope="module")
def openapi(published: dict[str, Any], sandbox: RunningSandbox) -> OpenAPI:
    spec = copy.deepcopy(published)
    # The export names the instance it came from; the sandbox stands in for it.
    spec["servers"] = [{"url": f"{sandbox.url}/"}]
    # The export declares only 200 for every operation, but instances answer a create with
    # 201 (the recorded POST/201.json); accept that status with the same content.
    post = spec["paths"]["/api/now/table/{tableName}"]["post"]
    post["responses"]["201"] = post["responses"]["200"]
    return OpenAPI.from_dict(spec)


@pytest.fixture(scope="module")
def session(sandbox: RunningSandbox) -> Iterator[requests.Session]:
    creds = sandbox.credentials
    with requests.Session() as s:
        s.auth = (creds["username"], creds["password"])
        s.headers["Accept"] = "application/json"
        yield s


@pytest.fixture(scope="module")
def contexts(session: requests.Session, sandbox: RunningSandbox) -> dict[str, dict[str, Any]]:
    """What the engine would give the connector's templates, by object, with real sys_ids."""

    def first(table: str, query: str) -> str:
        url = f"{sandbox.url}/api/now/table/{table}"
        result = session.get(url, params={"sysparm_query": query}).json()["result"]
        sys_id: str = result[0]["sys_id"]
        return sys_id

    alice = first("sys_user", "email=alice@acme.test")
    incident = first("incident", "number=INC0010150")
    case = {
        "record_id": incident,
        "fields": {"priority": "2", "short_description": "Contract test"},
        "criteria": {"email": "alice@acme.test"},
        "body": "Contract note",
        "public": False,
        "owner_id": alice,
        "step_key": "exec-contract:step",
        "connection": {},
    }
    company = first("core_company", "name=Initrode Ltd")
    return {
        "case": case,
        "user": {**case, "record_id": alice},
        "comment": {**case, "criteria": {"case_id": incident}},
        "account": {
            **case,
            "record_id": company,
            "fields": {"name": "Contract Co", "phone": "+44 20 7946 0999"},
            "criteria": {"name": "Initrode Ltd"},
        },
        "contact": {
            **case,
            "record_id": first("customer_contact", "email=art@vandelay.test"),
            "fields": {"last_name": "Contract", "email": "c@contract.test", "company": company},
            "criteria": {"email": "art@vandelay.test"},
        },
    }


SPEC = builtin_connectors()["servicenow"]
CALLS: dict[str, OperationSpec | VerifySpec] = {
    f"{obj}.{name}": op
    for obj, spec in SPEC.objects.items()
    for name, op in spec.operations.items()
}
CALLS |= {
    f"{name}.verify": op.verify
    for name, op in CALLS.items()
    if isinstance(op, OperationSpec) and op.verify
}
assert SPEC.health is not None
CALLS["health"] = SPEC.health


def render(
    call: OperationSpec | VerifySpec, context: dict[str, Any]
) -> tuple[str, str, dict[str, str], Any]:
    compiled = call.compiled
    method = call.method
    path = str(compiled["path"].evaluate(context))
    query = {k: str(v) for k, v in compiled["query"].evaluate(context).items()}
    body = compiled["body"].evaluate(context) if compiled["body"] is not None else None
    return method, path, query, body


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_connector_request_matches_the_published_table_api(
    name: str,
    contexts: dict[str, dict[str, Any]],
    session: requests.Session,
    sandbox: RunningSandbox,
    openapi: OpenAPI,
    published: dict[str, Any],
) -> None:
    ctx = contexts.get(name.split(".")[0], contexts["case"])  # health: any context will do
    method, path, query, body = render(CALLS[name], ctx)
    template = "/api/now/table/{tableName}" + ("/{sys_id}" if path.count("/") == 5 else "")
    declared = {p["name"] for p in published["paths"][template][method.lower()]["parameters"]}
    assert set(query) <= declared, f"{name} sends parameters table.json does not declare"

    request = requests.Request(method, f"{sandbox.url}{path}", params=query, json=body)
    prepared = session.prepare_request(request)
    response = session.send(prepared, timeout=10)

    assert response.status_code == (201 if method == "POST" else 200), response.text
    openapi.validate_request(RequestsOpenAPIRequest(prepared))
    openapi.validate_response(RequestsOpenAPIRequest(prepared), RequestsOpenAPIResponse(response))
    result = response.json()["result"]
    for record in result if isinstance(result, list) else [result]:
        # "Every field value is a string"; references are {link, value} unless excluded.
        assert all(isinstance(v, str) or set(v) == {"link", "value"} for v in record.values())


def test_401_body_is_the_recorded_one(sandbox: RunningSandbox) -> None:
    response = requests.get(f"{sandbox.url}/api/now/table/incident", timeout=10)
    assert response.status_code == 401
    assert response.json() == fixture("401.json")


def test_invalid_table_body_is_the_recorded_one(
    session: requests.Session, sandbox: RunningSandbox
) -> None:
    # The fixture was recorded against the literal path /api/now/table/:tableName.
    response = session.get(f"{sandbox.url}/api/now/table/:tableName", timeout=10)
    assert response.status_code == 404
    assert response.json() == fixture("404.json")


def test_no_record_body_is_the_recorded_one(
    session: requests.Session, sandbox: RunningSandbox
) -> None:
    response = session.get(f"{sandbox.url}/api/now/table/incident/{'f' * 32}", timeout=10)
    assert response.status_code == 404
    assert response.json() == fixture("{sys_id}", "404.json")


def test_created_incident_has_the_recorded_shape(
    session: requests.Session, sandbox: RunningSandbox
) -> None:
    recorded = fixture("POST", "201.json")["result"]
    response = session.post(f"{sandbox.url}/api/now/table/incident", json={}, timeout=10)
    assert response.status_code == 201
    created = response.json()["result"]
    assert set(created) == set(recorded)
    for key, value in recorded.items():
        # Same kinds of values: strings where the instance sent strings, references where
        # it sent references (only the ones a new record has: opened_by and sys_domain).
        assert type(created[key]) is type(value), key
        if isinstance(value, dict):
            assert set(created[key]) == set(value)
