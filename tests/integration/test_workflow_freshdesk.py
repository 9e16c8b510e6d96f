"""Hooli's `escalate_case` through the executor against the Freshdesk sandbox over loopback.

The workflow is acme's, word for word; only the connection (Freshdesk) and the `case_priority`
value map (integers) differ. Every outcome is checked through Freshdesk's own API.
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

BOB = 43000000003
NOTE_ONLY = note_only_workflow("hooli", "hooli-freshdesk")
OPEN_CASE = """
kind: workflow
name: open_case
tenant: hooli
connection: hooli-freshdesk
input_schema: {type: object, required: [subject, text, email]}
steps:
  - id: ticket
    type: create_record
    object: case
    fields:
      subject: "{{ input.subject }}"
      description: "{{ input.text }}"
      email: "{{ input.email }}"
      priority: "{{ value_map('case_priority', input.priority) }}"
output:
  ticket_id: "{{ steps.ticket.id }}"
"""

ONBOARD = """
kind: workflow
name: onboard_customer
tenant: hooli
connection: hooli-freshdesk
input_schema: {type: object, required: [company, person, email]}
steps:
  - id: company
    type: create_record
    object: account
    fields:
      name: "{{ input.company }}"
      industry: Software
  - id: person
    type: create_record
    object: contact
    fields:
      name: "{{ input.person }}"
      email: "{{ input.email }}"
      title: CTO
      account_id: "{{ steps.company.id }}"
output:
  company_id: "{{ steps.company.id }}"
  contact_id: "{{ steps.person.id }}"
"""


sandbox = sandbox_fixture("freshdesk")


@pytest.fixture
def metadata_dir(tmp_path: Path) -> Path:
    def mis_map_p4(text: str) -> str:
        # P4 → 7 is not a Freshdesk priority, though the field mapping claims it is: it makes
        # the CRM refuse the update (a 400).
        return text.replace("P4: 1\n", "P4: 7\n").replace(
            "connector: freshdesk\n",
            "connector: freshdesk\nfield_mappings:\n  case:\n    priority: {native: priority, "
            "type: enum, values: {low: 7, normal: 2, high: 3, urgent: 4}}\n",
        )

    documents = {
        "hooli_note_only.yaml": NOTE_ONLY,
        "hooli_open_case.yaml": OPEN_CASE,
        "hooli_onboard.yaml": ONBOARD,
    }
    return example_metadata(tmp_path, EXAMPLES, "hooli.yaml", documents, mis_map_p4)


class Harness(EngineHarness):
    """The executor, the Pipe DB and a client of Freshdesk's own API."""

    tenant = "hooli"

    def freshdesk(self) -> httpx.Client:
        auth = httpx.BasicAuth(self.sandbox.credentials["api_key"], "X")
        return httpx.Client(base_url=f"{self.sandbox.url}/api/v2", auth=auth, timeout=10)

    def notes(self, ticket: int, text: str) -> list[dict[str, Any]]:
        with self.freshdesk() as client:
            listed = client.get(f"/tickets/{ticket}/conversations").json()
        return [n for n in listed if n["body_text"] == text]


@pytest.fixture
async def harness(
    database_url: str, sandbox: RunningSandbox, metadata_dir: Path
) -> AsyncIterator[Harness]:
    async with running_harness(Harness, database_url, sandbox, metadata_dir) as h:
        yield h


def test_hoolis_workflow_is_acmes_but_for_tenant_and_connection() -> None:
    def workflow(tenant: str) -> dict[str, Any]:
        docs = [
            doc
            for file in EXAMPLES.rglob("*.yaml")
            for doc in yaml.safe_load_all(file.read_text(encoding="utf-8"))
            if doc and doc.get("kind") == "workflow" and doc.get("tenant") == tenant
        ]
        [found] = [d for d in docs if d["name"] == "escalate_case"]
        return {k: v for k, v in found.items() if k not in ("tenant", "connection")}

    assert workflow("hooli") == workflow("acme")


async def test_escalation_lands_in_freshdesk(harness: Harness) -> None:
    data = {"case_id": 1123, "priority": "P1", "owner_email": "bob@acme.test", "reason": "churn"}
    execution = await harness.execute("escalate_case", data)

    assert execution.status == "succeeded", execution.error
    assert execution.output == {"case_id": 1123, "priority": "urgent", "owner_id": BOB}
    runs = await harness.store.step_runs(execution.id)
    assert [(r.step_id, r.status, r.attempts) for r in runs] == [
        ("owner", "succeeded", 1),
        ("set_priority", "succeeded", 1),
        ("reassign", "succeeded", 1),
        ("note", "succeeded", 1),
    ]
    assert runs[2].request is not None
    assert runs[2].request["body"] == {"responder_id": BOB}
    assert runs[1].response is not None
    assert runs[1].response["headers"]["X-RateLimit-Remaining"].isdigit()
    with harness.freshdesk() as client:
        ticket = client.get("/tickets/1123").json()
        notes = client.get("/tickets/1123/conversations").json()
    assert (ticket["priority"], ticket["responder_id"]) == (4, BOB)
    assert [(n["body_text"], n["private"]) for n in notes] == [("Escalated: churn", True)]


