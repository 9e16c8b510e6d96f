"""Umbrella's `escalate_case` through the executor against the HubSpot sandbox over loopback.

Outcomes are checked through HubSpot's own API (tickets, v4 associations, notes), never
through UWF's records of what it did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

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

BOB = "41000003"
NOTE_ONLY = note_only_workflow("umbrella", "umbrella-hubspot")
OPEN_CASE = """
kind: workflow
name: open_case
tenant: umbrella
connection: umbrella-hubspot
input_schema:
  type: object
  required: [subject, priority]
steps:
  - id: ticket
    type: create_record
    object: case
    fields:
      subject: "{{ input.subject }}"
      priority: "{{ value_map('case_priority', input.priority) }}"
output:
  ticket_id: "{{ steps.ticket.id }}"
"""
ONBOARD = """
kind: workflow
name: onboard_customer
tenant: umbrella
connection: umbrella-hubspot
input_schema:
  type: object
  required: [company, email]
steps:
  - id: company
    type: create_record
    object: account
    fields:
      name: "{{ input.company }}"
      industry: RETAIL
  - id: person
    type: create_record
    object: contact
    fields:
      first_name: Dana
      last_name: Scully
      email: "{{ input.email }}"
      account_id: "{{ steps.company.id }}"
output:
  company_id: "{{ steps.company.id }}"
  contact_id: "{{ steps.person.id }}"
"""
# A public app's OAuth connection. The client id is not a secret but the sandbox draws it at
# random on first start, and metadata takes it only as a literal: the test writes it in.
OAUTH = """
kind: connection
name: umbrella-hubspot-oauth
tenant: umbrella
connector: hubspot
base_url: "${{sandbox:hubspot}}"
auth:
  type: oauth2_refresh_token
  client_id: "{client_id}"
  client_secret: {{sandbox: hubspot, field: client_secret}}
  refresh_token: {{sandbox: hubspot, field: refresh_token}}
---
kind: workflow
name: prioritise_oauth
tenant: umbrella
connection: umbrella-hubspot-oauth
input_schema:
  type: object
  required: [case_id, priority]
steps:
  - id: set_priority
    type: update_record
    object: case
    record_id: "{{{{ input.case_id }}}}"
    fields:
      priority: "{{{{ value_map('case_priority', input.priority) }}}}"
"""
# The escalation and the OAuth test run on SQLite and PostgreSQL; the rest exercise the
# connector and sandbox, not the store, so SQLite alone keeps the file fast.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# As HubSpot does, the sandbox refuses a note without `hs_timestamp`; the connector sends
# the attempt's `now`.
sandbox = sandbox_fixture("hubspot")


@pytest.fixture
def metadata_dir(tmp_path: Path) -> Path:
    # Only umbrella's file: the tenant, connection, value map and workflow are all in it.
    return example_metadata(
        tmp_path,
        EXAMPLES / "umbrella.yaml",
        "umbrella.yaml",
        {
            "note_only.yaml": NOTE_ONLY,
            "open_case.yaml": OPEN_CASE,
            "onboard_customer.yaml": ONBOARD,
        },
    )


class Harness(EngineHarness):
    tenant = "umbrella"

    def hubspot(self) -> httpx.Client:
        """A client of the sandbox, authenticated like a HubSpot private app."""
        token = self.sandbox.credentials["private_app_token"]
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.sandbox.url, headers=headers, timeout=10)

    def ticket(self, ticket_id: int | str) -> dict[str, Any]:
        params = {"properties": "hs_ticket_priority,hubspot_owner_id,subject,uwf_key"}
        with self.hubspot() as client:
            result: dict[str, Any] = client.get(
                f"/crm/v3/objects/tickets/{ticket_id}", params=params
            ).json()["properties"]
        return result

    def notes(self, ticket_id: int) -> list[dict[str, Any]]:
        """The ticket's notes, read the way a HubSpot integration would: v4 associations."""
        with self.hubspot() as client:
            links = client.get(f"/crm/v4/objects/tickets/{ticket_id}/associations/notes").json()
            ids = [{"id": str(link["toObjectId"])} for link in links["results"]]
            body = {"inputs": ids, "properties": ["hs_note_body", "hs_timestamp", "uwf_key"]}
            found = client.post("/crm/v3/objects/notes/batch/read", json=body).json()
        return [note["properties"] for note in found["results"]]


@pytest.fixture
async def harness(
    database_url: str, sandbox: RunningSandbox, metadata_dir: Path
) -> AsyncIterator[Harness]:
    async with running_harness(Harness, database_url, sandbox, metadata_dir) as h:
        yield h


