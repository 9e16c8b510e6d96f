"""The executor against the Zendesk sandbox over loopback, on SQLite and PostgreSQL.

Faults come from the sandbox's own `_control`: real 429s and 503s with their headers, and
responses lost after the write was committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ACME_EXAMPLES as EXAMPLES
from tests.engine_harness import (
    EngineHarness,
    example_metadata,
    note_only_workflow,
    running_harness,
    sandbox_fixture,
)
from tests.sandbox_server import RunningSandbox
from uwf.connectors import LimitsSpec
from uwf.metadata import load_directory
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import StepRun

NOTE_ONLY = note_only_workflow("acme", "acme-zendesk")
OPEN_CASE = """
kind: workflow
name: open_case
tenant: acme
connection: acme-zendesk
input_schema:
  type: object
  required: [subject, text]
steps:
  - id: ticket
    type: create_record
    object: case
    fields:
      subject: "{{ input.subject }}"
      comment:
        body: "{{ input.text }}"
      priority: "{{ value_map('case_priority', input.priority) }}"
output:
  ticket_id: "{{ steps.ticket.id }}"
"""

ONBOARD = """
kind: workflow
name: onboard_customer
tenant: acme
connection: acme-zendesk
input_schema:
  type: object
  required: [company, email]
steps:
  - id: company
    type: create_record
    object: account
    fields:
      name: "{{ input.company }}"
      description: Onboarded by UWF
  - id: contact
    type: create_record
    object: contact
    fields:
      name: Hans Gruber
      email: "{{ input.email }}"
      account_id: "{{ steps.company.id }}"
output:
  company: "{{ steps.company.id }}"
  contact: "{{ steps.contact.id }}"
