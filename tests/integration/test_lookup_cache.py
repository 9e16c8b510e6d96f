"""Lookup steps: the per-connection TTL cache and the `default:` for a missing match, against the
Zendesk sandbox, counted through the sandbox's own request statistics."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import ACME_EXAMPLES
from tests.engine_harness import EngineHarness, fast_retries
from tests.sandbox_server import RunningSandbox, serve_sandbox
from uwf.metadata import load_directory
from uwf.settings import Settings
from uwf.store import Store

SEARCH = "GET /api/v2/users/search.json"
OWNER_OF = """
kind: workflow
name: owner_of
tenant: acme
connection: acme-zendesk
input_schema:
  type: object
  required: [email]
steps:
  - id: owner
    type: lookup
    object: user
    criteria:
      email: "{{ input.email }}"
    {extra}
output:
  owner_id: "{{ steps.owner.id }}"
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    with serve_sandbox(tmp_path / "home") as running:
        yield running


async def _harness(
    database_url: str, sandbox: RunningSandbox, tmp_path: Path, connection_ttl: float, extra: str
) -> AsyncIterator[EngineHarness]:
    directory = tmp_path / "metadata"
    shutil.copytree(ACME_EXAMPLES, directory)
    conn = directory / "acme-zendesk.yaml"
    text = fast_retries(conn.read_text())
    conn.write_text(
        text.replace(
            "timeout_seconds: 5\n",
            f"timeout_seconds: 5\nlookup_cache_ttl_seconds: {connection_ttl}\n",
        )
    )
    (directory / "owner_of.yaml").write_text(OWNER_OF.replace("{extra}", extra))
    store = await Store.open(database_url)
    settings = Settings(home=sandbox.home, poll_interval=0.05, lease_seconds=2)
    harness = EngineHarness(store, settings, sandbox)
    harness.version, _ = await store.apply_metadata(load_directory(directory), "test")
    try:
        yield harness
    finally:
        await harness.executor.runtime.close()
        await store.close()


@pytest.fixture
async def cached(
    database_url: str, sandbox: RunningSandbox, tmp_path: Path
) -> AsyncIterator[EngineHarness]:
    async for harness in _harness(database_url, sandbox, tmp_path, 300, ""):
        yield harness


async def test_same_owner_email_twice_searches_once(cached: EngineHarness) -> None:
    cached.sandbox.reset()

    first = await cached.execute("owner_of", {"email": "bob@acme.test"})
    second = await cached.execute("owner_of", {"email": "bob@acme.test"})

    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert first.output == second.output
    assert isinstance(first.output["owner_id"], int)
    assert cached.sandbox.stats()["by_route"][SEARCH] == 1
    [run] = await cached.store.step_runs(second.id)
    assert run.request is not None
    assert run.request["cached"] is True

    other = await cached.execute("owner_of", {"email": "carol@acme.test"})
    assert other.status == "succeeded"
    assert other.output != first.output
    assert cached.sandbox.stats()["by_route"][SEARCH] == 2


async def test_a_missing_match_is_not_cached_and_names_the_criteria(
    cached: EngineHarness,
) -> None:
    cached.sandbox.reset()

    for _ in range(2):
        missing = await cached.execute("owner_of", {"email": "nobody@acme.test"})
        assert missing.status == "failed"
        assert missing.error is not None
        assert missing.error["message"] == 'no user matches {"email": "nobody@acme.test"}'

    assert cached.sandbox.stats()["by_route"][SEARCH] == 2


async def test_the_step_ttl_overrides_the_connection(
    database_url: str, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    async for harness in _harness(database_url, sandbox, tmp_path, 300, "cache_ttl_seconds: 0"):
        sandbox.reset()
        for _ in range(2):
            done = await harness.execute("owner_of", {"email": "bob@acme.test"})
            assert done.status == "succeeded"
        assert sandbox.stats()["by_route"][SEARCH] == 2


async def test_a_missing_match_falls_back_to_the_default(
    database_url: str, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    extra = "default: {id: 424242, name: Triage queue}"
    async for harness in _harness(database_url, sandbox, tmp_path, 0, extra):
        done = await harness.execute("owner_of", {"email": "nobody@acme.test"})
        assert done.status == "succeeded"
        assert done.output == {"owner_id": 424242}
        found = await harness.execute("owner_of", {"email": "bob@acme.test"})
        assert found.output is not None
        assert found.output["owner_id"] != 424242
