"""Canary secrets: plant unique secrets, run executions that succeed and fail, then look for them.

A real `uwf serve` process (its built-in sandboxes as the CRMs) runs with debug logging. The
canaries: a stored secret (the Zendesk API token), a wrong stored secret (the CRM answers 401),
an environment secret (the Dynamics client secret), the OAuth access token the Dynamics
sandbox issues, and an input field the workflow marks sensitive (sent to the CRM, which echoes
it back). Afterwards none of them may appear in the server's log output, in the Pipe DB (the
SQLite file's bytes, or every row of every PostgreSQL table as text), or in any API response.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES, PG_URL, free_socket, fresh_pg_database_sync
from uwf.sandboxes import sandbox_credentials

FILE_CLAIM = """
kind: workflow
name: file_claim
tenant: acme
connection: acme-zendesk
input_schema:
  type: object
  required: [subject, text, ssn]
  properties:
    subject: {type: string}
    text: {type: string}
    ssn: {type: string, writeOnly: true, pattern: "^canary-"}
steps:
  - id: ticket
    type: create_record
    object: case
    fields:
      subject: "{{ input.subject }} for {{ input.ssn }}"
      comment:
        body: "{{ input.text }}"
output:
  ticket_id: "{{ steps.ticket.id }}"
  subject: "{{ steps.ticket.subject }}"
---
kind: workflow
name: file_claim_badcreds
tenant: acme
connection: acme-zendesk-bad
input_schema:
  type: object
  properties:
    ssn: {type: string, x-uwf-sensitive: true}
steps:
  - id: ticket
    type: create_record
    object: case
    fields:
      subject: "claim {{ input.ssn }}"
      comment:
        body: "hello"
"""

CONNECTIONS = """
kind: connection
name: acme-zendesk
tenant: acme
connector: zendesk
base_url: "${sandbox:zendesk}"
auth:
  type: api_token
  email: admin@uwf-sandbox.test
  token: {stored: zendesk_token}
timeout_seconds: 5
retry: {max_attempts: 2, initial_delay_seconds: 0.05, max_delay_seconds: 0.1}
---
kind: connection
name: acme-zendesk-bad
tenant: acme
connector: zendesk
base_url: "${sandbox:zendesk}"
auth:
  type: api_token
  email: admin@uwf-sandbox.test
  token: {stored: wrong_token}