async def test_escalation_lands_priority_owner_and_one_internal_note(harness: Harness) -> None:
    data = {"case_id": 1123, "priority": "P2", "owner_email": "bob@acme.test", "reason": "VIP"}
    eid = await harness.submit("escalate_case", data)
    await harness.run()

    execution = await harness.store.get_execution(eid)
    runs = {r.step_id: r for r in await harness.store.step_runs(eid)}
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert execution.output == {"case_id": 1123, "priority": "high", "owner_id": BOB}
    assert [(r.step_id, r.status, r.attempts) for r in runs.values()] == [
        ("owner", "succeeded", 1),
        ("set_priority", "succeeded", 1),
        ("reassign", "succeeded", 1),
        ("note", "succeeded", 1),
    ]
    assert runs["set_priority"].request is not None
    assert runs["set_priority"].request["body"] == {"properties": {"hs_ticket_priority": "HIGH"}}
    assert runs["set_priority"].response is not None
    assert runs["set_priority"].response["headers"]["x-hubspot-ratelimit-remaining"].isdigit()
    assert "[REDACTED]" in str(runs["set_priority"].request["headers"])

    ticket = harness.ticket(1123)
    assert (ticket["hs_ticket_priority"], ticket["hubspot_owner_id"]) == ("HIGH", BOB)
    [note] = harness.notes(1123)
    assert note["hs_note_body"] == "Escalated: VIP"
    assert note["uwf_key"] == f"{eid}:note"


