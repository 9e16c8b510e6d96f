"""Every OAuth grant a built-in connector declares, against its CRM's token endpoint.

UWF's own OAuth client (uwf.auth) asks each sandbox's emulation of the vendor's token
endpoint — with the vendor's form, grant types and answers — for a token, then makes the
connector's `health` call with it. Exactly one token request per grant.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sandbox_server import RunningSandbox, serve_sandbox
from uwf.metadata import ConnectionSpec, MetadataBundle, TenantSpec
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import Store


def _ref(crm: str, field: str) -> dict[str, str]:
    return {"sandbox": crm, "field": field}


# (crm, base_url under the sandbox, auth, the grant_type the token endpoint should see)
GRANTS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "salesforce",
        "/services/data/v59.0",
        {
            "type": "jwt_bearer",
            "client_id": _ref("salesforce", "client_id"),
            "username": "integration@globex.sandbox",
            "private_key": _ref("salesforce", "private_key_pem"),
            "token_url": "${sandbox:salesforce}/services/oauth2/token",
        },
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ),
    (
        "salesforce",
        "/services/data/v59.0",
        {
            "type": "oauth2_refresh_token",
            "client_id": _ref("salesforce", "client_id"),
            "client_secret": _ref("salesforce", "client_secret"),
            "refresh_token": _ref("salesforce", "refresh_token"),
            "token_url": "${sandbox:salesforce}/services/oauth2/token",
        },
        "refresh_token",
    ),
    (
        "salesforce",
        "/services/data/v59.0",
        {
            "type": "oauth2_client_credentials",
            "client_id": _ref("salesforce", "client_id"),
            "client_secret": _ref("salesforce", "client_secret"),
            "token_url": "${sandbox:salesforce}/services/oauth2/token",
        },
        "client_credentials",
    ),
    (
        "servicenow",
        "",
        {
            "type": "oauth2_password",
            "client_id": _ref("servicenow", "client_id"),
            "client_secret": _ref("servicenow", "client_secret"),
            "username": "admin",
            "password": _ref("servicenow", "password"),
        },
        "password",
    ),
    (
        "servicenow",
        "",
        {
            "type": "oauth2_refresh_token",
            "client_id": _ref("servicenow", "client_id"),
            "client_secret": _ref("servicenow", "client_secret"),
            "refresh_token": _ref("servicenow", "refresh_token"),
        },
        "refresh_token",
    ),
    (
        "hubspot",
        "",
        {
            "type": "oauth2_refresh_token",
            "client_id": _ref("hubspot", "client_id"),
            "client_secret": _ref("hubspot", "client_secret"),
            "refresh_token": _ref("hubspot", "refresh_token"),
        },
        "refresh_token",
    ),
    (
        "dynamics",
        "/api/data/v9.2",
        {
            "type": "oauth2_client_credentials",
            "client_id": _ref("dynamics", "client_id"),
            "client_secret": _ref("dynamics", "client_secret"),
            "scope": "https://uwf-sandbox.crm.dynamics.com/.default",
            "token_url": "${sandbox:dynamics}/login/uwf-sandbox.onmicrosoft.com/oauth2/v2.0/token",
        },
        "client_credentials",
    ),
]


@pytest.fixture(params=GRANTS, ids=lambda g: f"{g[0]}-{g[2]['type']}")
def grant(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    crm, path, auth, grant_type = request.param
    with serve_sandbox(tmp_path / "home", crm) as sandbox:
        yield sandbox, crm, path, auth, grant_type


def _token_requests(sandbox: RunningSandbox) -> dict[str, int]:
    stats = httpx.get(f"{sandbox.url}/_control", timeout=10).json()["stats"]
    assert stats["token_requests"] == sum(stats["token_requests_by_grant_type"].values())
    return {str(k): int(v) for k, v in stats["token_requests_by_grant_type"].items()}


async def test_each_grant_gets_one_token_and_calls_the_crm(
    grant: tuple[Any, ...], tmp_path: Path
) -> None:
    sandbox, crm, path, auth, grant_type = grant
    connection = ConnectionSpec.model_validate(
        {
            "kind": "connection",
            "name": f"{crm}-oauth",
            "tenant": "t",
            "connector": crm,
            "base_url": f"${{sandbox:{crm}}}{path}",
            "auth": auth,
        }
    )
    bundle = MetadataBundle((TenantSpec(kind="tenant", name="t"), connection))
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}")
    version, _ = await store.apply_metadata(bundle, "grant test")
    executor = make_executor(Settings(home=sandbox.home), store, sandbox.url.rsplit("/", 1)[0])
    try:
        reports = [await executor.probe(version, connection) for _ in range(3)]
    finally:
        await executor.runtime.close()
        await store.close()
    assert [r["ok"] for r in reports] == [True] * 3, reports[0]["problem"]
    assert _token_requests(sandbox) == {grant_type: 1}
