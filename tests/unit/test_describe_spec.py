"""The `describe:` section of a connector spec: validation, and how answers are normalised."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from uwf.auth import Credentials, StaticAuth
from uwf.connectors import ConnectorSpec, NetworkPolicy, describe_object
from uwf.connectors.runtime import ConnectorRuntime, Target
from uwf.errors import FatalError

FIELDS = [
    {"key": "prio", "title": "Priority", "kind": "select", "mandatory": True,
     "choices": {"Low": 1, "High": 3}},
    {"key": "stage", "title": "Stage", "kind": "select", "locked": True,
     "choices": {"10": ["Open", "Open (customer)"], "20": ["Done", "Done"]}},
    {"key": "region", "title": "Region", "kind": "select", "choices": ["EMEA", "APAC"]},
    {"key": "colour", "title": "Colour", "kind": "select"},
    {"key": None, "title": "(collection)"},
]  # fmt: skip
CHOICES = [
    {"element": "colour", "value": "r", "label": "Red"},
    {"element": "colour", "value": "g", "label": "Green"},
]


def _spec(describe: dict[str, Any]) -> ConnectorSpec:
    return ConnectorSpec.model_validate(
        {
            "id": "toy",
            "name": "Toy CRM",
            "auth": {"bearer": {"type": "bearer", "token": "{{ token }}"}},
            "objects": {
                "case": {
                    "native_name": "issue",
                    "fields": {"priority": "prio", "owner_id": "owner@bind"},
                    "record": {"status": "stage"},
                    "operations": {"get": {"method": "GET", "path": "/issues/{{ record_id }}"}},
                    "describe": describe,
                }
            },
        }
    )


DESCRIBE = {
    "path": "/meta/{{ native_name }}/fields",
    "fields": "body.items",
    "name": "key",
    "label": "title",
    "type": "kind",
    "required": "mandatory",
    "read_only": "locked",
    "options": "choices",
    "option_value": "type(value) == 'array' && key || value",
    "option_label": "type(value) == 'array' && value[0] || key",
    "choices": [{"path": "/meta/choices", "items": "body", "field": "element"}],
}


@pytest.fixture
async def crm() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def fields(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path} {request.headers.get('Authorization')}")
        return web.json_response({"items": FIELDS})

    async def choices(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        return web.json_response(CHOICES)

    app = web.Application()
    app.router.add_get("/meta/issue/fields", fields)
    app.router.add_get("/meta/choices", choices)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), seen
    finally:
        await server.close()


async def test_describe_normalises_lists_objects_and_separate_choices(
    crm: tuple[str, list[str]],
) -> None:
    base_url, seen = crm
    target = Target(
        connection="toy-1",
        base_url=base_url,
        spec=_spec(DESCRIBE),
        auth=StaticAuth(Credentials({"Authorization": "Bearer T0KEN"}, ("T0KEN",))),
        timeout_seconds=5,
        config={},
    )
    runtime = ConnectorRuntime(NetworkPolicy.parse("127.0.0.1"))  # the test CRM is on loopback
    try:
        described = await describe_object(runtime, target, "case")
    finally:
        await runtime.close()

    assert seen == ["GET /meta/issue/fields Bearer T0KEN", "GET /meta/choices"]
    assert [f.name for f in described.fields] == ["prio", "stage", "region", "colour"]
    prio, stage, region, colour = described.fields
    assert (prio.canonical, prio.label, prio.type, prio.required) == (
        "priority",
        "Priority",
        "select",
        True,
    )
    assert [(o.value, o.label) for o in prio.options] == [(1, "Low"), (3, "High")]
    assert stage.canonical == "status"  # from the record map
    assert stage.read_only is True
    assert [(o.value, o.label) for o in stage.options] == [("10", "Open"), ("20", "Done")]
    assert [(o.value, o.label) for o in region.options] == [("EMEA", "EMEA"), ("APAC", "APAC")]
    assert [(o.value, o.label) for o in colour.options] == [("r", "Red"), ("g", "Green")]
    # Numbers given as text still match, as CRMs that take both would accept them.
    assert prio.allows("3")
    assert stage.allows(10)
    assert not prio.allows("Urgent")
    assert described.field("PRIO") is prio


def test_a_bad_describe_expression_is_refused_with_where_it_is() -> None:
    with pytest.raises(ValidationError, match=r"objects\.case\.describe"):
        _spec({**DESCRIBE, "name": "key["})


async def test_an_object_without_describe_says_so() -> None:
    spec = _spec(DESCRIBE)
    data = spec.model_dump()
    data["objects"]["case"]["describe"] = None
    target = Target(
        connection="toy-1",
        base_url="http://127.0.0.1:9",
        spec=ConnectorSpec.model_validate(data),
        auth=StaticAuth(Credentials({}, ())),
        timeout_seconds=5,
        config={},
    )
    runtime = ConnectorRuntime(NetworkPolicy.parse("127.0.0.1"))  # the test CRM is on loopback
    try:
        with pytest.raises(FatalError, match="cannot describe 'case'"):
            await describe_object(runtime, target, "case")
        with pytest.raises(FatalError, match=r"no object 'ticket' \(known: case\)"):
            await describe_object(runtime, target, "ticket")
    finally:
        await runtime.close()
