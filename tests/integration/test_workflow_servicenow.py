"""Initech's escalate_case through the executor against the ServiceNow sandbox over loopback.

Outcomes are checked through ServiceNow's own Table API, not through UWF: the incident's
priority and owner, and the work notes in sys_journal_field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import EXAMPLES
from tests.engine_harness import (
    EngineHarness,
    example_metadata,
    note_only_workflow,
    running_harness,
    sandbox_fixture,
)
from tests.sandbox_server import RunningSandbox

TENANT = "initech"
INC = "/api/now/table/incident"
EXTRA_WORKFLOWS = (
    note_only_workflow(TENANT, "initech-servicenow")
    + """---
kind: workflow
name: open_case
tenant: initech
connection: initech-servicenow
input_schema: {type: object, required: [subject]}
steps:
  - id: incident
    type: create_record
    object: case
    fields:
      subject: "{{ input.subject }}"
      priority: "{{ value_map('case_priority', input.priority) }}"
output:
  sys_id: "{{ steps.incident.id }}"
---
kind: workflow
name: onboard_customer
tenant: initech
connection: initech-servicenow
input_schema: {type: object, required: [company, email]}
steps:
  - id: company
    type: create_record
    object: account
    fields:
      name: "{{ input.company }}"
      country: Germany
  - id: contact
    type: create_record
    object: contact
    fields:
      first_name: Hans
      last_name: Gruber
      email: "{{ input.email }}"
      account_id: "{{ steps.company.id }}"
output:
  company: "{{ steps.company.id }}"
  contact: "{{ steps.contact.id }}"
---
kind: workflow
name: resolve_case
tenant: initech
connection: initech-servicenow
input_schema: {type: object, required: [case_id]}
steps:
  - id: resolve
    type: update_record
    object: case
    record_id: "{{ input.case_id }}"
    fields:
      status: "6"
"""
)


sandbox = sandbox_fixture("servicenow")


@pytest.fixture
def metadata_dir(tmp_path: Path) -> Path:
    # Only Initech's documents: the other tenants' files are not this test's business.
    return example_metadata(
        tmp_path, EXAMPLES / "initech.yaml", "initech.yaml", {"extra.yaml": EXTRA_WORKFLOWS}
    )


class Harness(EngineHarness):
    tenant = TENANT

    def snow(self) -> httpx.Client:
        """ServiceNow's own API, as an admin would call it."""
        creds = self.sandbox.credentials
        return httpx.Client(
            base_url=self.sandbox.url, auth=(creds["username"], creds["password"]), timeout=10
        )

    def incident(self, number: str) -> dict[str, Any]:
        query = {"sysparm_query": f"number={number}", "sysparm_exclude_reference_link": "true"}
        with self.snow() as client:
            [record] = client.get(INC, params=query).json()["result"]
        result: dict[str, Any] = record
        return result

    def work_notes(self, sys_id: str) -> list[str]:
        query = f"element_id={sys_id}^element=work_notes^ORDERBYDESCsys_created_on"
        with self.snow() as client:
            found = client.get("/api/now/table/sys_journal_field", params={"sysparm_query": query})
        return [entry["value"] for entry in found.json()["result"]]


@pytest.fixture
async def harness(
    database_url: str, sandbox: RunningSandbox, metadata_dir: Path
) -> AsyncIterator[Harness]:
    async with running_harness(Harness, database_url, sandbox, metadata_dir) as h:
        yield h


def test_initech_runs_the_same_canonical_workflow_as_acme() -> None:
    def escalate_case(tenant: str) -> dict[str, Any]:
        docs = [
            doc
            for path in sorted(EXAMPLES.rglob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())
        ]
        [found] = [
            d
            for d in docs
            if d
            and d.get("kind") == "workflow"
            and d["name"] == "escalate_case"
            and d["tenant"] == tenant
        ]
        return {k: v for k, v in found.items() if k not in ("tenant", "connection")}

    assert escalate_case("initech") == escalate_case("acme")


