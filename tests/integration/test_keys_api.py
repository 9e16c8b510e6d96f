"""Callers' keys, the audit log and request limits, through a live API on loopback."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES, LiveServer, start_server
from uwf.settings import Settings

ESCALATE = {"workflow": "escalate_case", "input": {"case_id": 123, "priority": "P2"}}


def _as(live_server: LiveServer, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=live_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _audit(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_key_lifecycle_through_the_api(live_server: LiveServer) -> None:
    with live_server.client() as admin:
        created = admin.post(
            "/v1/keys",
            json={"name": "crm-bridge", "tenants": ["acme"], "scopes": ["executions:read"]},
        )
        secret = created.json()["key"]
        listed = admin.get("/v1/keys")
        with _as(live_server, secret) as caller:
            before = caller.get("/v1/tenants/acme/executions")
            writes = caller.post("/v1/tenants/acme/actions", json=ESCALATE)
            revoked = admin.delete(f"/v1/keys/{created.json()['id']}")
            after = caller.get("/v1/tenants/acme/executions")
        audit = _audit(admin)

    assert created.status_code == 201
    assert secret.startswith("uwf_")
    assert created.json()["status"] == "active"
    assert listed.status_code == 200
    assert secret not in listed.text
    assert [k["prefix"] for k in listed.json()] == [secret[:12]]
    assert before.status_code == 200
    assert writes.status_code == 403
    assert "actions:write" in writes.json()["detail"]
    assert revoked.json()["status"] == "revoked"
    assert after.status_code == 401
    assert after.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    key_rows = [r for r in audit if r["action"].startswith("key.")]
    assert [(r["action"], r["actor"], r["tenant"]) for r in key_rows] == [
        ("key.revoked", "admin", "acme"),
        ("key.created", "admin", "acme"),
    ]
    # The database holds the hash and the prefix, never the key.
    database = (live_server.home / "uwf.db").read_bytes()
    wal = live_server.home / "uwf.db-wal"
    database += wal.read_bytes() if wal.exists() else b""
    assert secret.encode() not in database
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in database


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"name": "x", "scopes": ["root"]}, "unknown scope(s) root"),
        ({"name": "x", "tenants": ["nope"], "scopes": ["admin"]}, "unknown tenant(s): nope"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "tenants": [], "scopes": ["admin"]}, "tenants"),
        (
            {"name": "x", "scopes": ["admin"], "expires_at": "2001-01-01T00:00:00Z"},
            "future time",
        ),
    ],
    ids=["unknown-scope", "unknown-tenant", "no-scope", "no-tenant", "expired"],
)
def test_bad_key_requests_are_problems_and_create_nothing(
    live_server: LiveServer, body: dict[str, Any], detail: str
) -> None:
    with live_server.client() as admin:
        response = admin.post("/v1/keys", json=body)
        listed = admin.get("/v1/keys").json()

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.text
    assert listed == []


def test_only_an_admin_key_for_every_tenant_manages_keys(live_server: LiveServer) -> None:
    with live_server.client() as admin:
        tenant_admin = admin.post(
            "/v1/keys", json={"name": "acme-admin", "tenants": ["acme"], "scopes": ["admin"]}
        ).json()["key"]
        service = admin.post("/v1/keys", json={"name": "ops", "scopes": ["admin"]}).json()["key"]
    with _as(live_server, tenant_admin) as limited, _as(live_server, service) as ops:
        refused = limited.post("/v1/keys", json={"name": "y", "scopes": ["admin"]})
        allowed = ops.post("/v1/keys", json={"name": "z", "scopes": ["executions:read"]})
        on_tenant = limited.get("/v1/tenants/acme/workflows")

    assert refused.status_code == 403
    assert allowed.status_code == 201
    assert on_tenant.status_code == 200  # admin covers every scope on its own tenant


def test_each_audited_api_action_leaves_one_row(live_server: LiveServer) -> None:
    control = f"{live_server.base_url}/sandbox/zendesk/_control"
    with live_server.client() as admin:
        made = admin.post(
            "/v1/keys",
            json={"name": "writer", "tenants": ["acme"], "scopes": ["actions:write"]},
        ).json()
        with _as(live_server, made["key"]) as writer:
            headers = {"Idempotency-Key": "audit-1", "X-Request-Id": "req-audit-1"}
            first = writer.post("/v1/tenants/acme/actions?wait=20", json=ESCALATE, headers=headers)
            repeat = writer.post("/v1/tenants/acme/actions", json=ESCALATE, headers=headers)
            failed = writer.post(
                "/v1/tenants/acme/actions?wait=20",
                json={"workflow": "escalate_case", "input": {"case_id": 999992, "priority": "P2"}},
            ).json()
            replayed = writer.post(f"/v1/tenants/acme/executions/{failed['id']}/replay")
            httpx.post(control, json={"latency_ms": 800}).raise_for_status()
            slow = writer.post("/v1/tenants/acme/actions", json=ESCALATE).json()
            cancelled = writer.post(f"/v1/tenants/acme/executions/{slow['id']}/cancel")
            httpx.delete(control).raise_for_status()
            invalid = writer.post(
                "/v1/tenants/acme/actions", json={"workflow": "nope", "input": {}}
            )
        rows = _audit(admin, tenant="acme")
        only_replays = _audit(admin, action="execution.replayed")

    actor = f"key:{made['id']} (writer)"
    assert first.headers["X-Request-Id"] == "req-audit-1"
    assert repeat.json()["id"] == first.json()["id"]
    assert invalid.status_code == 422
    by_target: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_target.setdefault(row["target"], []).append(row)
    accepted = by_target[first.json()["id"]]
    assert [(r["action"], r["actor"], r["outcome"], r["request_id"]) for r in accepted] == [
        ("action.accepted", actor, "succeeded", "req-audit-1")
    ]
    assert [r["action"] for r in by_target[replayed.json()["id"]]] == ["execution.replayed"]
    assert by_target[replayed.json()["id"]][0]["details"] == {"replay_of": failed["id"]}
    assert cancelled.status_code == 200
    assert [r["action"] for r in by_target[slow["id"]]] == [  # newest first
        "execution.cancelled",
        "action.accepted",
    ]
    assert {r["actor"] for r in rows if r["action"] != "key.created"} == {actor}
    # Four actions accepted (the repeat and the invalid one are not), one replay, one cancel.
    assert sorted(r["action"] for r in rows if r["action"] != "key.created") == sorted(
        ["action.accepted"] * 3 + ["execution.replayed", "execution.cancelled"]
    )
    assert [r["target"] for r in only_replays] == [replayed.json()["id"]]


def test_audit_pages_with_a_cursor_and_filters_by_time(live_server: LiveServer) -> None:
    with live_server.client() as admin:
        for i in range(5):
            admin.post("/v1/keys", json={"name": f"k{i}", "scopes": ["executions:read"]})
        first = admin.get("/v1/audit", params={"limit": 3, "action": "key.created"}).json()
        second = admin.get(
            "/v1/audit",
            params={"limit": 3, "action": "key.created", "cursor": first["next_cursor"]},
        ).json()
        future = admin.get("/v1/audit", params={"since": "2999-01-01T00:00:00Z"}).json()
        bad = admin.get("/v1/audit", params={"cursor": "nope"})

    names = [r["details"]["name"] for r in first["items"] + second["items"]]
    assert names == ["k4", "k3", "k2", "k1", "k0"]
    assert second["next_cursor"] is None
    assert future["items"] == []
    assert bad.status_code == 400


# -- request limits -------------------------------------------------------------------------


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server with a tiny per-caller rate: 3 at once, then one per 100 seconds."""
    home = tmp_path / "home"
    key = "test-admin-key-" + secrets.token_hex(8)
    settings = Settings(
        home=home,
        metadata_dir=EXAMPLES,
        poll_interval=0.05,
        api_rate_limit=0.01,
        api_rate_burst=3,
    )
    server, thread = start_server(settings, key)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", key, home, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_a_caller_over_its_rate_gets_429_with_retry_after(strict_server: LiveServer) -> None:
    with strict_server.client() as admin:
        answers = [admin.get("/v1/tenants/acme/workflows") for _ in range(4)]
    with strict_server.client(auth=False) as anonymous:
        other = anonymous.get(
            "/v1/tenants/acme/workflows", headers={"Authorization": "Bearer uwf_unknown"}
        )

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["type"] == "/problems/rate-limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 100
    assert other.status_code == 401  # another caller's bucket is untouched


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_body_size_and_json_depth_are_limited(live_server: LiveServer) -> None:
    url = "/v1/tenants/acme/actions"
    big = json.dumps({"workflow": "escalate_case", "input": {"reason": "x" * 1_100_000}})

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 65_536

    with live_server.client() as client:
        declared = client.post(url, content=big, headers={"Content-Type": "application/json"})
        streamed = client.post(url, content=chunks(), headers={"Content-Type": "application/json"})
        deep = client.post(
            url, json={"workflow": "escalate_case", "input": {"reason": _nested(40)}}
        )
        shallow = client.post(
            url, json={"workflow": "escalate_case", "input": {"reason": _nested(20)}}
        )
        stringy = client.post(
            url,
            json={
                "workflow": "escalate_case",
                "input": {"case_id": 1, "priority": "P1", "reason": "[" * 100},
            },
        )
        total = client.get("/v1/tenants/acme/executions").json()["items"]

    assert declared.status_code == 413
    assert declared.json()["type"] == "/problems/body-too-large"
    assert streamed.status_code == 413
    assert deep.status_code == 400
    assert deep.json()["type"] == "/problems/json-too-deep"
    assert shallow.status_code == 422  # within the depth limit; the schema refuses it
    assert stringy.status_code == 202  # brackets inside strings are not nesting
    assert len(total) == 1


def test_refused_cancels_and_replays_are_audited_with_the_reason(
    live_server: LiveServer,
) -> None:
    with live_server.client() as admin:
        done = admin.post("/v1/tenants/acme/actions?wait=20", json=ESCALATE).json()
        assert done["status"] == "succeeded"
        cancel = admin.post(f"/v1/tenants/acme/executions/{done['id']}/cancel")
        replay = admin.post(f"/v1/tenants/acme/executions/{done['id']}/replay")
        rows = [r for r in _audit(admin, tenant="acme") if r["target"] == done["id"]]

    assert (cancel.status_code, replay.status_code) == (409, 409)
    refused = {r["action"]: r for r in rows if r["outcome"] == "refused"}
    assert sorted(refused) == ["execution.cancelled", "execution.replayed"]
    assert "already ended" in refused["execution.cancelled"]["details"]["reason"]
    assert refused["execution.replayed"]["details"]["reason"] == replay.json()["detail"]
