"""A value its canonical field cannot take fails the step with a message naming field and value,
before anything is sent to the CRM; canonical values are written in each CRM's own spelling.

Runs the engine against the Zendesk sandbox on SQLite and PostgreSQL; outcomes are read through
Zendesk's own API and the sandbox's request counters.
"""

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

# A workflow that writes canonical values as the caller gives them, with no value map.
SET_FIELDS = """
kind: workflow
name: set_fields
tenant: acme
connection: acme-zendesk
input_schema: {type: object}
steps:
  - id: update
    type: update_record
    object: case
    record_id: "{{ input.case_id }}"
    fields:
      priority: "{{ input.priority }}"
      status: "{{ input.status }}"
      escalated: "{{ input.escalated }}"
  - id: note
    type: add_comment
    object: case
    record_id: "{{ input.case_id }}"
    body: not reached when the update fails
"""
CUSTOM = (
    "custom_fields:\n  case:\n    escalated: {native: 'custom_fields[360003]', type: boolean}\n"
)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    with serve_sandbox(tmp_path / "home", "zendesk") as running:
        yield running


@pytest.fixture
async def harness(
    database_url: str, sandbox: RunningSandbox, tmp_path: Path
) -> AsyncIterator[EngineHarness]:
    directory = tmp_path / "metadata"
    shutil.copytree(ACME_EXAMPLES, directory)
    conn = directory / "acme-zendesk.yaml"
    conn.write_text(fast_retries(conn.read_text()).replace("retry:\n", CUSTOM + "retry:\n", 1))
    (directory / "set_fields.yaml").write_text(SET_FIELDS)
    store = await Store.open(database_url)
    h = EngineHarness(store, Settings(home=sandbox.home, poll_interval=0.05), sandbox)
    h.version, _ = await store.apply_metadata(load_directory(directory), "test")
    try:
        yield h
    finally:
        await h.executor.runtime.close()
        await store.close()


async def test_canonical_values_are_written_in_zendesks_spelling(
    harness: EngineHarness, sandbox: RunningSandbox
) -> None:
    data = {"case_id": 127, "priority": "Urgent", "status": "on_hold", "escalated": "on"}
    execution = await harness.execute("set_fields", data)

    assert execution.status == "succeeded", execution.error
    with sandbox.client() as client:
        ticket = client.get("/api/v2/tickets/127.json").json()["ticket"]
    assert (ticket["priority"], ticket["status"]) == ("urgent", "hold")
    assert {"id": 360003, "value": True} in ticket["custom_fields"]
    update = execution.output["update"]  # type: ignore[index]
    assert (update["status"], update["status_native"], update["escalated"]) == (
        "on_hold",
        "hold",
        True,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"priority": "P7", "status": "open", "escalated": "yes"},
            "field 'priority': 'P7' is not one of low, normal, high, urgent",
        ),
        (
            {"priority": "high", "status": "open", "escalated": "perhaps"},
            "field 'escalated': 'perhaps' is not a boolean; use true/false, yes/no, on/off or 1/0",
        ),
    ],
)
async def test_a_value_its_field_cannot_take_fails_the_step_and_sends_nothing(
    harness: EngineHarness, sandbox: RunningSandbox, data: dict[str, str], message: str
) -> None:
    execution = await harness.execute("set_fields", {"case_id": 127, **data})

    assert execution.status == "failed"
    assert execution.error == {"type": "mapping", "step": "update", "message": message}
    runs = {r.step_id: r for r in await harness.store.step_runs(execution.id)}
    assert runs["update"].status == "failed"
    assert "note" not in runs
    assert sandbox.stats()["requests_total"] == 0  # not even a request the CRM would refuse
