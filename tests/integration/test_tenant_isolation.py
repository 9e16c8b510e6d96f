"""Tenant isolation: every route of the API × every kind of caller, with another tenant's ids.

The routes come from the application itself (`app.routes`), so a route added later is in the
matrix without anyone remembering to add it — and a route that declares no scope fails here.
Expected: no/unknown/revoked/expired key → 401; a key of another tenant → 404 with the very
body an unknown tenant gets; the right tenant without the scope → 403; the right key → served.
No answer to a caller who may not see the tenant holds any of that tenant's data.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from fastapi.routing import APIRoute

from tests.conftest import LiveServer
from uwf.api import create_app
from uwf.store import SCOPES, Store, utcnow

VICTIM, ATTACKER = "globex", "acme"
CANARY = "canary-" + secrets.token_hex(8)  # only in the victim's execution input
VICTIM_DATA = ("Globex Corporation", "globex-salesforce", "/sandbox/salesforce", CANARY)
# Not behind API keys, on purpose: liveness carries no tenant data; the webhook routes
# (`/v1/webhooks/...`) authenticate their senders by signatures, not by callers' keys.
UNAUTHENTICATED = ("/healthz", "/v1/webhooks/")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: str

    @property
    def tenant_bound(self) -> bool:
        return "{tenant}" in self.path


def _walk(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI ≥ 0.16x keeps included routers lazy
            yield from _walk(route.original_router.routes)


def _routes(live_server: LiveServer) -> list[Route]:
    app = create_app(live_server.settings, admin_key="unused", sandboxes=False)
    found = []
    walked = list(_walk(app.routes))
    # The walk must see every operation the API publishes, or a route could escape the matrix.
    published = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert published <= {(m, r.path) for r in walked for m in r.methods}
    for route in walked:
        if route.path.startswith(UNAUTHENTICATED):
            continue
        scopes = [
            getattr(dep.call, "uwf_scope", None)
            for dep in route.dependant.dependencies
            if getattr(dep.call, "uwf_scope", None)
        ]
        assert len(scopes) == 1, f"{route.path} must declare exactly one Requires(scope)"
        found.extend(Route(m, route.path, scopes[0]) for m in sorted(route.methods))
    return found


def _key(client: httpx.Client, name: str, tenants: list[str] | None, scopes: list[str]) -> Any:
    body = {"name": name, "tenants": tenants, "scopes": scopes}
    response = client.post("/v1/keys", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _expired_key(live_server: LiveServer) -> str:
    async def make() -> str:
        store = await Store.open(live_server.settings.resolved_database_url)
        try:
            _, secret = await store.keys.create(
                name="expired",
                tenants=[VICTIM],
                scopes=list(SCOPES),
                created_by="test",
                expires_at=utcnow() - timedelta(minutes=1),
            )
            return secret
        finally:
            await store.close()

    return asyncio.run(make())


def _fill(path: str, ids: dict[str, str], tenant: str) -> str:
    values = {**ids, "tenant": tenant}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


def _body(route: Route) -> Any:
    if route.path.endswith("/actions"):
        return {"workflow": "escalate_case", "input": {"case_id": 9, "priority": "P3"}}
    if route.path == "/v1/keys":
        return {"name": "made-in-matrix", "tenants": [VICTIM], "scopes": ["executions:read"]}
    return {}


def _call(base: str, route: Route, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        if route.method in ("POST", "PUT", "PATCH"):
            return client.request(route.method, path, json=_body(route))
        return client.request(route.method, path)


def test_every_route_walls_off_other_tenants(live_server: LiveServer) -> None:
    routes = _routes(live_server)
    assert any(r.path == "/v1/tenants/{tenant}/executions/{execution_id}" for r in routes)
    admin = live_server.client()
    victim_execution = admin.post(
        f"/v1/tenants/{VICTIM}/actions?wait=20",
        json={
            "workflow": "escalate_case",
            "input": {"case_id": 999999, "priority": "P2", "reason": CANARY},
        },
    ).json()
    assert victim_execution["status"] in ("failed", "dead")  # no such case: replayable
    throwaway = _key(admin, "to-revoke-in-matrix", [VICTIM], ["executions:read"])
    ids = {
        "execution_id": victim_execution["id"],
        "name": "globex-salesforce",
        "key_id": throwaway["id"],
    }
    revoked = _key(admin, "revoked", [VICTIM], list(SCOPES))
    assert admin.delete(f"/v1/keys/{revoked['id']}").status_code == 200
    attacker_full = _key(admin, "attacker", [ATTACKER], list(SCOPES))["key"]
    attacker_service = _key(admin, "attacker-svc", [ATTACKER, "hooli"], ["admin"])["key"]
    denied_401 = {
        "no key": None,
        "unknown key": "uwf_" + secrets.token_urlsafe(32),
        "not a key": "Bearer-garbage",
        "revoked key": revoked["key"],
        "expired key": _expired_key(live_server),
    }
    failures: list[str] = []

    def check(label: str, route: Route, path: str, response: httpx.Response, expected: int) -> None:
        where = f"{route.method} {route.path} with {label}"
        if response.status_code != expected:
            failures.append(f"{where}: {response.status_code}, expected {expected}")
        if expected >= 400 and response.headers.get("content-type") != "application/problem+json":
            failures.append(f"{where}: not a problem+json answer")
        text = response.text
        # What the caller put in the path may be echoed back; anything else is a leak.
        leaked = [d for d in (*VICTIM_DATA, victim_execution["id"]) if d in text and d not in path]
        if leaked:
            failures.append(f"{where}: leaked {leaked}")

    base = live_server.base_url
    for route in routes:
        path = _fill(route.path, ids, VICTIM)
        for label, token in denied_401.items():
            check(label, route, path, _call(base, route, path, token), 401)
        if route.tenant_bound:
            unknown = _call(base, route, _fill(route.path, ids, "no-such-tenant"), attacker_full)
            for label, token in (
                ("other tenant's key", attacker_full),
                ("other tenants' service key", attacker_service),
            ):
                response = _call(base, route, path, token)
                check(label, route, path, response, 404)
                same = {k: v for k, v in response.json().items() if k != "instance"}
                expected = {k: v for k, v in unknown.json().items() if k != "instance"}
                expected["detail"] = expected["detail"].replace("no-such-tenant", VICTIM)
                if same != expected:
                    failures.append(f"{route.path}: 404 differs from an unknown tenant's")
            if "{execution_id}" in route.path:
                # Its own tenant in the path, the victim's execution id: still nothing.
                own = _fill(route.path, ids, ATTACKER)
                check(
                    "own tenant, victim's id",
                    route,
                    own,
                    _call(base, route, own, attacker_full),
                    404,
                )
                check(
                    "admin, wrong tenant's id",
                    route,
                    own,
                    _call(base, route, own, live_server.admin_key),
                    404,
                )
        other_scopes = [s for s in SCOPES if s not in (route.scope, "admin")]
        lacking = _key(admin, f"lacking-{route.scope}", [VICTIM], other_scopes)["key"]
        check("right tenant, wrong scope", route, path, _call(base, route, path, lacking), 403)
        holder = _key(admin, f"holding-{route.scope}", [VICTIM], [route.scope])["key"]
        if route.tenant_bound:
            served = _call(base, route, path, holder)
            if served.status_code in (401, 403, 404) or served.status_code >= 500:
                failures.append(
                    f"{route.method} {route.path} with the right key: {served.status_code}"
                )
    admin.close()
    assert failures == [], "\n".join(failures)


def test_audit_log_shows_a_tenant_key_only_its_tenant(live_server: LiveServer) -> None:
    with live_server.client() as admin:
        mine = _key(admin, "reader", [ATTACKER], ["executions:read"])["key"]
        victim = admin.post(
            f"/v1/tenants/{VICTIM}/actions",
            json={"workflow": "escalate_case", "input": {"case_id": 5, "priority": "P4"}},
        ).json()
        everything = admin.get("/v1/audit").json()["items"]
    reader = httpx.Client(
        base_url=live_server.base_url, headers={"Authorization": f"Bearer {mine}"}, timeout=30
    )
    with reader:
        seen = reader.get("/v1/audit")
        asked = reader.get(f"/v1/audit?tenant={VICTIM}")
        keys = reader.get("/v1/keys")
    assert victim["id"] in {row["target"] for row in everything}
    assert seen.status_code == 200
    assert victim["id"] not in seen.text
    assert {row["tenant"] for row in seen.json()["items"]} <= {ATTACKER}
    assert asked.status_code == 404
    assert keys.status_code == 403
