"""Stored secrets, key rotation and HashiCorp Vault references, against the Zendesk sandbox.

The Vault server here is an emulation of Vault's documented KV version 2 HTTP API
(`GET /v1/<mount>/data/<path>` with `X-Vault-Token`; 403 `{"errors":["permission denied"]}`
for a token without access, 404 `{"errors":[]}` for a path without a secret), served by aiohttp
on loopback: the client under test speaks real HTTP to it.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import ACME_EXAMPLES
from tests.engine_harness import EngineHarness
from tests.sandbox_server import RunningSandbox, serve_sandbox
from uwf.auth import (
    Token,
    Vault,
    VaultError,
    open_secret,
    rotate_keys,
    seal_secret,
    seal_sensitive,
    unseal_sensitive,
)
from uwf.metadata import load_directory
from uwf.settings import Settings
from uwf.store import Store, utcnow

ESCALATE = {"case_id": 40, "priority": "P2"}


def _key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _metadata(tmp_path: Path, token_ref: str) -> Path:
    directory = tmp_path / "metadata"
    shutil.copytree(ACME_EXAMPLES, directory)
    conn = directory / "acme-zendesk.yaml"
    text = conn.read_text().replace(
        "  token:\n    sandbox: zendesk\n    field: api_token\n", f"  token: {token_ref}\n"
    )
    assert token_ref in text
    conn.write_text(text.replace("timeout_seconds: 20\n", "timeout_seconds: 5\n"))
    return directory


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    with serve_sandbox(tmp_path / "home") as running:
        yield running


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = await Store.open(database_url)
    yield s
    await s.close()


async def _run(
    store: Store, sandbox: RunningSandbox, settings: Settings, metadata: Path
) -> tuple[str, dict[str, Any] | None]:
    harness = EngineHarness(store, settings, sandbox)
    harness.version, _ = await store.apply_metadata(load_directory(metadata), "test")
    try:
        done = await harness.execute("escalate_case", ESCALATE)
    finally:
        await harness.executor.stop(0)
    return done.status, done.error


async def test_a_stored_secret_authenticates_and_survives_key_rotation(
    store: Store, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    old_key, new_key = _key(), _key()
    old = Vault.load(sandbox.home, old_key)
    api_token = sandbox.credentials["api_token"]
    await store.secrets.put(
        "acme", "zendesk_token", seal_secret(old, "acme", "zendesk_token", api_token), old.key_id
    )
    # An OAuth token row made under the old key, as a worker would have left it.
    token = Token(
        access_token="at-" + secrets.token_hex(8), expires_at=utcnow() + timedelta(hours=1)
    )
    async with store.tokens.locked("conn:abc") as held:
        await held.save(token.seal(old, "conn:abc"), token.hash, token.expires_at)
    metadata = _metadata(tmp_path, "{stored: zendesk_token}")

    status, error = await _run(
        store, sandbox, Settings(home=sandbox.home, secret_key=old_key), metadata
    )
    assert status == "succeeded", error
    # A sensitive input value sealed under the old key (e.g. a failed execution to replay).
    schema = {"type": "object", "properties": {"ssn": {"type": "string", "writeOnly": True}}}
    sealed = seal_sensitive({"ssn": "123-45-6789", "n": 1}, schema, old, "acme")
    execution, _ = await store.create_execution(
        tenant="acme", workflow="escalate_case", metadata_version=1, input=sealed
    )

    ring = Vault.load(sandbox.home, new_key, old_key)
    report = await rotate_keys(store.secrets, store.tokens, ring)
    assert (report.secrets, report.tokens, report.inputs, report.failed) == (1, 1, 1, ())
    again = await rotate_keys(store.secrets, store.tokens, ring)
    assert (again.secrets, again.tokens, again.inputs, again.unchanged) == (0, 0, 0, 2)

    # The old key is gone: what is stored opens with the new key alone, not with the old one.
    new_only = Vault.load(sandbox.home, new_key)
    row = await store.secrets.get("acme", "zendesk_token")
    assert row is not None
    assert row.key_id == new_only.key_id
    assert open_secret(new_only, "acme", "zendesk_token", row.ciphertext) == api_token
    with pytest.raises(VaultError):
        open_secret(old, "acme", "zendesk_token", row.ciphertext)
    token_row = await store.tokens.get("conn:abc")
    assert token_row is not None
    assert (
        Token.unseal(new_only, "conn:abc", token_row.ciphertext or "").access_token
        == token.access_token
    )
    resealed = await store.get_execution(execution.id)
    assert resealed is not None
    assert resealed.input["ssn"] != sealed["ssn"]
    plain = unseal_sensitive(resealed.input, schema, new_only, "acme")
    assert plain == {"ssn": "123-45-6789", "n": 1}

    status, error = await _run(
        store, sandbox, Settings(home=sandbox.home, secret_key=new_key), metadata
    )
    assert status == "succeeded", error


async def test_a_missing_stored_secret_fails_the_execution_with_the_command_to_fix_it(
    store: Store, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    metadata = _metadata(tmp_path, "{stored: nowhere}")
    status, error = await _run(store, sandbox, Settings(home=sandbox.home), metadata)
    assert status == "failed"
    assert error is not None
    assert "uwf secrets set acme nowhere" in error["message"]


class VaultKvEmulation:
    """Vault's KV v2 read API, as documented: enough of it to test a client honestly."""

    def __init__(self, token: str, secrets_by_path: dict[str, dict[str, Any]]) -> None:
        self.token = token
        self.secrets = secrets_by_path
        self.reads: list[str] = []
        self.url = ""

    async def read(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        self.reads.append(path)
        if request.headers.get("X-Vault-Token") != self.token:
            return web.json_response({"errors": ["permission denied"]}, status=403)
        mount, _, rest = path.partition("/data/")
        data = self.secrets.get(f"{mount}/{rest}") if rest else None
        if data is None:
            return web.json_response({"errors": []}, status=404)
        metadata = {"created_time": "2026-11-22T00:00:00Z", "version": 1, "destroyed": False}
        return web.json_response(
            {
                "request_id": "r1",
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": {"data": data, "metadata": metadata},
                "wrap_info": None,
                "warnings": None,
            }
        )


@pytest.fixture
async def vault_server(sandbox: RunningSandbox) -> AsyncIterator[VaultKvEmulation]:
    emulation = VaultKvEmulation(
        "hvs." + secrets.token_urlsafe(16),
        {"secret/acme/zendesk": {"token": sandbox.credentials["api_token"], "note": "x"}},
    )
    app = web.Application()
    app.router.add_get("/v1/{path:.*}", emulation.read)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    emulation.url = f"http://127.0.0.1:{port}"
    yield emulation
    await runner.cleanup()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_vault_secret_authenticates_and_is_read_once_while_cached(
    store: Store, sandbox: RunningSandbox, vault_server: VaultKvEmulation, tmp_path: Path
) -> None:
    metadata = _metadata(tmp_path, "{vault: secret/data/acme/zendesk, field: token}")
    settings = Settings(
        home=sandbox.home, vault_addr=vault_server.url, vault_token=vault_server.token
    )
    harness = EngineHarness(store, settings, sandbox)
    harness.version, _ = await store.apply_metadata(load_directory(metadata), "test")
    try:
        first = await harness.execute("escalate_case", ESCALATE)
        second = await harness.execute("escalate_case", {**ESCALATE, "priority": "P3"})
    finally:
        await harness.executor.stop(0)
    assert (first.status, second.status) == ("succeeded", "succeeded"), first.error
    assert vault_server.reads == ["secret/data/acme/zendesk"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("ref", "token", "expected"),
    [
        ("{vault: secret/data/acme/zendesk, field: token}", "wrong", "403: permission denied"),
        ("{vault: secret/data/acme/nothing, field: token}", None, "no secret at"),
        ("{vault: secret/data/acme/zendesk, field: password}", None, "fields: note, token"),
    ],
)
async def test_vault_errors_name_the_path_and_never_the_token(
    store: Store,
    sandbox: RunningSandbox,
    vault_server: VaultKvEmulation,
    tmp_path: Path,
    ref: str,
    token: str | None,
    expected: str,
) -> None:
    metadata = _metadata(tmp_path, ref)
    settings = Settings(
        home=sandbox.home, vault_addr=vault_server.url, vault_token=token or vault_server.token
    )
    status, error = await _run(store, sandbox, settings, metadata)
    assert status == "failed"
    assert error is not None
    assert expected in error["message"]
    assert "secret/data/acme/" in error["message"]
    assert vault_server.token not in str(error)


def _uwf(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWF_")}
    env.update(UWF_HOME=str(home), COLUMNS="80", NO_COLOR="1")
    return subprocess.run(
        [str(Path(sys.executable).parent / "uwf"), *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_secrets_cli_sets_lists_rotates_and_deletes_without_printing_values(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    value = "canary-" + secrets.token_hex(10)
    created = _uwf(home, "secrets", "set", "acme", "zendesk_token", stdin=value + "\n")
    assert created.returncode == 0, created.stderr
    assert "stored secret zendesk_token of acme" in created.stderr
    listed = _uwf(home, "secrets", "list", "acme")
    assert listed.returncode == 0
    assert "zendesk_token" in listed.stdout
    key_id = Vault.load(home).key_id
    assert key_id in listed.stdout

    rotated = _uwf(home, "secrets", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 0 stored secret(s), 0 OAuth token(s)" in rotated.stdout
    assert "1 already used it" in rotated.stdout

    assert _uwf(home, "secrets", "set", "acme", "empty", stdin="").returncode == 2
    assert _uwf(home, "secrets", "set", "Not A Tenant", "x", stdin="v").returncode == 2
    assert _uwf(home, "secrets", "delete", "acme", "missing").returncode == 2
    deleted = _uwf(home, "secrets", "delete", "acme", "zendesk_token")
    assert deleted.returncode == 0
    assert "no stored secrets" in _uwf(home, "secrets", "list", "acme").stderr
    everything = created.stdout + created.stderr + listed.stdout + rotated.stdout
    assert value not in everything
    assert value.encode() not in (home / "uwf.db").read_bytes()
