"""Budgets in action: shared by workers on PostgreSQL, kept by the engine, one tenant's 429
pausing only its own connection."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ACME_EXAMPLES, fresh_pg_database
from tests.sandbox_server import serve_sandbox
from uwf.connectors import LimitsSpec, RateLimitHeadersSpec
from uwf.governor import Governor, SqlState
from uwf.metadata import load_directory
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import Store

NOTE = """
kind: workflow
name: note_only
tenant: acme
connection: {connection}
input_schema: {{type: object}}
steps:
  - id: note
    type: add_comment
    object: case
    record_id: "{{{{ input.case_id }}}}"
    body: "{{{{ input.text }}}}"
"""


async def test_two_workers_share_one_budget_on_postgresql(pg_server: str) -> None:
    async with fresh_pg_database(pg_server) as url:
        store = await Store.open(url)
        try:
            first, second = Governor(SqlState(store.engine)), Governor(SqlState(store.engine))
            limits = LimitsSpec(requests=10, window_seconds=3600)
            admissions = await asyncio.gather(
                *((first if i % 2 else second).admit("shared-conn", limits) for i in range(30))
            )
            await first.observe("paused-conn", limits, _headers(), 429, {}, retry_after=30)
            seen_by_other = await second.admit("paused-conn", limits)
        finally:
            await store.close()
    assert sum(a.wait == 0 for a in admissions) == 10
    assert 29 < seen_by_other.wait <= 30  # a pause one worker saw holds for every worker


def _headers() -> RateLimitHeadersSpec:
    return RateLimitHeadersSpec()


async def test_the_engine_keeps_a_connections_budget(tmp_path: Path) -> None:
    directory = tmp_path / "metadata"
    shutil.copytree(ACME_EXAMPLES, directory)
    conn = directory / "acme-zendesk.yaml"
    conn.write_text(
        conn.read_text().replace(
            "timeout_seconds: 20\n",
            "timeout_seconds: 20\nlimits:\n  requests: 3\n  window_seconds: 2\n",
        )
    )
    (directory / "note_only.yaml").write_text(NOTE.format(connection="acme-zendesk"))
    with serve_sandbox(tmp_path / "home") as sandbox:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}")
        version, _ = await store.apply_metadata(load_directory(directory), "budget")
        ids = []
        for i in range(9):
            execution, _ = await store.create_execution(
                tenant="acme",
                workflow="note_only",
                metadata_version=version,
                input={"case_id": 90, "text": f"budget {i}"},
            )
            ids.append(execution.id)
        executor = make_executor(
            Settings(home=sandbox.home, poll_interval=0.05), store, sandbox.url.rsplit("/", 1)[0]
        )
        started = time.monotonic()
        await executor.run_until_idle(30)
        elapsed = time.monotonic() - started
        await executor.runtime.close()
        finals = [await store.get_execution(i) for i in ids]
        await store.close()
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{sandbox.url}/_control")).json()["stats"]
    assert [f.status for f in finals if f] == ["succeeded"] * 9
    # 3 requests per 2 s window: 9 requests span 3 windows, so two window boundaries (more than
    # 2 s) must pass. Windows are aligned to the clock, so across a boundary a sliding second
    # may see up to 2 × 3.
    assert elapsed > 2
    assert stats["max_requests_1s"] <= 6
    assert stats["requests_total"] == 9


async def test_a_429_pauses_only_that_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acme's two Zendesk accounts: one answers 429 for a minute, the other keeps working."""
    directory = tmp_path / "metadata"
    shutil.copytree(ACME_EXAMPLES, directory)
    second = (directory / "acme-zendesk.yaml").read_text().split("---")[0]
    second = (
        second.replace("name: acme-zendesk", "name: acme-zendesk-eu")
        .replace('"${sandbox:zendesk}"', '"${env:EU_ZENDESK_URL}"')
        .replace("    sandbox: zendesk\n    field: api_token", "    env: EU_ZENDESK_TOKEN")
    )
    (directory / "eu.yaml").write_text(second)
    (directory / "note_us.yaml").write_text(NOTE.format(connection="acme-zendesk"))
    (directory / "note_eu.yaml").write_text(
        NOTE.format(connection="acme-zendesk-eu").replace("name: note_only", "name: note_eu")
    )
    with serve_sandbox(tmp_path / "us") as us, serve_sandbox(tmp_path / "eu") as eu:
        monkeypatch.setenv("EU_ZENDESK_URL", eu.url)
        monkeypatch.setenv("EU_ZENDESK_TOKEN", eu.credentials["api_token"])
        async with httpx.AsyncClient() as client:
            await client.post(f"{us.url}/_control", json={"rate_limit_per_minute": 1})
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}")
        version, _ = await store.apply_metadata(load_directory(directory), "two accounts")
        made = {}
        for workflow in ("note_only", "note_only", "note_eu", "note_eu"):
            execution, _ = await store.create_execution(
                tenant="acme",
                workflow=workflow,
                metadata_version=version,
                input={"case_id": 91, "text": f"{workflow} {len(made)}"},
            )
            made[execution.id] = workflow
        executor = make_executor(
            Settings(home=us.home, poll_interval=0.05), store, us.url.rsplit("/", 1)[0]
        )
        await executor.run_until_idle(3)  # long enough for EU; the US account is paused
        await executor.runtime.close()
        finals = {i: await store.get_execution(i) for i in made}
        await store.close()

    eu_statuses = [f.status for i, f in finals.items() if f and made[i] == "note_eu"]
    us = [f for i, f in finals.items() if f and made[i] == "note_only"]
    assert eu_statuses == ["succeeded", "succeeded"]
    assert sorted(f.status for f in us) == ["running", "succeeded"]
    waiting = next(f for f in us if f.status == "running")
    assert waiting.error is not None
    assert waiting.error["type"] in ("throttled", "retrying")
    assert "429" in waiting.error["message"]