timeout_seconds: 5
retry: {max_attempts: 2, initial_delay_seconds: 0.05, max_delay_seconds: 0.1}
"""


def _uwf(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    script = Path(sys.executable).parent / "uwf"
    proc = subprocess.run(
        [str(script), *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout + proc.stderr


def _metadata(tmp_path: Path) -> Path:
    directory = tmp_path / "metadata"
    directory.mkdir()
    shutil.copy(EXAMPLES / "acme" / "tenants.yaml", directory / "tenants.yaml")
    value_maps = (EXAMPLES / "acme" / "acme-zendesk.yaml").read_text().split("---", 1)[1]
    (directory / "acme-zendesk.yaml").write_text(CONNECTIONS + "---" + value_maps)
    (directory / "file_claim.yaml").write_text(FILE_CLAIM)
    (directory / "contoso.yaml").write_text(
        (EXAMPLES / "contoso.yaml")
        .read_text()
        .replace(
            "  client_secret:\n    sandbox: dynamics\n    field: client_secret\n",
            "  client_secret: {env: CANARY_DYNAMICS_SECRET}\n",
        )
    )
    assert "CANARY_DYNAMICS_SECRET" in (directory / "contoso.yaml").read_text()
    return directory


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    request.getfixturevalue("pg_server")
    with fresh_pg_database_sync(PG_URL) as url:
        yield url


def _all_pg_text(url: str) -> str:
    import asyncpg

    async def dump() -> str:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            parts = []
            for row in tables:
                # Table names come from the catalogue, not from input.
                query = f'SELECT row_to_json(t)::text AS r FROM "{row[0]}" t'  # noqa: S608
                rows = await conn.fetch(query)
                parts.extend(r["r"] for r in rows)
            return "\n".join(parts)
        finally:
            await conn.close()

    return asyncio.run(dump())


def _oauth_tokens(env: dict[str, str]) -> list[str]:
    """The access tokens UWF holds (decrypted with its own key, as only UWF could)."""
    from uwf.auth import Token
    from uwf.service import load_vault
    from uwf.settings import Settings
    from uwf.store import Store

    async def read() -> list[str]:
        settings = Settings(home=Path(env["UWF_HOME"]), database_url=env.get("UWF_DATABASE_URL"))
        vault = load_vault(settings)
        store = await Store.open(settings.resolved_database_url, migrate=False)
        try:
            rows = [r for r in await store.tokens.all() if r.ciphertext]
            return [Token.unseal(vault, r.key, r.ciphertext or "").access_token for r in rows]
        finally:
            await store.close()

    return asyncio.run(read())


def test_no_canary_secret_leaks_anywhere(tmp_path: Path, database: str | None) -> None:
    home = tmp_path / "home"
    zendesk = sandbox_credentials(home, "zendesk")
    dynamics = sandbox_credentials(home, "dynamics")
    wrong_token = "canary-wrong-" + secrets.token_hex(12)
    ssn = "canary-ssn-" + secrets.token_hex(8)
    admin_key = "canary-admin-" + secrets.token_hex(12)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWF_")}
    env.update(
        UWF_HOME=str(home),
        UWF_METADATA_DIR=str(_metadata(tmp_path)),
        UWF_ADMIN_KEY=admin_key,
        UWF_LOG_LEVEL="debug",
        UWF_POLL_INTERVAL="0.05",
        CANARY_DYNAMICS_SECRET=dynamics["client_secret"],
        NO_COLOR="1",
    )
    if database is not None:
        env["UWF_DATABASE_URL"] = database
    _uwf(env, "secrets", "set", "acme", "zendesk_token", stdin=zendesk["api_token"])
    _uwf(env, "secrets", "set", "acme", "wrong_token", stdin=wrong_token + "\n")

    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "uwf"), "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    responses: list[str] = []
    try:
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60
        )

        def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
            response = client.request(method, url, **kwargs)
            responses.append(f"{dict(response.headers)}\n{response.text}")
            return response

        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "uwf serve did not start"
            time.sleep(0.2)

        def act(tenant: str, workflow: str, data: dict[str, Any]) -> dict[str, Any]:
            submitted = call(
                "POST",
                f"/v1/tenants/{tenant}/actions",
                params={"wait": 20},
                json={"workflow": workflow, "input": data},
            )
            assert submitted.status_code in (200, 202), submitted.text
            execution: dict[str, Any] = submitted.json()
            for _ in range(100):
                if execution["status"] in ("succeeded", "failed", "dead"):
                    return execution
                time.sleep(0.2)
                execution = call("GET", f"/v1/tenants/{tenant}/executions/{execution['id']}").json()
            raise AssertionError(f"execution did not finish: {execution}")

        ok = act("acme", "file_claim", {"subject": "Claim", "text": "please", "ssn": ssn})
        assert ok["status"] == "succeeded", ok
        assert ok["input"]["ssn"] == "***"
        assert ok["output"]["subject"] != f"Claim for {ssn}"  # the CRM echoed it; masked
        invalid = act("acme", "file_claim", {"subject": "Claim", "text": "", "ssn": ssn})
        assert invalid["status"] == "failed", invalid
        assert "422" in invalid["error"]["message"]
        refused = act("acme", "file_claim_badcreds", {"ssn": ssn})
        assert refused["status"] == "failed", refused
        assert "401" in refused["error"]["message"]
        bad_input = call(
            "POST",
            "/v1/tenants/acme/actions",
            json={"workflow": "file_claim", "input": {"subject": "x", "text": "y", "ssn": 1}},
        )
        assert bad_input.status_code == 422
        also_bad = call(
            "POST",
            "/v1/tenants/acme/actions",
            json={
                "workflow": "file_claim",
                "input": {"subject": "x", "text": "y", "ssn": "not-" + ssn},
            },
        )
        assert also_bad.status_code == 422, also_bad.text  # the pattern quotes the value
        missing = act("contoso", "escalate_case", {"case_id": "missing-case", "priority": "P1"})
        assert missing["status"] in ("failed", "dead"), missing
        tested = call("POST", "/v1/tenants/contoso/connections/contoso-dynamics/test")
        assert tested.json()["ok"] is True, tested.text
        tested_bad = call("POST", "/v1/tenants/acme/connections/acme-zendesk-bad/test")
        assert tested_bad.json()["ok"] is False

        # Every GET route of the API, with the ids this test created.
        ids = {"tenant": ["acme", "contoso"], "execution_id": [ok["id"], invalid["id"]]}
        spec = call("GET", "/openapi.json").json()
        for path, operations in spec["paths"].items():
            if "get" not in operations:
                continue
            urls = [path]
            for name, values in ids.items():
                urls = [u.replace("{" + name + "}", v) for u in urls for v in values]
            for url in urls:
                if "{" not in url:
                    call("GET", url)
        for tenant in ("acme", "contoso"):
            listing = call("GET", f"/v1/tenants/{tenant}/executions").json()
            for item in listing["items"] if isinstance(listing, dict) else listing:
                call("GET", f"/v1/tenants/{tenant}/executions/{item['id']}")
    finally:
        client.close()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    access_tokens = _oauth_tokens(env)
    assert access_tokens, "the Dynamics sandbox issued no token"
    basic = base64.b64encode(f"{zendesk['email']}/token:{zendesk['api_token']}".encode()).decode()
    canaries = {
        "stored secret": zendesk["api_token"],
        "stored secret as Basic auth": basic,
        "wrong stored secret": wrong_token,
        "environment secret": dynamics["client_secret"],
        "sensitive input": ssn,
        "admin key": admin_key,
        **{f"OAuth access token {i}": t for i, t in enumerate(access_tokens)},
    }
    logs = log_path.read_text()
    assert "execution advanced" in logs  # debug logging did run
    places = {"server log": logs, "API responses": "\n".join(responses)}
    if database is None:
        places["SQLite files"] = "\n".join(
            p.read_bytes().decode("latin-1") for p in sorted(home.glob("uwf.db*"))
        )
        assert places["SQLite files"]
    else:
        places["PostgreSQL rows"] = _all_pg_text(database)
        assert "file_claim" in places["PostgreSQL rows"]
    leaks = [
        f"{what} in {where}"
        for what, value in canaries.items()
        for where, text in places.items()
        if value in text
    ]
    assert leaks == []
