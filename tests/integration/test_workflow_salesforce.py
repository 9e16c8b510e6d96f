"""Globex's `escalate_case` (the same canonical workflow as acme's) against the Salesforce sandbox.

Every outcome is checked through Salesforce's own REST API, not through UWF's records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from simple_salesforce.format import format_soql

from tests.conftest import EXAMPLES
from tests.engine_harness import (
    EngineHarness,
    example_metadata,
    note_only_workflow,
    running_harness,
    sandbox_fixture,
)
from tests.sandbox_server import RunningSandbox
from uwf.metadata import load_directory

QUICKSTART = "00001123"
NOTE_ONLY = note_only_workflow("globex", "globex-salesforce")


sandbox = sandbox_fixture("salesforce")


@pytest.fixture
def metadata_dir(tmp_path: Path) -> Path:
    return example_metadata(tmp_path, EXAMPLES, "globex.yaml", {"note_only_globex.yaml": NOTE_ONLY})


class Harness(EngineHarness):
    tenant = "globex"

    async def execute_with_id(self, workflow: str, data: dict[str, Any]) -> tuple[str, Any]:
        done = await self.execute(workflow, data, seconds=15)
        return done.id, done

    def salesforce(self) -> httpx.Client:
        """Salesforce's REST API as any integration would call it (not through UWF)."""
        token = self.sandbox.credentials["access_token"]
        return httpx.Client(
            base_url=f"{self.sandbox.url}/services/data/v59.0",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    def query(self, soql: str) -> list[dict[str, Any]]:
        with self.salesforce() as api:
            response = api.get("/query", params={"q": soql})
        response.raise_for_status()
        records: list[dict[str, Any]] = response.json()["records"]
        return records

    def case(self, case_number: str) -> dict[str, Any]:
        with self.salesforce() as api:
            response = api.get(f"/sobjects/Case/CaseNumber/{case_number}")
        response.raise_for_status()
        case: dict[str, Any] = response.json()
        return case

    def notes(self, case_id: str) -> list[dict[str, Any]]:
        """The case's internal notes (unpublished CaseComments)."""
        return self.query(
            format_soql(
                "SELECT Id, CommentBody, IsPublished FROM CaseComment "
                "WHERE ParentId = {} AND IsPublished = false",
                case_id,
            )
        )


@pytest.fixture
async def harness(
    database_url: str, sandbox: RunningSandbox, metadata_dir: Path
) -> AsyncIterator[Harness]:
    async with running_harness(Harness, database_url, sandbox, metadata_dir) as h:
        yield h


@pytest.fixture
async def sqlite_harness(
    tmp_path: Path, sandbox: RunningSandbox, metadata_dir: Path
) -> AsyncIterator[Harness]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}"
    async with running_harness(Harness, url, sandbox, metadata_dir) as h:
        yield h


async def test_escalation_lands_in_salesforce(harness: Harness) -> None:
    before = harness.case(QUICKSTART)
    assert (before["Priority"], before["OwnerId"][:3]) == ("Medium", "00G")  # a queue owns it
    assert harness.notes(before["Id"]) == []

    data = {"case_id": QUICKSTART, "priority": "P1", "owner_email": "bob@acme.test"}
    eid, execution = await harness.execute_with_id(
        "escalate_case", {**data, "reason": "VIP customer"}
    )

    assert execution.status == "succeeded", execution.error
    [bob] = harness.query("SELECT Id FROM User WHERE Email = 'bob@acme.test'")
    after = harness.case(QUICKSTART)
    assert (after["Priority"], after["OwnerId"]) == ("High", bob["Id"])
    [note] = harness.notes(after["Id"])
    assert note["CommentBody"] == "Escalated: VIP customer"
    assert execution.output == {"case_id": QUICKSTART, "priority": "high", "owner_id": bob["Id"]}
    runs = {r.step_id: r for r in await harness.store.step_runs(eid)}
    assert runs["owner"].output["email"] == "bob@acme.test"  # the canonical user record
    assert runs["set_priority"].request is not None
    assert runs["set_priority"].request["method"] == "PATCH"
    assert runs["set_priority"].request["url"].endswith(f"/sobjects/Case/CaseNumber/{QUICKSTART}")
    assert runs["set_priority"].request["body"] == {"Priority": "High"}
    assert runs["note"].response is not None
    headers = {k.lower(): v for k, v in runs["note"].response["headers"].items()}
    assert headers["sforce-limit-info"].startswith("api-usage=")  # recorded for the governor


async def test_escalation_by_case_id_without_owner(sqlite_harness: Harness) -> None:
    # The schema takes a numeric case_id; 00001042 is a seeded case too.
    _, execution = await sqlite_harness.execute_with_id(
        "escalate_case", {"case_id": "00001042", "priority": "P4"}
    )
    assert execution.status == "succeeded", execution.error
    case = sqlite_harness.case("00001042")
    assert case["Priority"] == "Low"
    assert sqlite_harness.notes(case["Id"]) == []


async def test_lost_note_response_is_verified_not_sent_twice(sqlite_harness: Harness) -> None:
    sqlite_harness.sandbox.control(drop_after_write_rate=1.0)
    eid, execution = await sqlite_harness.execute_with_id(
        "note_only", {"case_id": "00001050", "text": "lost response"}
    )
    sqlite_harness.sandbox.reset()

    assert execution.status == "succeeded", execution.error
    [run] = await sqlite_harness.store.step_runs(eid)
    assert run.response is not None
    assert run.response["verified"] is True
    case = sqlite_harness.case("00001050")
    notes = [n for n in sqlite_harness.notes(case["Id"]) if n["CommentBody"] == "lost response"]
    assert len(notes) == 1


async def test_validation_error_fails_with_salesforces_message(
    sqlite_harness: Harness, metadata_dir: Path
) -> None:
    # A tenant maps P4 to a value the org's restricted Priority picklist does not have, and
    # its field mapping claims the picklist has it: only Salesforce can say no.
    conn = metadata_dir / "globex.yaml"
    mapping = (
        "connector: salesforce\nfield_mappings:\n  case:\n    priority: {native: Priority, "
        "type: enum, values: {low: Lowest, normal: Medium, high: High, urgent: High}}\n"
    )
    text = conn.read_text().replace("P4: Low", "P4: Lowest")
    conn.write_text(text.replace("connector: salesforce\n", mapping))
    sqlite_harness.version, _ = await sqlite_harness.store.apply_metadata(
        load_directory(metadata_dir), "bad value map"
    )

    _, execution = await sqlite_harness.execute_with_id(
        "escalate_case", {"case_id": QUICKSTART, "priority": "P4", "reason": "noise"}
    )

    assert execution.status == "failed"
    assert execution.error["step"] == "set_priority"
    assert execution.error["message"] == (
        "Salesforce answered 400 Bad Request: INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: "
        "Priority: bad value for restricted picklist field: Lowest"
    )
    case = sqlite_harness.case(QUICKSTART)
    assert case["Priority"] == "Medium"
    assert sqlite_harness.notes(case["Id"]) == []  # the workflow stopped before its note
