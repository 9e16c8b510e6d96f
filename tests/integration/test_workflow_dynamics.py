"""Contoso's `escalate_case` through the executor against the Dataverse sandbox over loopback.

Everything is checked through Dataverse's own Web API (not through UWF): the case's priority
and owner, and that exactly one note landed even when the note's response was lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
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
from uwf.sandboxes._dynamics_records import QUICKSTART_TICKET, guid
from uwf.store import Execution

NOTE_ONLY = note_only_workflow("contoso", "contoso-dynamics")
OPEN_CASE = """
kind: workflow
name: open_case
tenant: contoso
connection: contoso-dynamics
input_schema: {type: object, required: [subject, account_id]}
steps:
  - id: case
    type: create_record
    object: case
    fields:
      subject: "{{ input.subject }}"
      priority: "{{ value_map('case_priority', input.priority) }}"
      customerid_account@odata.bind: "/accounts({{ input.account_id }})"
output:
  case_id: "{{ steps.case.id }}"
"""
ONBOARD = """
kind: workflow
name: onboard_customer
tenant: contoso
connection: contoso-dynamics
input_schema: {type: object, required: [company, email]}
steps:
  - id: account
    type: create_record
    object: account
    fields:
      name: "{{ input.company }}"
      industry: "{{ input.industry }}"
      country: "{{ input.country }}"
      owner_id: "{{ input.owner_id }}"
  - id: contact
    type: create_record
    object: contact
    fields:
      first_name: "{{ input.first_name }}"
      last_name: "{{ input.last_name }}"
      email: "{{ input.email }}"
      account_id: "{{ steps.account.id }}"
output:
  account_id: "{{ steps.account.id }}"
  industry: "{{ steps.account.industry }}"
  contact_id: "{{ steps.contact.id }}"
  contact_name: "{{ steps.contact.name }}"
"""


class Crm:
    """Dataverse's Web API, as someone checking the CRM by hand would call it."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        headers = {
            "Authorization": f"Bearer {sandbox.credentials['access_token']}",
            "Accept": "application/json",
            "OData-Version": "4.0",
        }
        self.http = httpx.Client(base_url=f"{sandbox.url}/api/data/v9.2", headers=headers)

    def get(self, path: str, **params: str) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def case_id(self, ticket: str) -> str:
        return str(
            self.get("/incidents", **{"$filter": f"ticketnumber eq '{ticket}'"})["value"][0][
                "incidentid"
            ]
        )

    def user_id(self, email: str) -> str:
        found = self.get("/systemusers", **{"$filter": f"internalemailaddress eq '{email}'"})
        return str(found["value"][0]["systemuserid"])

    def notes(self, case_id: str) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self.get(f"/incidents({case_id})/Incident_Annotation")[
            "value"
        ]
        return value


sandbox = sandbox_fixture("dynamics")


@pytest.fixture
def crm(sandbox: RunningSandbox) -> Iterator[Crm]:
    checker = Crm(sandbox)
    yield checker
    checker.http.close()


@pytest.fixture
def metadata_dir(tmp_path: Path) -> Path:
    documents = {
        "contoso-note-only.yaml": NOTE_ONLY,
        "contoso-open-case.yaml": OPEN_CASE,
        "contoso-onboard.yaml": ONBOARD,
    }
    return example_metadata(tmp_path, EXAMPLES, "contoso.yaml", documents)


class Harness(EngineHarness):
    tenant = "contoso"


@pytest.fixture
async def harness(
    database_url: str, sandbox: RunningSandbox, metadata_dir: Path
) -> AsyncIterator[Harness]:
    async with running_harness(Harness, database_url, sandbox, metadata_dir) as h:
        yield h


async def run_with_first_response_lost(
    harness: Harness, workflow: str, data: dict[str, Any]
) -> Execution:
    """Run ``workflow`` once with its first write's response dropped, then to the end."""
    harness.sandbox.control(drop_after_write_rate=1.0)
    execution, _ = await harness.store.create_execution(
        tenant="contoso", workflow=workflow, metadata_version=harness.version, input=data
    )
    [claimed] = await harness.store.claim(harness.executor.owner, 1, 30)
    assert await harness.executor._interpreter.run(claimed, harness.executor.owner) == "running"
    harness.sandbox.reset()
    await harness.executor.run_until_idle(30)
    done = await harness.store.get_execution(execution.id)
    assert done is not None
    assert done.status == "succeeded", done.error
    return done


def test_contoso_runs_acmes_escalation_unchanged() -> None:
    bundle = load_directory(EXAMPLES)
    acme, contoso = (
        bundle.workflow("acme", "escalate_case"),
        bundle.workflow("contoso", "escalate_case"),
    )
    assert acme is not None
    assert contoso is not None
    assert contoso.input_schema == acme.input_schema
    assert contoso.steps == acme.steps
    assert contoso.output == acme.output
    assert (contoso.connection, acme.connection) == ("contoso-dynamics", "acme-zendesk")