"""


sandbox = sandbox_fixture()


@pytest.fixture
def metadata_dir(tmp_path: Path) -> Path:
    return example_metadata(
        tmp_path,
        EXAMPLES,
        "acme-zendesk.yaml",
        {
            "note_only.yaml": NOTE_ONLY,
            "open_case.yaml": OPEN_CASE,
            "onboard_customer.yaml": ONBOARD,
        },
    )


class Harness(EngineHarness):
    def comments(self, ticket: int, text: str) -> list[dict[str, Any]]:
        with self.sandbox.client() as client:
            listed = client.get(f"/api/v2/tickets/{ticket}/comments.json").json()["comments"]
        return [c for c in listed if c["body"] == text]


@pytest.fixture
async def harness(
    database_url: str, sandbox: RunningSandbox, metadata_dir: Path
) -> AsyncIterator[Harness]:
    async with running_harness(Harness, database_url, sandbox, metadata_dir) as h:
        yield h


async def test_escalation_records_every_step(harness: Harness) -> None:
    eid = await harness.submit(
        "escalate_case",
        {"case_id": 30, "priority": "P2", "owner_email": "bob@acme.test", "reason": "churn"},
    )
    await harness.run()

    execution = await harness.store.get_execution(eid)
    runs = await harness.store.step_runs(eid)
    assert execution is not None
    assert execution.status == "succeeded"
    assert [(r.step_id, r.status, r.attempts) for r in runs] == [
        ("owner", "succeeded", 1),
        ("set_priority", "succeeded", 1),
        ("reassign", "succeeded", 1),
        ("note", "succeeded", 1),
    ]
    assert runs[2].request is not None
    assert runs[2].request["body"] == {"ticket": {"assignee_id": 10003}}
    assert runs[1].response is not None
    assert runs[1].response["headers"]["x-rate-limit-remaining"].isdigit()
    assert len(harness.comments(30, "Escalated: churn")) == 1


async def test_429_is_retried_after_the_crms_retry_after(harness: Harness) -> None:
    harness.sandbox.control(error_rates={"429": 1.0})
    eid = await harness.submit("escalate_case", {"case_id": 31, "priority": "P1"})
    [claimed] = await harness.store.claim(harness.executor.owner, 1, 30)
    status = await harness.executor._interpreter.run(claimed, harness.executor.owner)

    execution = await harness.store.get_execution(eid)
    run = {r.step_id: r for r in await harness.store.step_runs(eid)}["set_priority"]
    assert status == "running"
    assert execution is not None
    assert execution.error is not None
    assert execution.error["type"] == "retrying"
    assert "429" in execution.error["message"]
    # Retry-After from the sandbox is capped by this connection's max_delay_seconds (0.3 s).
    assert execution.error["retry_in_seconds"] == 0.3
    assert run.status == "retrying"
    assert run.response is not None
    assert run.response["status"] == 429
    assert "retry-after" in {k.lower() for k in run.response["headers"]}

    harness.sandbox.reset()
    await harness.run()
    execution = await harness.store.get_execution(eid)
    run = {r.step_id: r for r in await harness.store.step_runs(eid)}["set_priority"]
    assert execution is not None
    assert execution.status == "succeeded"
    assert run.attempts == 2


async def test_exhausted_retries_dead_letter_the_action_with_its_payload(
    harness: Harness,
) -> None:
    harness.sandbox.control(error_rates={"503": 1.0})
    data = {"case_id": 32, "priority": "P1", "reason": "outage"}
    eid = await harness.submit("escalate_case", data)
    await harness.run()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "dead"
    assert execution.input == data
    assert execution.error is not None
    assert execution.error["type"] == "retries_exhausted"
    assert execution.error["step"] == "set_priority"
    assert "gave up after 3 attempts" in execution.error["message"]
    assert "503" in execution.error["message"]
    harness.sandbox.reset()
    assert harness.comments(32, "Escalated: outage") == []


async def test_lost_response_to_a_comment_is_verified_not_sent_twice(harness: Harness) -> None:
    harness.sandbox.control(drop_after_write_rate=1.0)
    eid = await harness.submit("note_only", {"case_id": 33, "text": "lost response"})
    await harness.run()
    harness.sandbox.reset()

    run = await _found_by_verification_once(harness, eid, 33, "lost response")
    assert run.status == "succeeded"


async def _found_by_verification_once(
    harness: Harness, eid: str, case_id: int, text: str
) -> StepRun:
    """The execution succeeded, its one note was found by `verify`, and it is in the CRM once."""
    execution = await harness.store.get_execution(eid)
    [run] = await harness.store.step_runs(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert run.response is not None
    assert run.response["verified"] is True
    assert len(harness.comments(case_id, text)) == 1
    return run


@pytest.mark.parametrize("landed", [True, False], ids=["comment-landed", "comment-not-sent"])
async def test_crash_mid_step_resumes_without_a_duplicate(harness: Harness, landed: bool) -> None:
    """A worker died after writing `sending` to the ledger, maybe after the CRM got it."""
    eid = await harness.submit("note_only", {"case_id": 34, "text": "crash test"})
    assert len(await harness.store.claim("dead-worker", 1, lease_seconds=0.1)) == 1
    await harness.store.save_step(eid, "dead-worker", StepRun("note", 0, "sending", attempts=1))
    if landed:
        with harness.sandbox.client() as client:
            client.put(
                "/api/v2/tickets/34.json",
                json={
                    "ticket": {
                        "comment": {"body": "crash test", "public": False},
                        "metadata": {"uwf_step_key": f"{eid}:note"},
                    }
                },
            ).raise_for_status()

    await harness.run()

    execution = await harness.store.get_execution(eid)
    [run] = await harness.store.step_runs(eid)
    assert execution is not None
    assert execution.status == "succeeded"
    assert execution.claims == 2
    assert len(harness.comments(34, "crash test")) == 1
    assert run.attempts == (1 if landed else 2)


async def test_metadata_version_is_pinned(harness: Harness, metadata_dir: Path) -> None:
    eid = await harness.submit("escalate_case", {"case_id": 35, "priority": "P4"})
    vmap = metadata_dir / "acme-zendesk.yaml"
    vmap.write_text(vmap.read_text().replace("P4: low", "P4: normal"))
    new_version, created = await harness.store.apply_metadata(
        load_directory(metadata_dir), "changed"
    )
    assert created
    await harness.run()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.metadata_version == harness.version != new_version
    with harness.sandbox.client() as client:
        assert client.get("/api/v2/tickets/35.json").json()["ticket"]["priority"] == "low"


async def test_unreachable_crm_is_retried_then_dead(harness: Harness) -> None:
    # Nothing listens on this port: connection refused, nothing was sent, so retrying is safe.
    harness.sandbox.url = "http://127.0.0.1:9/sandbox/zendesk"
    harness.executor = make_executor(
        Settings(home=harness.sandbox.home), harness.store, "http://127.0.0.1:9/sandbox"
    )
    eid = await harness.submit("note_only", {"case_id": 36, "text": "x"})
    await harness.run()
    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "dead"
    assert execution.error is not None
    assert "could not connect" in execution.error["message"]
    await harness.executor.runtime.close()


async def test_create_with_a_lost_response_creates_one_ticket(harness: Harness) -> None:
    """Ticket creation carries the step key as Zendesk's Idempotency-Key: a retry is safe."""
    with harness.sandbox.client() as client:
        before = client.get("/api/v2/tickets.json", params={"per_page": 1}).json()["count"]
    harness.sandbox.control(drop_after_write_rate=1.0)
    eid = await harness.submit(
        "open_case", {"subject": "Printer on fire", "text": "Smoke", "priority": "P1"}
    )
    [claimed] = await harness.store.claim(harness.executor.owner, 1, 30)
    assert await harness.executor._interpreter.run(claimed, harness.executor.owner) == "running"
    harness.sandbox.reset()
    await harness.run()

    execution = await harness.store.get_execution(eid)
    [run] = await harness.store.step_runs(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    assert run.attempts == 2
    assert run.request is not None
    assert run.request["headers"]["Idempotency-Key"] == f"{eid}:ticket"
    assert run.response is not None
    assert run.response["headers"].get("x-idempotency-lookup") == "hit"
    with harness.sandbox.client() as client:
        after = client.get("/api/v2/tickets.json", params={"per_page": 1}).json()["count"]
        ticket = client.get(f"/api/v2/tickets/{execution.output['ticket_id']}.json").json()
    assert after == before + 1
    assert ticket["ticket"]["subject"] == "Printer on fire"
    assert ticket["ticket"]["priority"] == "urgent"


async def test_lost_organization_answer_is_resent_and_makes_one(harness: Harness) -> None:
    """Organizations are created by create_or_update keyed by external_id = the step key: the
    resend after a lost answer finds the one the first request made."""
    harness.sandbox.control(drop_after_write_rate=1.0)
    eid = await harness.submit(
        "onboard_customer", {"company": "Nakatomi Trading", "email": "hans@nakatomi.test"}
    )
    [claimed] = await harness.store.claim(harness.executor.owner, 1, 30)
    assert await harness.executor._interpreter.run(claimed, harness.executor.owner) == "running"
    assert harness.sandbox.stats()["dropped_after_write"] == 1  # the answer was really lost
    harness.sandbox.reset()
    await harness.run()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "succeeded", execution.error
    runs = {r.step_id: r for r in await harness.store.step_runs(eid)}
    assert (runs["company"].attempts, runs["contact"].attempts) == (2, 1)
    with harness.sandbox.client() as client:
        search = "/api/v2/organizations/search.json"
        orgs = client.get(search, params={"name": "Nakatomi Trading"}).json()["organizations"]
        users = client.get(
            "/api/v2/users/search.json", params={"query": "email:hans@nakatomi.test"}
        ).json()["users"]
    assert [(o["id"], o["external_id"], o["notes"]) for o in orgs] == [
        (execution.output["company"], f"{eid}:company", "Onboarded by UWF")
    ]
    assert [(u["id"], u["name"], u["organization_id"], u["external_id"]) for u in users] == [
        (execution.output["contact"], "Hans Gruber", execution.output["company"], f"{eid}:contact")
    ]


async def test_read_and_step_timeouts_cut_a_slow_crm_short(
    harness: Harness, metadata_dir: Path
) -> None:
    conn = metadata_dir / "acme-zendesk.yaml"
    conn.write_text(
        conn.read_text().replace("retry:\n", "timeouts:\n  read_seconds: 0.3\nretry:\n")
    )
    harness.version, _ = await harness.store.apply_metadata(load_directory(metadata_dir), "t1")
    harness.sandbox.control(latency_ms=1500)

    slow = await harness.execute("escalate_case", {"case_id": 34, "priority": "P1"})

    assert slow.status == "dead"
    assert slow.error is not None
    assert slow.error["step"] == "set_priority"
    assert "gave up after 3 attempts" in slow.error["message"]
    assert "no response from acme-zendesk after the request was sent" in slow.error["message"]


async def test_a_steps_own_timeout_wins_over_the_connections(
    harness: Harness, metadata_dir: Path
) -> None:
    # (A test of its own: the timeouts above open the connection's circuit breaker.)
    workflow = metadata_dir / "escalate_case.yaml"
    workflow.write_text(
        workflow.read_text().replace(
            "    type: update_record\n", "    type: update_record\n    timeout_seconds: 0.3\n"
        )
    )
    harness.version, _ = await harness.store.apply_metadata(load_directory(metadata_dir), "t2")
    harness.sandbox.control(latency_ms=1500)
    cut = await harness.execute("escalate_case", {"case_id": 35, "priority": "P1"})
    assert cut.status == "dead"
    assert cut.error is not None
    assert "no response from acme-zendesk" in cut.error["message"]

    harness.sandbox.control(latency_ms=0)
    fine = await harness.execute("escalate_case", {"case_id": 36, "priority": "P1"})
    assert fine.status == "succeeded"


async def _crashed_while_sending(harness: Harness, text: str, case_id: int, attempts: int) -> str:
    """A note whose worker died after `sending` (attempt `attempts`), before any answer."""
    eid = await harness.submit("note_only", {"case_id": case_id, "text": text})
    assert len(await harness.store.claim("dead-worker", 1, lease_seconds=0.1)) == 1
    await harness.store.save_step(
        eid, "dead-worker", StepRun("note", 0, "sending", attempts=attempts)
    )
    return eid


async def test_a_lost_response_on_the_last_attempt_is_still_checked(
    harness: Harness, metadata_dir: Path
) -> None:
    """No attempt left is no reason to give up on a write that may have happened."""
    workflow = metadata_dir / "note_only.yaml"
    workflow.write_text(workflow.read_text() + "    retry: {max_attempts: 1}\n")
    harness.version, _ = await harness.store.apply_metadata(load_directory(metadata_dir), "t")
    harness.sandbox.control(drop_after_write_rate=1.0)
    eid = await harness.submit("note_only", {"case_id": 36, "text": "last attempt lost"})
    await harness.run()
    harness.sandbox.reset()

    run = await _found_by_verification_once(harness, eid, 36, "last attempt lost")
    assert run.attempts == 1


async def test_a_write_checked_and_not_found_with_no_attempt_left_is_dead_not_resent(
    harness: Harness,
) -> None:
    eid = await _crashed_while_sending(harness, "never landed", 37, attempts=3)
    await harness.run()

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.status == "dead"
    assert execution.error is not None
    assert execution.error["type"] == "retries_exhausted"
    assert "checked" in execution.error["message"]
    assert execution.input == {"case_id": 37, "text": "never landed"}
    assert harness.comments(37, "never landed") == []


async def test_checking_a_write_counts_against_the_connection_and_learns_from_a_429(
    harness: Harness,
) -> None:
    """The look-up after a lost response is a request like any other: a 429 pauses the CRM."""
    eid = await _crashed_while_sending(harness, "checked under a 429", 38, attempts=1)
    harness.sandbox.control(error_rates={"429": 1.0})
    await asyncio.sleep(0.2)  # the dead worker's lease runs out
    [claimed] = await harness.store.claim(harness.executor.owner, 1, 30)
    await harness.executor._interpreter.run(claimed, harness.executor.owner)
    requests = harness.sandbox.stats()["by_status"]

    execution = await harness.store.get_execution(eid)
    assert execution is not None
    assert execution.error is not None
    assert execution.error["type"] == "verifying"
    assert requests == {"429": 1}  # the check was sent, and nothing was written
    governor = harness.executor._interpreter._governor
    admission = await governor.admit("acme-zendesk", LimitsSpec())
    assert admission.wait > 0
    assert "429" in (admission.reason or "")


async def test_worker_holds_back_while_the_api_accepts_then_runs_the_action(
    harness: Harness,
) -> None:
    executor = harness.executor
    await executor.start()
    try:
        ticket = executor.accepting()  # the API of this process is accepting an action
        held_back = asyncio.create_task(executor._defer_to_api())
        eid = await harness.submit("escalate_case", {"case_id": 31, "priority": "P2"})
        executor.wake()
        await asyncio.sleep(0)
        assert not held_back.done()  # the worker waits for the API …
        ticket.release()
        ticket.release()  # released by the route, then again by the middleware: no harm
        await asyncio.wait_for(held_back, 5)  # … and goes on as soon as it is done
        execution = await executor.wait_for(eid, 30)
        assert execution is not None
        assert execution.status == "succeeded"
        # A ticket nobody releases holds the worker back for a bounded time only.
        executor.accepting()
        await asyncio.wait_for(executor._defer_to_api(), 5)
    finally:
        await executor.stop()