async def test_escalation_lands_in_servicenow(harness: Harness) -> None:
    quickstart = harness.incident("INC0010123")
    data = {
        "case_id": quickstart["sys_id"],
        "priority": "P1",
        "owner_email": "bob@acme.test",
        "reason": "CFO cannot work",
    }
    eid = await harness.submit("escalate_case", data)
    await harness.run()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    after = harness.incident("INC0010123")
    with harness.snow() as client:
        query = {"sysparm_query": "email=bob@acme.test"}
        [bob] = client.get("/api/now/table/sys_user", params=query).json()["result"]
    assert (after["priority"], after["impact"], after["urgency"]) == ("1", "1", "1")
    assert after["assigned_to"] == bob["sys_id"]
    assert harness.work_notes(quickstart["sys_id"]) == ["Escalated: CFO cannot work"]
    assert execution.output == {
        "case_id": quickstart["sys_id"],
        "priority": "urgent",
        "owner_id": bob["sys_id"],
    }
    runs = {r.step_id: r for r in await harness.store.step_runs(eid)}
    assert runs["set_priority"].request is not None
    assert runs["set_priority"].request["body"] == {"priority": "1", "impact": "1", "urgency": "1"}
    assert runs["set_priority"].response is not None
    assert runs["set_priority"].response["headers"]["X-RateLimit-Limit"] == "100000"


async def test_lost_note_response_is_verified_not_written_twice(harness: Harness) -> None:
    sys_id = harness.incident("INC0010127")["sys_id"]
    harness.sandbox.control(drop_after_write_rate=1.0)
    eid = await harness.submit("note_only", {"case_id": sys_id, "text": "response lost"})
    await harness.run()
    harness.sandbox.reset()

    execution = await harness.store.get_execution(eid)
    [run] = await harness.store.step_runs(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert run.response is not None
    assert run.response["verified"] is True
    assert harness.work_notes(sys_id) == ["response lost"]


async def test_lost_create_response_is_found_by_correlation_id(harness: Harness) -> None:
    harness.sandbox.control(drop_after_write_rate=1.0)
    eid = await harness.submit("open_case", {"subject": "Printer on fire", "priority": "P2"})
    await harness.run()
    harness.sandbox.reset()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    query = {"sysparm_query": f"correlation_id={eid}:incident"}
    with harness.snow() as client:
        created = client.get(INC, params=query).json()["result"]
    assert [(r["sys_id"], r["short_description"], r["priority"]) for r in created] == [
        (execution.output["sys_id"], "Printer on fire", "2")
    ]


async def test_lost_account_and_contact_responses_are_found_by_uwf_key(harness: Harness) -> None:
    harness.sandbox.control(drop_after_write_rate=1.0)
    data = {"company": "Nakatomi Trading", "email": "hans@nakatomi.test"}
    eid = await harness.submit("onboard_customer", data)
    await harness.run()
    stats = harness.sandbox.stats()
    harness.sandbox.reset()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    runs = {r.step_id: r for r in await harness.store.step_runs(eid)}
    assert all(run.response and run.response["verified"] is True for run in runs.values())
    assert stats["dropped_after_write"] >= 2  # both answers were really lost
    with harness.snow() as client:
        params = {"sysparm_exclude_reference_link": "true"}
        companies = client.get(
            "/api/now/table/core_company",
            params={**params, "sysparm_query": "name=Nakatomi Trading"},
        ).json()["result"]
        contacts = client.get(
            "/api/now/table/customer_contact",
            params={**params, "sysparm_query": "email=hans@nakatomi.test"},
        ).json()["result"]
    # One of each, marked with its step key, the contact at the company the first step made.
    assert [(c["sys_id"], c["u_uwf_key"]) for c in companies] == [
        (execution.output["company"], f"{eid}:company")
    ]
    assert [(c["sys_id"], c["name"], c["company"], c["u_uwf_key"]) for c in contacts] == [
        (execution.output["contact"], "Hans Gruber", execution.output["company"], f"{eid}:contact")
    ]


async def test_servicenow_validation_error_fails_the_execution(harness: Harness) -> None:
    sys_id = harness.incident("INC0010133")["sys_id"]
    eid = await harness.submit("resolve_case", {"case_id": sys_id})
    await harness.run()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "failed"
    assert execution.error is not None
    assert execution.error["type"] == "crm_error"
    assert "403" in execution.error["message"]
    assert (
        "Operation Failed: Data Policy Exception: The following fields are mandatory: "
        "Resolution code, Resolution notes" in execution.error["message"]
    )
    assert harness.incident("INC0010133")["state"] == "1"