async def test_escalation_sets_priority_owner_and_one_internal_note(
    harness: Harness, crm: Crm
) -> None:
    case_id, carol = crm.case_id(QUICKSTART_TICKET), crm.user_id("carol@acme.test")
    data = {
        "case_id": case_id,
        "priority": "P1",
        "owner_email": "carol@acme.test",
        "reason": "VIP customer",
    }
    eid = (await harness.execute("escalate_case", data)).id

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    # The output is canonical: Dataverse's prioritycode 1 reads as `high` on every CRM's terms.
    assert execution.output == {"case_id": case_id, "priority": "high", "owner_id": carol}
    runs = {r.step_id: r for r in await harness.store.step_runs(eid)}
    assert [(s, r.status, r.attempts) for s, r in runs.items()] == [
        ("owner", "succeeded", 1),
        ("set_priority", "succeeded", 1),
        ("reassign", "succeeded", 1),
        ("note", "succeeded", 1),
    ]
    assert runs["reassign"].request is not None
    assert runs["reassign"].request["body"] == {"ownerid@odata.bind": f"/systemusers({carol})"}
    assert runs["reassign"].request["headers"]["If-Match"] == "*"
    assert runs["set_priority"].response is not None
    assert (
        runs["set_priority"]
        .response["headers"]["x-ms-ratelimit-burst-remaining-xrm-requests"]
        .isdigit()
    )

    incident = crm.get(f"/incidents({case_id})")
    assert (incident["prioritycode"], incident["_ownerid_value"]) == (1, carol)
    [note] = crm.notes(case_id)
    assert note["notetext"] == "Escalated: VIP customer"
    assert note["subject"] == f"UWF note {eid}:note"


async def test_a_lost_note_response_is_verified_not_written_twice(
    harness: Harness, crm: Crm
) -> None:
    case_id = guid("incident", 1)
    before = len(crm.notes(case_id))
    harness.sandbox.control(drop_after_write_rate=1.0)
    eid = (await harness.execute("note_only", {"case_id": case_id, "text": "lost response"})).id
    harness.sandbox.reset()

    execution = await harness.store.get_execution(eid)
    [run] = await harness.store.step_runs(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert (run.attempts, run.response is not None and run.response["verified"]) == (1, True)
    assert [n["notetext"] for n in crm.notes(case_id)[before:]] == ["lost response"]


async def test_a_created_case_whose_response_is_lost_exists_once(
    harness: Harness, crm: Crm
) -> None:
    """Create is an alternate-key upsert on the step key: the retry finds the same case."""
    data = {"subject": "Printer on fire", "priority": "P2", "account_id": guid("account", 1)}
    done = await run_with_first_response_lost(harness, "open_case", data)
    found = crm.get("/incidents", **{"$filter": f"uwf_key eq '{done.id}:case'"})["value"]
    assert [(c["incidentid"], c["title"], c["prioritycode"]) for c in found] == [
        (done.output["case_id"], "Printer on fire", 1)
    ]


async def test_a_dataverse_validation_error_fails_the_execution_with_its_message(
    harness: Harness, crm: Crm, metadata_dir: Path
) -> None:
    tenant = metadata_dir / "contoso.yaml"
    # 7 is not a prioritycode option, though the tenant's field mapping says it is.
    mapping = (
        "connector: dynamics\nfield_mappings:\n  case:\n    priority: {native: prioritycode, "
        "type: enum, values: {low: 7, normal: 2, high: 1, urgent: 1}}\n"
    )
    text = tenant.read_text().replace("P4: 3", "P4: 7")
    tenant.write_text(text.replace("connector: dynamics\n", mapping))
    harness.version, _ = await harness.store.apply_metadata(load_directory(metadata_dir), "bad")
    case_id = guid("incident", 2)
    eid = (
        await harness.execute(
            "escalate_case", {"case_id": case_id, "priority": "P4", "reason": "x"}
        )
    ).id

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "failed"
    assert execution.error is not None
    assert (execution.error["step"], execution.error["status"]) == ("set_priority", 400)
    assert (
        "A validation error occurred. The value 7 of 'prioritycode' on record of type 'incident' "
        "is outside the valid range." in execution.error["message"]
    )
    assert crm.get(f"/incidents({case_id})")["prioritycode"] != 7
    assert all(n["notetext"] != "Escalated: x" for n in crm.notes(case_id))


async def test_an_account_and_its_contact_are_created_once_though_a_response_is_lost(
    harness: Harness, crm: Crm
) -> None:
    """Canonical fields in, Dataverse columns and binds out; the lost create is not repeated."""
    bob = crm.user_id("bob@acme.test")
    data = {
        "company": "Initech",
        "industry": "7",
        "country": "United States",
        "owner_id": bob,
        "first_name": "Peter",
        "last_name": "Gibbons",
        "email": "peter.gibbons@initech.test",
    }
    done = await run_with_first_response_lost(harness, "onboard_customer", data)
    runs = {r.step_id: r.attempts for r in await harness.store.step_runs(done.id)}
    assert runs == {"account": 2, "contact": 1}  # the account was sent again, as an upsert
    [account] = crm.get("/accounts", **{"$filter": "name eq 'Initech'"})["value"]
    assert account["uwf_key"] == f"{done.id}:account"
    assert (account["industrycode"], account["address1_country"]) == (7, "United States")
    assert account["_ownerid_value"] == bob  # the bare id was bound as /systemusers(<id>)
    [contact] = crm.get(
        "/contacts", **{"$filter": "emailaddress1 eq 'peter.gibbons@initech.test'"}
    )["value"]
    assert (contact["fullname"], contact["_parentcustomerid_value"]) == (
        "Peter Gibbons",
        account["accountid"],
    )
    assert done.output == {
        "account_id": account["accountid"],
        "industry": 7,
        "contact_id": contact["contactid"],
        "contact_name": "Peter Gibbons",
    }
