"""API Data Access over real HTTP: accept, wait, inspect, and refuse bad input cleanly."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer

ESCALATE = {
    "workflow": "escalate_case",
    "input": {
        "case_id": 123,
        "priority": "P1",
        "owner_email": "alice@acme.test",
        "reason": "VIP customer waiting",
    },
}


def _count(client: httpx.Client) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/tenants/acme/executions", params=params).json()
        total += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


def _escalation_comments(sandbox: httpx.Client, ticket: int) -> list[dict[str, Any]]:
    comments = sandbox.get(f"/api/v2/tickets/{ticket}/comments.json").json()["comments"]
    return [c for c in comments if c["body"].startswith("Escalated:")]


def test_quickstart_escalation_lands_in_the_crm(live_server: LiveServer) -> None:
    with live_server.client() as client, live_server.sandbox() as sandbox:
        alice = sandbox.get("/api/v2/users/search.json", params={"query": "alice@acme.test"})
        alice_id = alice.json()["users"][0]["id"]

        response = client.post("/v1/tenants/acme/actions", params={"wait": 20}, json=ESCALATE)

        assert response.status_code == 200, response.text
        execution = response.json()
        assert execution["status"] == "succeeded"
        assert execution["workflow_version"] == 1
        assert [s["status"] for s in execution["steps"]] == ["succeeded"] * 4
        assert execution["output"] == {
            "case_id": 123,
            "priority": "urgent",
            "owner_id": alice_id,
        }
        ticket = sandbox.get("/api/v2/tickets/123.json").json()["ticket"]
        assert ticket["priority"] == "urgent"
        assert ticket["assignee_id"] == alice_id
        notes = _escalation_comments(sandbox, 123)
        assert [(n["body"], n["public"]) for n in notes] == [
            ("Escalated: VIP customer waiting", False)
        ]


def test_accepted_action_is_queued_then_runs(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.post(
            "/v1/tenants/acme/actions",
            json={"workflow": "escalate_case", "input": {"case_id": 7, "priority": "P3"}},
        )
        assert response.status_code == 202
        body = response.json()
        assert body["status"] in ("queued", "running", "succeeded")
        assert response.headers["Location"] == f"/v1/tenants/acme/executions/{body['id']}"
        for _ in range(200):
            execution = client.get(response.headers["Location"]).json()
            if execution["status"] == "succeeded":
                break
            import time

            time.sleep(0.05)
        assert execution["status"] == "succeeded"
        by_id = {s["id"]: s for s in execution["steps"]}
        assert by_id["owner"]["status"] == "skipped"
        assert by_id["note"]["status"] == "skipped"
        assert by_id["set_priority"]["request"]["body"] == {"ticket": {"priority": "normal"}}
        assert by_id["set_priority"]["response"]["status"] == 200


def test_idempotency_key_returns_the_same_execution(live_server: LiveServer) -> None:
    with live_server.client() as client, live_server.sandbox() as sandbox:
        headers = {"Idempotency-Key": "escalate-42-once"}
        body = {
            "workflow": "escalate_case",
            "input": {"case_id": 42, "priority": "P2", "reason": "retried by caller"},
        }
        first = client.post("/v1/tenants/acme/actions?wait=20", json=body, headers=headers)
        second = client.post("/v1/tenants/acme/actions?wait=20", json=body, headers=headers)
        assert first.status_code == second.status_code == 200
        assert first.json()["id"] == second.json()["id"]
        assert second.headers["Idempotent-Replayed"] == "true"
        assert len(_escalation_comments(sandbox, 42)) == 1
        before = _count(client)

        other = {**body, "input": {**body["input"], "priority": "P1"}}
        conflict = client.post("/v1/tenants/acme/actions", json=other, headers=headers)

        assert conflict.status_code == 422
        assert conflict.headers["content-type"] == "application/problem+json"
        assert "different request" in conflict.json()["detail"]
        assert _count(client) == before


BAD_REQUESTS = [
    pytest.param(
        {
            "content": b'{"workflow": "escalate_case", "input": {',
            "status": 400,
            "detail": "not valid JSON",
        },
        id="malformed-json",
    ),
    pytest.param({"json": [1, 2], "status": 422, "detail": "body"}, id="body-not-object"),
    pytest.param(
        {"json": {"input": {}}, "status": 422, "detail": "workflow"}, id="missing-workflow"
    ),
    pytest.param(
        {
            "json": {"workflow": "close_case", "input": {}},
            "status": 422,
            "detail": "unknown workflow 'close_case' for tenant 'acme' "
            "(known: escalate_case, triage_cases)",
        },
        id="unknown-workflow",
    ),
    pytest.param(
        {
            "json": {
                "workflow": "escalate_case",
                "input": {"case_id": "12; DROP", "priority": "P1"},
            },
            "status": 422,
            "detail": "/input/case_id",
        },
        id="case-id-not-a-number",
    ),
    pytest.param(
        {
            "json": {"workflow": "escalate_case", "input": {"case_id": 1, "priority": "P9"}},
            "status": 422,
            "detail": "/input/priority",
        },
        id="priority-not-allowed",
    ),
    pytest.param(
        {
            "json": {"workflow": "escalate_case", "input": {"case_id": 1, "priority": 1}},
            "status": 422,
            "detail": "/input/priority",
        },
        id="priority-wrong-type",
    ),
    pytest.param(
        {
            "json": {"workflow": "escalate_case", "input": {"priority": "P1"}},
            "status": 422,
            "detail": "'case_id' is a required property",
        },
        id="missing-case-id",
    ),
    pytest.param(
        {
            "json": {
                "workflow": "escalate_case",
                "input": {"case_id": 1, "priority": "P1", "owner_email": "not-an-email"},
            },
            "status": 422,
            "detail": "/input/owner_email",
        },
        id="owner-email-format",
    ),
    pytest.param(
        {
            "json": {
                "workflow": "escalate_case",
                "input": {"case_id": 1, "priority": "P1", "colour": "red"},
            },
            "status": 422,
            "detail": "Additional properties",
        },
        id="unexpected-input",
    ),
    pytest.param(
        {
            "json": ESCALATE,
            "tenant": "nosuchtenant",
            "status": 404,
            "detail": "unknown tenant 'nosuchtenant'",
        },
        id="unknown-tenant",
    ),
    pytest.param(
        {"json": ESCALATE, "auth": None, "status": 401, "detail": "Authorization"}, id="no-api-key"
    ),
    pytest.param(
        {"json": ESCALATE, "auth": "wrong", "status": 401, "detail": "not valid"},
        id="wrong-api-key",
    ),
    pytest.param(
        {"json": ESCALATE, "params": {"wait": 31}, "status": 400, "detail": "wait"},
        id="wait-too-long",
    ),
    pytest.param(
        {
            "json": ESCALATE,
            "headers": {"Idempotency-Key": "has space"},
            "status": 400,
            "detail": "Idempotency-Key",
        },
        id="bad-idempotency-key",
    ),
]


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_gets_a_problem_and_stores_nothing(
    live_server: LiveServer, case: dict[str, Any]
) -> None:
    with live_server.client() as client:
        before = _count(client)
        headers = {"Content-Type": "application/json", **case.get("headers", {})}
        if "auth" in case:
            headers["Authorization"] = "" if case["auth"] is None else f"Bearer {case['auth']}"
            if case["auth"] is None:
                del headers["Authorization"]
        with httpx.Client(base_url=live_server.base_url) as raw:
            response = raw.post(
                f"/v1/tenants/{case.get('tenant', 'acme')}/actions",
                params=case.get("params"),
                headers={**dict(client.headers), **headers} if "auth" not in case else headers,
                **({"content": case["content"]} if "content" in case else {"json": case["json"]}),
            )
        assert response.status_code == case["status"], response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == case["status"]
        assert problem["title"]
        assert problem["type"].startswith("/problems/")
        assert case["detail"] in problem["detail"]
        assert _count(client) == before


def test_crm_rejection_fails_with_the_crms_own_message(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.post(
            "/v1/tenants/acme/actions?wait=20",
            json={"workflow": "escalate_case", "input": {"case_id": 999999, "priority": "P1"}},
        )
        execution = response.json()
        assert execution["status"] == "failed"
        assert execution["error"]["step"] == "set_priority"
        assert execution["error"]["status"] == 404
        assert "RecordNotFound" in execution["error"]["message"]
        step = next(s for s in execution["steps"] if s["id"] == "set_priority")
        assert step["status"] == "failed"
        assert step["response"]["body"] == {"error": "RecordNotFound", "description": "Not found"}
        assert next(s for s in execution["steps"] if s["id"] == "note")["status"] == "pending"


def test_unknown_agent_email_fails_clearly(live_server: LiveServer) -> None:
    with live_server.client() as client:
        execution = client.post(
            "/v1/tenants/acme/actions?wait=20",
            json={
                "workflow": "escalate_case",
                "input": {"case_id": 5, "priority": "P1", "owner_email": "nobody@acme.test"},
            },
        ).json()
        assert execution["status"] == "failed"
        assert execution["error"]["step"] == "owner"
        assert "no user matches" in execution["error"]["message"]
        assert "nobody@acme.test" in execution["error"]["message"]


def test_executions_list_filters_and_pages(live_server: LiveServer) -> None:
    with live_server.client() as client:
        ids = []
        for case_id in (11, 12, 13):
            ids.append(
                client.post(
                    "/v1/tenants/acme/actions?wait=20",
                    json={
                        "workflow": "escalate_case",
                        "input": {"case_id": case_id, "priority": "P4"},
                    },
                ).json()["id"]
            )
        client.post(
            "/v1/tenants/acme/actions?wait=20",
            json={"workflow": "escalate_case", "input": {"case_id": 888888, "priority": "P4"}},
        )

        first = client.get("/v1/tenants/acme/executions", params={"limit": 2}).json()
        second = client.get(
            "/v1/tenants/acme/executions", params={"limit": 2, "cursor": first["next_cursor"]}
        ).json()
        failed = client.get("/v1/tenants/acme/executions", params={"status": "failed"}).json()
        bad = client.get("/v1/tenants/acme/executions", params={"status": "finished"})

        listed = [e["id"] for e in first["items"] + second["items"]]
        assert listed[1:] == list(reversed(ids))  # newest first; the failed one is newest
        assert second["next_cursor"] is None
        assert [e["status"] for e in failed["items"]] == ["failed"]
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"


def test_unknown_execution_is_a_404_problem(live_server: LiveServer) -> None:
    with live_server.client() as client:
        for execution_id in ("01a20097-9fd5-7d5a-b872-2336cb42a9f2", "not-an-id"):
            response = client.get(f"/v1/tenants/acme/executions/{execution_id}")
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"
            assert execution_id in response.json()["detail"]


def test_secrets_stay_out_of_responses_and_the_database(live_server: LiveServer) -> None:
    from uwf.sandboxes import sandbox_credentials

    token = sandbox_credentials(live_server.home, "zendesk")["api_token"]
    with live_server.client() as client:
        execution = client.post("/v1/tenants/acme/actions?wait=20", json=ESCALATE).json()
        shown = client.get(f"/v1/tenants/acme/executions/{execution['id']}").text
    assert execution["status"] == "succeeded"
    assert token not in shown
    assert "[REDACTED]" in shown  # the Authorization header was there, and was hidden
    database = (live_server.home / "uwf.db").read_bytes()
    wal = live_server.home / "uwf.db-wal"
    database += wal.read_bytes() if wal.exists() else b""
    assert token.encode() not in database


def test_health_and_openapi(live_server: LiveServer) -> None:
    with live_server.client(auth=False) as client:
        health = client.get("/healthz").json()
        spec = client.get("/openapi.json").json()
    assert health == {
        "status": "ok",
        "database": "sqlite",
        "metadata_version": 1,
        "worker": "running",
    }
    assert "/v1/tenants/{tenant}/actions" in spec["paths"]
    assert "/v1/tenants/{tenant}/executions/{execution_id}" in spec["paths"]


def test_connections_are_listed_and_tested(live_server: LiveServer) -> None:
    with live_server.client() as client:
        listed = client.get("/v1/tenants/acme/connections").json()
        ok = client.post("/v1/tenants/acme/connections/acme-zendesk/test").json()
        httpx.post(
            f"{live_server.base_url}/sandbox/zendesk/_control", json={"error_rates": {"503": 1.0}}
        ).raise_for_status()
        down = client.post("/v1/tenants/acme/connections/acme-zendesk/test").json()
        unknown = client.post("/v1/tenants/acme/connections/globex-salesforce/test")

    assert listed == [
        {
            "name": "acme-zendesk",
            "connector": "zendesk",
            "base_url": "${sandbox:zendesk}",
            "auth_type": "api_token",
            "state": "ok",
            "reason": None,
        }
    ]
    assert ok["ok"] is True
    assert ok["status"] == 200
    assert ok["rate_limit"]["limit"] == "700"
    assert int(ok["rate_limit"]["remaining"]) < 700
    assert ok["latency_ms"] > 0
    assert down["ok"] is False
    assert down["status"] == 503
    assert "503" in down["problem"]
    assert unknown.status_code == 404
    assert "known: acme-zendesk" in unknown.json()["detail"]


def _wait(client: httpx.Client, url: str, until: Any, seconds: float = 30) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + seconds
    while True:
        execution: dict[str, Any] = client.get(url).json()
        if until(execution) or time.monotonic() > deadline:
            return execution
        time.sleep(0.05)


def test_cancel_between_steps_then_replay_the_rest(live_server: LiveServer) -> None:
    control = f"{live_server.base_url}/sandbox/zendesk/_control"
    with live_server.client() as client, live_server.sandbox() as sandbox:
        httpx.post(control, json={"latency_ms": 600}).raise_for_status()
        accepted = client.post(
            "/v1/tenants/acme/actions",
            json={
                "workflow": "escalate_case",
                "input": {
                    "case_id": 61,
                    "priority": "P1",
                    "owner_email": "bob@acme.test",
                    "reason": "cancel me",
                },
            },
        )
        url = accepted.headers["Location"]
        _wait(client, url, lambda e: e["steps"][1]["status"] == "succeeded")

        cancelled = client.post(f"{url}/cancel")
        final = _wait(client, url, lambda e: e["status"] == "cancelled")
        httpx.delete(control).raise_for_status()

        assert cancelled.status_code == 200
        assert final["status"] == "cancelled"
        assert final["error"]["type"] == "cancelled"
        assert [s["status"] for s in final["steps"]][-1] == "pending"  # the note was not sent
        assert _escalation_comments(sandbox, 61) == []
        again = client.post(f"{url}/cancel")
        assert again.status_code == 409
        assert "already ended (cancelled)" in again.json()["detail"]

        replayed = client.post(f"{url}/replay")
        new_url = replayed.headers["Location"]
        done = _wait(client, new_url, lambda e: e["status"] == "succeeded")

    assert replayed.status_code == 202
    assert replayed.json()["replay_of"] == final["id"]
    assert done["status"] == "succeeded"
    kept = {s["id"]: s for s in final["steps"] if s["status"] == "succeeded"}
    for step in done["steps"]:
        if step["id"] in kept:  # copied from the original, not run again
            assert step["started_at"] == kept[step["id"]]["started_at"]
            assert step["attempts"] == kept[step["id"]]["attempts"]
    with live_server.sandbox() as sandbox:
        assert [c["body"] for c in _escalation_comments(sandbox, 61)] == ["Escalated: cancel me"]


def test_replay_refuses_what_would_write_twice(live_server: LiveServer) -> None:
    with live_server.client() as client:
        ok = client.post(
            "/v1/tenants/acme/actions?wait=20",
            json={"workflow": "escalate_case", "input": {"case_id": 62, "priority": "P2"}},
        ).json()
        failed = client.post(
            "/v1/tenants/acme/actions?wait=20",
            json={"workflow": "escalate_case", "input": {"case_id": 999991, "priority": "P2"}},
        ).json()
        base = "/v1/tenants/acme/executions"
        succeeded = client.post(f"{base}/{ok['id']}/replay")
        unknown_step = client.post(f"{base}/{failed['id']}/replay", json={"from_step": "nope"})
        not_done = client.post(f"{base}/{failed['id']}/replay", json={"from_step": "note"})
        unknown = client.post(f"{base}/01a20097-9fd5-7d5a-b872-2336cb42a9f2/replay")

    assert failed["status"] == "failed"
    assert succeeded.status_code == 409
    assert "only failed, dead or cancelled" in succeeded.json()["detail"]
    assert unknown_step.status_code == 422
    assert "steps: owner, set_priority, reassign, note" in unknown_step.json()["detail"]
    assert not_done.status_code == 422
    assert "step 'set_priority' before 'note' did not succeed" in not_done.json()["detail"]
    assert unknown.status_code == 404
