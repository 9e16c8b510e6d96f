"""One suite, every connector: each tenant's canonical workflow against its CRM's sandbox.

For every CRM that has a built-in connector, a sandbox and an example tenant, the same checks
run: the tenant's `escalate_case` succeeds; the connector's own `get` reads back the priority
its value map gave and the owner its lookup found; the note can be found again by the
connector's `verify` (so a lost response is never re-sent blindly); and when the note's
response is lost, exactly one note exists afterwards.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES
from tests.sandbox_server import RunningSandbox, serve_sandbox
from uwf.connectors import builtin_connectors
from uwf.metadata import MetadataBundle, load_directory
from uwf.sandboxes import SANDBOXES
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import Store

# The quickstart case of each sandbox: open, no owner, no notes, the same on every machine.
QUICKSTART_CASES = {
    "zendesk": 123,
    "hubspot": "1123",
    "dynamics": "56b28d2a-2f1c-50d7-b1ca-01398c555e67",
    "servicenow": "eb07cbd44e76ff9a765f93b1d8b44609",
    "freshdesk": 1123,
    "salesforce": "5005g000000001zAAA",  # Case 00001123
}
NOTE_ONLY = """
kind: workflow
name: note_only
tenant: {tenant}
connection: {connection}
input_schema: {{type: object}}
steps:
  - id: note
    type: add_comment
    object: case
    record_id: "{{{{ input.case_id }}}}"
    body: "{{{{ input.text }}}}"
"""


def _crms() -> list[str]:
    return sorted(set(builtin_connectors()) & set(SANDBOXES) & set(QUICKSTART_CASES))


@dataclass
class Tenant:
    crm: str
    name: str
    connection: str
    bundle: MetadataBundle
    version: int
    store: Store
    sandbox: RunningSandbox

    async def run(self, workflow: str, data: dict[str, Any]) -> dict[str, Any]:
        execution, _ = await self.store.create_execution(
            tenant=self.name, workflow=workflow, metadata_version=self.version, input=data
        )
        executor = make_executor(
            Settings(home=self.sandbox.home, poll_interval=0.05),
            self.store,
            self.sandbox.url.rsplit("/", 1)[0],
        )
        try:
            await executor.run_until_idle(60)
            final = await self.store.get_execution(execution.id)
            assert final is not None
            runs = {r.step_id: r for r in await self.store.step_runs(execution.id)}
            return {"execution": final, "runs": runs, "executor": executor}
        finally:
            await executor.runtime.close()


@pytest.fixture(params=_crms())
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningSandbox]:
    with serve_sandbox(tmp_path / "home", request.param) as running:
        yield running


@pytest.fixture
async def tenant(sandbox: RunningSandbox, tmp_path: Path) -> AsyncIterator[Tenant]:
    crm = sandbox.url.rsplit("/", 1)[1]
    examples = load_directory(EXAMPLES)
    [connection] = [c for c in examples.connections.values() if c.connector == crm]
    directory = tmp_path / "metadata"
    shutil.copytree(EXAMPLES, directory)
    (directory / "zz_note_only.yaml").write_text(
        NOTE_ONLY.format(tenant=connection.tenant, connection=connection.name)
    )
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}")
    bundle = load_directory(directory)
    version, _ = await store.apply_metadata(bundle, "contract")
    try:
        yield Tenant(crm, connection.tenant, connection.name, bundle, version, store, sandbox)
    finally:
        await store.close()


async def _read_case(tenant: Tenant, executor: Any, case_id: Any) -> dict[str, Any]:
    connection = tenant.bundle.connections[tenant.connection]
    target = await executor.targets.resolve(tenant.version, tenant.bundle, connection)
    operation = target.spec.operation("case", "get")
    assert operation is not None, f"{tenant.crm}: no get on case"
    fresh = make_executor(
        Settings(home=tenant.sandbox.home), tenant.store, tenant.sandbox.url.rsplit("/", 1)[0]
    )
    try:
        target = await fresh.targets.resolve(tenant.version, tenant.bundle, connection)
        result = await fresh.runtime.call(target, operation, {"record_id": case_id})
    finally:
        await fresh.runtime.close()
    record: dict[str, Any] = target.spec.objects["case"].to_canonical(result.result)
    return record


async def test_the_canonical_workflow_lands_in_the_crm(tenant: Tenant) -> None:
    case_id = QUICKSTART_CASES[tenant.crm]
    ran = await tenant.run(
        "escalate_case",
        {
            "case_id": case_id,
            "priority": "P1",
            "owner_email": "alice@acme.test",
            "reason": f"contract test on {tenant.crm}",
        },
    )
    execution, runs = ran["execution"], ran["runs"]
    assert execution.status == "succeeded", execution.error
    assert [runs[s].status for s in ("owner", "set_priority", "reassign", "note")] == [
        "succeeded"
    ] * 4

    record = await _read_case(tenant, ran["executor"], case_id)
    expected_priority = tenant.bundle.value_maps_for(tenant.name)["case_priority"].lookup("P1")
    alice = runs["owner"].output
    # The CRM's own value beside the canonical one, which is the same on every CRM.
    assert str(record["priority_native"]) == str(expected_priority)
    assert record["priority"] in ("high", "urgent")
    assert str(record["owner_id"]) == str(alice["id"])
    assert alice["email"].lower() == "alice@acme.test"
    assert str(record["id"]) == str(case_id)


async def test_a_lost_note_response_leaves_exactly_one_note(tenant: Tenant) -> None:
    case_id = QUICKSTART_CASES[tenant.crm]
    text = f"lost response on {tenant.crm}"
    async with httpx.AsyncClient(base_url=tenant.sandbox.url, timeout=10) as control:
        (await control.post("/_control", json={"drop_after_write_rate": 1.0})).raise_for_status()
        ran = await tenant.run("note_only", {"case_id": case_id, "text": text})
        stats = (await control.get("/_control")).json()["stats"]
        (await control.delete("/_control")).raise_for_status()

    execution, run = ran["execution"], ran["runs"]["note"]
    assert execution.status == "succeeded", execution.error
    assert run.response is not None
    assert run.response.get("verified") is True  # found by verify, not sent again

    # The connector's own verify request finds exactly one note with that text.
    connection = tenant.bundle.connections[tenant.connection]
    fresh = make_executor(
        Settings(home=tenant.sandbox.home), tenant.store, tenant.sandbox.url.rsplit("/", 1)[0]
    )
    try:
        target = await fresh.targets.resolve(tenant.version, tenant.bundle, connection)
        operation = target.spec.operation("case", "add_comment")
        assert operation is not None
        assert operation.verify is not None
        context = {
            "record_id": case_id,
            "body": text,
            "public": False,
            "step_key": f"{execution.id}:note",
        }
        found, _ = await fresh.runtime.verify(target, operation.verify, context)
    finally:
        await fresh.runtime.close()
    assert found is not None
    assert stats["dropped_after_write"] >= 1  # the sandbox really lost a response
