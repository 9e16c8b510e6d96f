"""`uwf keys` and `uwf audit`, run as a user runs them: processes, exit codes and output."""

from __future__ import annotations

import asyncio
import getpass
import json
import secrets

import httpx

from tests.conftest import EXAMPLES, start_server
from tests.integration.test_cli import Uwf, uwf  # noqa: F401 - the fixture, shared
from uwf.settings import Settings
from uwf.store import Store

ACTOR = f"cli:{getpass.getuser()}"


def test_keys_create_list_revoke_and_use(uwf: Uwf) -> None:  # noqa: F811 - fixture
    assert uwf("metadata", "apply", "examples/metadata").code == 0
    made = uwf(
        "keys", "create", "--tenant", "acme", "--scope", "actions:write",
        "--scope", "executions:read", "--name", "bridge",
    )  # fmt: skip
    secret = made.stdout.strip()
    listed = uwf("keys", "list")
    listed_json = uwf("keys", "list", "--json").json()
    key_id = listed_json[0]["id"]

    settings = Settings(home=uwf.home, metadata_dir=EXAMPLES, poll_interval=0.05)
    server, thread = start_server(settings, "test-admin-key-" + secrets.token_hex(8))
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        ) as client:
            works = client.get("/v1/tenants/acme/executions")
            hidden = client.get("/v1/tenants/globex/executions")
            revoked = uwf("keys", "revoke", key_id)
            refused = client.get("/v1/tenants/acme/executions")
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    after = uwf("keys", "list", "--json").json()
    database = (uwf.home / "uwf.db").read_bytes()

    assert made.code == 0, made.stderr
    assert secret.startswith("uwf_")
    assert "not shown again" in made.err
    assert secret not in listed.stdout
    assert f"{secret[:12]}…  active   bridge  tenants=acme" in listed.stdout
    assert listed_json[0]["scopes"] == ["actions:write", "executions:read"]
    assert works.status_code == 200
    assert hidden.status_code == 404
    assert revoked.code == 0
    assert f"revoked key {key_id} (bridge)" in revoked.err
    assert refused.status_code == 401
    assert after[0]["status"] == "revoked"
    assert secret.encode() not in database


def test_bad_key_commands_say_why_and_change_nothing(uwf: Uwf) -> None:  # noqa: F811
    assert uwf("metadata", "apply", "examples/metadata").code == 0
    cases = {
        ("--tenant", "acme", "--scope", "root"): "unknown scope(s) root",
        ("--tenant", "nope", "--scope", "admin"): "unknown tenant(s): nope",
        ("--scope", "admin"): "give --tenant (one or more) or --all-tenants",
        ("--all-tenants", "--tenant", "acme", "--scope", "admin"): "give --tenant",
        ("--all-tenants", "--scope", "admin", "--expires-in", "soon"): "is not like 90d",
    }
    for args, message in cases.items():
        result = uwf("keys", "create", "--name", "x", *args)
        assert result.code == 2, (args, result.stderr)
        assert message in result.err
        assert len(result.stderr.strip().splitlines()) == 1
    unknown = uwf("keys", "revoke", "0190aaaa-0000-7000-8000-000000000000")

    assert json.loads(uwf("keys", "list", "--json").stdout) == []
    assert unknown.code == 1
    assert "no key '0190aaaa-0000-7000-8000-000000000000'" in unknown.err


def test_cli_changes_are_audited_and_uwf_audit_prints_them(uwf: Uwf) -> None:  # noqa: F811
    applied = uwf("metadata", "apply", "examples/metadata")
    again = uwf("metadata", "apply", "examples/metadata")  # unchanged: not a new version
    made = uwf("keys", "create", "--all-tenants", "--scope", "admin", "--name", "ops")
    key_id = uwf("keys", "list", "--json").json()[0]["id"]
    uwf("keys", "revoke", key_id)

    async def queue_and_token() -> str:
        store = await Store.open(Settings(home=uwf.home).resolved_database_url)
        try:
            active = await store.active_metadata()
            assert active is not None
            execution, _ = await store.create_execution(
                tenant="acme",
                workflow="escalate_case",
                metadata_version=active[0],
                input={"case_id": 1, "priority": "P1"},
            )
            async with store.tokens.locked("acme-zendesk:token"):
                pass  # a token record, as an OAuth connection leaves one
            return execution.id
        finally:
            await store.close()

    execution_id = asyncio.run(queue_and_token())
    cancelled = uwf("executions", "cancel", execution_id)
    reauth = uwf("connections", "reauth", "acme-zendesk")
    table = uwf("audit")
    rows = uwf("audit", "--json").json()
    acme_only = uwf("audit", "--tenant", "acme", "--json").json()
    bad = uwf("audit", "--action", "key.deleted")

    assert applied.code == again.code == made.code == cancelled.code == reauth.code == 0
    assert [(r["action"], r["tenant"], r["target"], r["outcome"]) for r in rows] == [
        ("credentials.changed", "acme", "acme-zendesk", "succeeded"),
        ("execution.cancelled", "acme", execution_id, "succeeded"),
        ("key.revoked", None, key_id, "succeeded"),
        ("key.created", None, key_id, "succeeded"),
        ("metadata.applied", None, "1", "succeeded"),
    ]
    assert {r["actor"] for r in rows} == {ACTOR}
    assert [r["action"] for r in acme_only] == ["credentials.changed", "execution.cancelled"]
    assert table.code == 0
    assert len(table.stdout.splitlines()) == 5
    assert f"execution.cancelled  succeeded tenant=acme  target={execution_id}" in table.stdout
    assert bad.code == 2
    assert "unknown action 'key.deleted'" in bad.err
    assert made.stdout.strip() not in table.stdout + str(rows)
