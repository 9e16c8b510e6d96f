"""Budgets in action: shared by workers on PostgreSQL, kept by the engine, one tenant's 429
pausing only its own connection."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import secrets
import shutil
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ACME_EXAMPLES, fresh_pg_database
from tests.governor_states import redis_server  # noqa: F401 - a fixture
from tests.sandbox_server import serve_sandbox
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


# One worker process: hammers a rate-limited and a concurrency-limited connection with a few
# coroutines each, and prints what it was admitted (times from the governor's own clock).
WORKER = """
import asyncio, contextvars, json, random, sys, time
from uwf.connectors import LimitsSpec
from uwf.governor import Governor, RedisState, SqlState
from uwf.store import Store

kind, url, prefix, seconds = sys.argv[1:5]
seconds = float(seconds)
RATED = LimitsSpec(requests=12, window_seconds=1.5)
LIMITED = LimitsSpec(max_concurrency=2)

async def main():
    store = None
    if kind == "postgres":
        store = await Store.open(url)
        state = SqlState(store.engine)
    else:
        state = RedisState.from_url(url, prefix)
    # Each coroutine is its own task: the time the governor read for *this* admission.
    last = contextvars.ContextVar("last", default=0.0)
    def clock():
        now = time.time()
        last.set(now)
        return now
    governor = Governor(state, clock=clock)
    out = {"admitted": [], "held": []}

    async def rated():
        while time.time() < start + seconds:
            admission = await governor.admit("rated", RATED)
            if admission.wait == 0:
                out["admitted"].append(last.get())
            else:
                await asyncio.sleep(min(admission.wait, 0.05))

    async def limited():
        while time.time() < start + seconds:
            admission = await governor.admit("limited", LIMITED)
            if admission.wait:
                await asyncio.sleep(0.005)
                continue
            async with governor.slot("limited", LIMITED, admission):
                began = time.time()
                await asyncio.sleep(random.uniform(0.005, 0.03))
                out["held"].append([began, time.time()])

    print("ready", flush=True)  # then wait for the common start time
    start = float(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, start - time.time()))
    await asyncio.gather(*(rated() for _ in range(3)), *(limited() for _ in range(3)))
    await governor.close()
    if store is not None:
        await store.close()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["postgres", "redis"])
async def test_worker_processes_share_one_budget_and_one_concurrency_limit(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Three processes, each with its own governor, against one PostgreSQL or one Redis."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "postgres":
            url = await stack.enter_async_context(
                fresh_pg_database(request.getfixturevalue("pg_server"))
            )
            await (await Store.open(url)).close()  # the governor's tables
        else:
            url = request.getfixturevalue("redis_server")
        prefix = f"uwf-test:{secrets.token_hex(6)}:"
        workers = [
            await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", WORKER, kind, url, prefix, "4"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(3)
        ]
        # Start together, once every process has imported UWF and connected.
        for worker in workers:
            assert worker.stdout is not None
            assert await worker.stdout.readline() == b"ready\n"
        start = f"{time.time() + 0.5}\n".encode()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(start)
            await worker.stdin.drain()
            worker.stdin.close()
        outputs = await asyncio.gather(*(w.communicate() for w in workers))
    assert [w.returncode for w in workers] == [0, 0, 0], [err.decode() for _, err in outputs]
    reports = [json.loads(out) for out, _ in outputs]
    admitted = sorted(t for r in reports for t in r["admitted"])
    assert all(r["admitted"] for r in reports)  # every process got some of the budget
    assert most_in_any_window(admitted, 1.5) <= 12
    held = [interval for r in reports for interval in r["held"]]
    assert all(r["held"] for r in reports)
    assert max_overlap(held) <= 2


def most_in_any_window(times: list[float], window: float) -> int:
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def max_overlap(intervals: list[list[float]]) -> int:
    """The most intervals that were open at one moment."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


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
        await executor.run_until_idle(60)
        await executor.runtime.close()
        finals = [await store.get_execution(i) for i in ids]
        await store.close()
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{sandbox.url}/_control")).json()["stats"]
    assert [f.status for f in finals if f] == ["succeeded"] * 9
    # 3 requests per 2 s: the governor spaces them 2/3 s apart, so no second at the CRM sees
    # more than the whole budget (3 would already need a request delayed on its way out).
    assert stats["max_requests_1s"] <= 3
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
        eu_host = eu.url.split("/")[2]  # not a sandbox of this deployment: allowed by name
        settings = Settings(home=us.home, poll_interval=0.05, allowed_hosts=eu_host)
        executor = make_executor(settings, store, us.url.rsplit("/", 1)[0])
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