async def test_connection_check_reads_freshdesks_rate_limit_headers(harness: Harness) -> None:
    bundle = await harness.store.metadata(harness.version)
    assert bundle is not None
    report = await harness.executor.probe(harness.version, bundle.connections["hooli-freshdesk"])
    assert report["ok"] is True, report
    assert report["status"] == 200
    assert report["rate_limit"]["limit"] == "400"
    assert report["rate_limit"]["remaining"].isdigit()


async def test_lost_note_response_is_verified_not_written_twice(harness: Harness) -> None:
    harness.sandbox.control(drop_after_write_rate=1.0)
    execution = await harness.execute("note_only", {"case_id": 1124, "text": "lost response"})
    assert harness.sandbox.stats()["dropped_after_write"] == 1
    harness.sandbox.reset()

    assert execution.status == "succeeded", execution.error
    [run] = await harness.store.step_runs(execution.id)
    assert run.attempts == 1
    assert run.response is not None
    assert run.response["verified"] is True
    assert len(harness.notes(1124, "lost response")) == 1


async def test_a_lost_note_is_found_past_the_first_page_of_conversations(
    harness: Harness,
) -> None:
    # Freshdesk lists conversations oldest first, 100 a page at most: on a busy ticket the
    # new note is on a later page, and a check of page 1 alone would send it again.
    harness.sandbox.control(rate_limit_per_minute=100_000)
    with harness.freshdesk() as client:
        for i in range(105):
            client.post("/tickets/1126/notes", json={"body": f"earlier {i}"}).raise_for_status()
    harness.sandbox.control(drop_after_write_rate=1.0)
    execution = await harness.execute("note_only", {"case_id": 1126, "text": "on page two"})
    harness.sandbox.reset()

    assert execution.status == "succeeded", execution.error
    [run] = await harness.store.step_runs(execution.id)
    assert run.attempts == 1
    assert run.response is not None
    assert run.response["verified"] is True
    with harness.freshdesk() as client:
        pages = [
            client.get("/tickets/1126/conversations", params={"page": p, "per_page": 100}).json()
            for p in (1, 2, 3)
        ]
    bodies = [n["body_text"] for page in pages for n in page]
    assert bodies.count("on page two") == 1
    assert bodies.index("on page two") >= 100  # it was on page two


async def test_lost_create_response_is_found_by_its_step_key(harness: Harness) -> None:
    data = {"subject": "Printer on fire", "text": "Smoke", "email": "ops@hooli.test"}
    harness.sandbox.control(drop_after_write_rate=1.0)
    execution = await harness.execute("open_case", {**data, "priority": "P2"})
    harness.sandbox.reset()

    assert execution.status == "succeeded", execution.error
    [run] = await harness.store.step_runs(execution.id)
    assert run.response is not None
    assert run.response["verified"] is True
    query = f"\"cf_uwf_step_key:'{execution.id}:ticket'\""
    with harness.freshdesk() as client:
        found = client.get("/search/tickets", params={"query": query}).json()
    assert found["total"] == 1
    [ticket] = found["results"]
    assert ticket["id"] == execution.output["ticket_id"]
    assert (ticket["subject"], ticket["priority"]) == ("Printer on fire", 3)


async def test_lost_company_and_contact_creates_are_found_not_made_twice(
    harness: Harness,
) -> None:
    # Every write's response is lost: the company is found again by its (unique) name, the
    # contact by the step key it carries in unique_external_id.
    data = {"company": "Pied Piper", "person": "Bertram Gilfoyle", "email": "gilfoyle@pp.test"}
    harness.sandbox.control(drop_after_write_rate=1.0)
    execution = await harness.execute("onboard_customer", data)
    assert harness.sandbox.stats()["dropped_after_write"] == 2
    harness.sandbox.reset()

    assert execution.status == "succeeded", execution.error
    runs = await harness.store.step_runs(execution.id)
    assert [(r.step_id, r.attempts) for r in runs] == [("company", 1), ("person", 1)]
    assert all(r.response is not None and r.response["verified"] for r in runs)
    with harness.freshdesk() as client:
        companies = client.get("/companies/autocomplete", params={"name": "Pied Piper"}).json()
        contacts = client.get("/contacts", params={"email": "gilfoyle@pp.test"}).json()
    assert companies["companies"] == [{"id": execution.output["company_id"], "name": "Pied Piper"}]
    [contact] = contacts
    assert contact["id"] == execution.output["contact_id"]
    assert contact["company_id"] == execution.output["company_id"]
    assert contact["unique_external_id"] == f"{execution.id}:person"
    assert contact["job_title"] == "CTO"


async def test_freshdesk_validation_error_fails_the_execution(harness: Harness) -> None:
    data = {"case_id": 1125, "priority": "P4", "reason": "never written"}
    execution = await harness.execute("escalate_case", data)

    assert execution.status == "failed"
    assert execution.error is not None
    assert execution.error["step"] == "set_priority"
    assert execution.error["type"] == "crm_error"
    assert "400" in execution.error["message"]
    expected = "Validation failed: priority: It should be one of these values: '1,2,3,4'"
    assert expected in execution.error["message"]
    assert harness.notes(1125, "Escalated: never written") == []
