"""A CRM with no built-in connector, onboarded by metadata alone.

`tests/data/helpdesk/` holds a connector spec, a tenant, a connection and the very same
`escalate_case` workflow acme runs on Zendesk. The "Helpdesk" REST service is emulated here;
nothing between the YAML and the HTTP calls is specific to it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from uwf.metadata import load_directory
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import Store

HELPDESK = Path(__file__).resolve().parents[1] / "data" / "helpdesk"
KEY = "hk-7f3a9c"


@dataclass
class Helpdesk:
    """The emulated service: issues, notes and agents, behind an API key header."""

    issues: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "HD-42": {
                "id": "HD-42",
                "title": "Printer jam",
                "severity": "sev3",
                "assignee": None,
                "state": "open",
            },
        }
    )
    notes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    agents: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"id": "ag-1", "full_name": "Alice Agent", "email": "alice@acme.test"},
            {"id": "ag-2", "full_name": "Bob Agent", "email": "bob@acme.test"},
        ]
    )
    requests: list[str] = field(default_factory=list)
    lose_next_note_response: bool = False
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path_qs}")
        if request.headers.get("X-Helpdesk-Key") != KEY:
            return web.json_response({"error": {"code": "auth", "message": "bad key"}}, status=401)
        response: web.StreamResponse = await handler(request)
        response.headers["X-Budget-Remaining"] = "99"
        return response

    def issue(self, request: web.Request) -> dict[str, Any]:
        found = self.issues.get(request.match_info["id"])
        if found is None:
            raise web.HTTPNotFound(
                text='{"error": {"code": "missing", "message": "no such issue"}}',
                content_type="application/json",
            )
        return found

    async def get_issue(self, request: web.Request) -> web.Response:
        return web.json_response({"issue": self.issue(request)})

    async def patch_issue(self, request: web.Request) -> web.Response:
        issue = self.issue(request)
        changes = (await request.json())["issue"]
        if changes.get("severity", "sev1") not in ("sev1", "sev2", "sev3", "sev4"):
            return web.json_response(
                {"error": {"code": "invalid", "message": "severity must be sev1..sev4"}},
                status=422,
            )
        issue.update(changes)
        return web.json_response({"issue": issue})

    async def post_note(self, request: web.Request) -> web.Response:
        self.issue(request)
        note = {"id": f"n-{next(self.ids)}", **(await request.json())["note"]}
        self.notes.setdefault(request.match_info["id"], []).append(note)
        if self.lose_next_note_response:
            self.lose_next_note_response = False
            # The note is stored; then the connection drops before any answer is sent.
            assert request.transport is not None
            request.transport.abort()
        return web.json_response({"note": note}, status=201)

    async def list_notes(self, request: web.Request) -> web.Response:
        self.issue(request)
        return web.json_response({"notes": self.notes.get(request.match_info["id"], [])})

    async def list_agents(self, request: web.Request) -> web.Response:
        email = request.query.get("email")
        return web.json_response(
            {"agents": [a for a in self.agents if email in (None, a["email"])]}
        )


@pytest.fixture
async def helpdesk(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Helpdesk]:
    service = Helpdesk()
    app = web.Application(middlewares=[service.auth])
    app.router.add_get("/api/issues/{id}", service.get_issue)
    app.router.add_patch("/api/issues/{id}", service.patch_issue)
    app.router.add_post("/api/issues/{id}/notes", service.post_note)
    app.router.add_get("/api/issues/{id}/notes", service.list_notes)
    app.router.add_get("/api/agents", service.list_agents)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("HELPDESK_URL", f"http://127.0.0.1:{port}")
    # A CRM on this machine over http: the deployment must allow it explicitly.
    monkeypatch.setenv("UWF_ALLOWED_HOSTS", f"127.0.0.1:{port}")
    monkeypatch.setenv("HELPDESK_KEY", KEY)
    yield service
    await runner.cleanup()


async def _run(tmp_path: Path, data: dict[str, Any]) -> tuple[Store, str]:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}")
    version, _ = await store.apply_metadata(load_directory(HELPDESK), "test")
    execution, _ = await store.create_execution(
        tenant="initrode", workflow="escalate_case", metadata_version=version, input=data
    )
    executor = make_executor(Settings(home=tmp_path), store, None)
    await executor.run_until_idle(30)
    await executor.runtime.close()
    return store, execution.id


async def test_a_yaml_only_connector_runs_the_canonical_workflow(
    helpdesk: Helpdesk, tmp_path: Path
) -> None:
    store, eid = await _run(
        tmp_path,
        {
            "case_id": "HD-42",
            "priority": "P1",
            "owner_email": "bob@acme.test",
            "reason": "customer is blocked",
        },
    )
    try:
        execution = await store.get_execution(eid)
        runs = {r.step_id: r for r in await store.step_runs(eid)}
    finally:
        await store.close()

    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert execution.output == {"case_id": "HD-42", "priority": "sev1", "owner_id": "ag-2"}
    assert helpdesk.issues["HD-42"]["severity"] == "sev1"
    assert helpdesk.issues["HD-42"]["assignee"] == "ag-2"
    [note] = helpdesk.notes["HD-42"]
    assert note["text"] == "Escalated: customer is blocked"
    assert note["internal"] is True
    assert note["client_ref"] == f"{eid}:note"
    # The ledger shows the CRM's own requests, with the key redacted.
    assert runs["set_priority"].request is not None
    assert runs["set_priority"].request["body"] == {"issue": {"severity": "sev1"}}
    assert runs["set_priority"].request["headers"]["X-Helpdesk-Key"] == "[REDACTED]"
    assert runs["owner"].output["name"] == "Bob Agent"


async def test_a_lost_note_response_is_verified_not_resent(
    helpdesk: Helpdesk, tmp_path: Path
) -> None:
    helpdesk.lose_next_note_response = True
    store, eid = await _run(tmp_path, {"case_id": "HD-42", "priority": "P2", "reason": "again"})
    try:
        execution = await store.get_execution(eid)
    finally:
        await store.close()
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert [n["text"] for n in helpdesk.notes["HD-42"]] == ["Escalated: again"]
    assert helpdesk.requests.count("POST /api/issues/HD-42/notes") == 1


async def test_the_services_errors_reach_the_execution(helpdesk: Helpdesk, tmp_path: Path) -> None:
    store, eid = await _run(tmp_path, {"case_id": "HD-404", "priority": "P2"})
    try:
        execution = await store.get_execution(eid)
    finally:
        await store.close()
    assert execution is not None
    assert execution.status == "failed"
    assert execution.error is not None
    assert execution.error["message"] == "Helpdesk answered 404 Not Found: no such issue"