@SQLITE_ONLY
async def test_lost_note_response_is_verified_not_sent_twice(harness: Harness) -> None:
    harness.sandbox.control(drop_after_write_rate=1.0)
    eid = await harness.submit("note_only", {"case_id": 1123, "text": "lost response"})
    await harness.run()

    execution = await harness.store.get_execution(eid)
    [run] = await harness.store.step_runs(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert run.response is not None
    assert run.response["verified"] is True
    assert harness.sandbox.stats()["dropped_after_write"] == 1
    assert [n["hs_note_body"] for n in harness.notes(1123)] == ["lost response"]


@SQLITE_ONLY
async def test_a_lost_note_is_looked_for_again_while_search_lags(harness: Harness) -> None:
    # HubSpot's search trails writes: right after the lost response it cannot see the note.
    # Sending again then would write it twice; the spec's settle time makes UWF look again.
    harness.sandbox.control(drop_after_write_rate=1.0, search_lag_seconds=3)
    eid = await harness.submit("note_only", {"case_id": 1124, "text": "lagging search"})
    await harness.run(40)

    execution = await harness.store.get_execution(eid)
    [run] = await harness.store.step_runs(eid)
    harness.sandbox.control(search_lag_seconds=0)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert run.response is not None
    assert run.response["verified"] is True
    assert run.attempts == 1  # found, not sent again
    assert [n["hs_note_body"] for n in harness.notes(1124)] == ["lagging search"]


@SQLITE_ONLY
async def test_lost_create_response_is_resent_as_an_upsert(harness: Harness) -> None:
    harness.sandbox.control(drop_after_write_rate=1.0)
    eid = await harness.submit("open_case", {"subject": "Printer on fire", "priority": "P1"})
    [claimed] = await harness.store.claim(harness.executor.owner, 1, 30)
    assert await harness.executor._interpreter.run(claimed, harness.executor.owner) == "running"
    harness.sandbox.reset()
    await harness.run()

    execution = await harness.store.get_execution(eid)
    [run] = await harness.store.step_runs(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert run.attempts == 2
    ticket_id = execution.output["ticket_id"]
    assert harness.ticket(ticket_id)["uwf_key"] == f"{eid}:ticket"
    assert harness.ticket(ticket_id)["hs_ticket_priority"] == "URGENT"
    with harness.hubspot() as client:
        subject = {"propertyName": "subject", "operator": "EQ", "value": "Printer on fire"}
        body = {"filterGroups": [{"filters": [subject]}]}
        found = client.post("/crm/v3/objects/tickets/search", json=body).json()
    assert found["total"] == 1


@SQLITE_ONLY
async def test_crm_validation_error_fails_with_hubspots_message(
    harness: Harness, metadata_dir: Path
) -> None:
    path = metadata_dir / "umbrella.yaml"
    # The tenant's field mapping claims LOWEST is a priority; HubSpot says it is not.
    mapping = (
        "connector: hubspot\nfield_mappings:\n  case:\n    priority: {native: hs_ticket_priority, "
        "type: enum, values: {low: LOWEST, normal: MEDIUM, high: HIGH, urgent: URGENT}}\n"
    )
    text = path.read_text().replace("P4: LOW\n", "P4: LOWEST\n")
    path.write_text(text.replace("connector: hubspot\n", mapping))
    harness.version, _ = await harness.store.apply_metadata(load_directory(metadata_dir), "bad")
    eid = await harness.submit("escalate_case", {"case_id": 1124, "priority": "P4"})
    await harness.run()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "failed"
    assert execution.error is not None
    assert execution.error["step"] == "set_priority"
    assert execution.error["status"] == 400
    assert "HubSpot answered 400" in execution.error["message"]
    assert "LOWEST was not one of the allowed options" in execution.error["message"]
    assert harness.ticket(1124)["hs_ticket_priority"] != "LOWEST"


async def test_oauth_connection_fetches_one_token_for_many_executions(
    harness: Harness, metadata_dir: Path
) -> None:
    client_id = harness.sandbox.credentials["client_id"]
    (metadata_dir / "oauth.yaml").write_text(OAUTH.format(client_id=client_id))
    harness.version, _ = await harness.store.apply_metadata(load_directory(metadata_dir), "oauth")
    tickets = range(1130, 1136)
    ids = [
        await harness.submit("prioritise_oauth", {"case_id": n, "priority": "P1"}) for n in tickets
    ]
    await harness.run()

    for eid in ids:
        execution = await harness.store.get_execution(eid)
        assert execution is not None
        assert execution.status == "succeeded", execution.error
    assert {harness.ticket(n)["hs_ticket_priority"] for n in tickets} == {"URGENT"}
    stats = harness.sandbox.stats()
    assert stats["token_requests"] == 1
    assert stats["token_requests_by_grant_type"] == {"refresh_token": 1}


@SQLITE_ONLY
async def test_note_gets_its_timestamp_from_the_engine(harness: Harness) -> None:
    eid = await harness.submit("note_only", {"case_id": 1125, "text": "timed"})
    await harness.run()
    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error


@SQLITE_ONLY
async def test_onboarding_with_a_lost_company_create_makes_one_company_and_contact(
    harness: Harness,
) -> None:
    # The company's create is answered but the answer is lost; the engine sends it again,
    # and the upsert on `uwf_key` finds the company the first request made.
    harness.sandbox.control(drop_after_write_rate=1.0)
    data = {"company": "Vandelay Industries", "email": "dana.scully@vandelay.test"}
    eid = await harness.submit("onboard_customer", data)
    [claimed] = await harness.store.claim(harness.executor.owner, 1, 30)
    assert await harness.executor._interpreter.run(claimed, harness.executor.owner) == "running"
    harness.sandbox.reset()
    await harness.run()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    runs = {r.step_id: r for r in await harness.store.step_runs(eid)}
    assert (runs["company"].attempts, runs["person"].attempts) == (2, 1)
    company_id, contact_id = execution.output["company_id"], execution.output["contact_id"]
    with harness.hubspot() as client:
        name = {"propertyName": "name", "operator": "EQ", "value": "Vandelay Industries"}
        found = client.post(
            "/crm/v3/objects/companies/search", json={"filterGroups": [{"filters": [name]}]}
        ).json()
        contact = client.get(
            f"/crm/v3/objects/contacts/{contact_id}",
            params={"properties": "email,associatedcompanyid,uwf_key"},
        ).json()["properties"]
        linked = client.get(f"/crm/v4/objects/contacts/{contact_id}/associations/companies")
    assert [c["id"] for c in found["results"]] == [company_id]
    assert contact == {
        "email": "dana.scully@vandelay.test",
        "associatedcompanyid": company_id,
        "uwf_key": f"{eid}:person",
    }
    [link] = linked.json()["results"]
    assert str(link["toObjectId"]) == company_id
    assert {t["label"] for t in link["associationTypes"]} == {"Primary", None}


SIZE_COMPANY = """
kind: workflow
name: size_company
tenant: umbrella
connection: umbrella-hubspot
input_schema: {type: object, required: [company]}
steps:
  - id: company
    type: create_record
    object: account
    fields:
      name: "{{ input.company }}"
      employees: "{{ input.employees }}"
      revenue: "{{ input.revenue }}"
output:
  employees: "{{ steps.company.employees }}"
  revenue: "{{ steps.company.revenue }}"
  created: "{{ steps.company.created }}"
  big: "{{ steps.company.employees > `100` }}"
  native: "{{ steps.company.native.properties.numberofemployees }}"
"""
TYPED_ACCOUNT_FIELDS = """custom_fields:
  account:
    employees: {native: numberofemployees, type: integer}
    revenue: {native: annualrevenue, type: decimal}
    created: {native: createdate, type: datetime}
"""


async def test_typed_custom_fields_read_back_as_numbers_not_hubspots_text(
    harness: Harness, metadata_dir: Path
) -> None:
    """HubSpot answers every property as text ("250"); the step's output has the declared
    types, so a condition compares numbers, and HubSpot's own text stays under `native`."""
    umbrella = metadata_dir / "umbrella.yaml"
    text = umbrella.read_text()
    assert "connector: hubspot\n" in text
    umbrella.write_text(
        text.replace("connector: hubspot\n", "connector: hubspot\n" + TYPED_ACCOUNT_FIELDS, 1)
    )
    (metadata_dir / "size_company.yaml").write_text(SIZE_COMPANY)
    harness.version, _ = await harness.store.apply_metadata(load_directory(metadata_dir), "test")

    data = {"company": "Kramerica Industries", "employees": "250", "revenue": 1234.5}
    done = await harness.execute("size_company", data)

    assert done.status == "succeeded", done.error
    output = done.output
    assert output is not None
    assert (output["employees"], output["revenue"], output["big"]) == (250, 1234.5, True)
    assert output["native"] == "250"
    # createdate, e.g. "2026-12-08T03:01:02.345Z", read as a date-time in UTC.
    assert datetime.fromisoformat(output["created"]).utcoffset() == timedelta(0)
