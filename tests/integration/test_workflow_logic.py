"""Workflow logic (switch, for_each, call_workflow, on_failure) run by the executor against the
Zendesk sandbox over loopback, on SQLite and PostgreSQL; checked through the sandbox's own API.

The example `examples/metadata/acme/triage_cases.yaml` is loaded and run as written.
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
    running_harness,
    sandbox_fixture,
)
from tests.sandbox_server import RunningSandbox
from uwf.api import execution_view, replay_execution

NOTE_EACH = """
kind: workflow
name: note_each
tenant: acme
connection: acme-zendesk
input_schema:
  type: object
  required: [case_ids, text]
steps:
  - id: loop
    type: for_each
    items: input.case_ids
    max_items: 3
    steps:
      - id: note
        type: add_comment
        object: case
        record_id: "{{ item }}"
        body: "{{ input.text }} #{{ index }}"
output:
  notes: "{{ length(steps.loop) }}"
"""
FAILING = """
kind: workflow
name: reprioritise
tenant: acme
connection: acme-zendesk
input_schema:
  type: object
  required: [case_id, report_to]
steps:
  - id: set_priority
    type: update_record
    object: case
    record_id: "{{ input.case_id }}"
    fields:
      priority: "{{ value_map('urgency', input.level) }}"
on_failure:
  - id: reopen
    type: update_record
    object: case
    record_id: "{{ input.report_to }}"
    fields:
      status: open
  - id: tell
    type: add_comment
    object: case
    record_id: "{{ input.report_to }}"
    body: "escalation failed ({{ error.type }}): {{ error.message }}"
value_maps:
  urgency:
    values: {high: urgent, low: low}
    on_unmapped: error
---
kind: workflow
name: escalate_loosely
tenant: acme
connection: acme-zendesk
input_schema:
  type: object
steps:
  - id: sub
    type: call_workflow
    workflow: escalate_case
    input:
      case_id: "{{ input.case_id }}"
      priority: "{{ input.priority }}"
"""
ASSIGN_OR_EXPLAIN = """
kind: workflow
name: assign_or_explain
tenant: acme
connection: acme-zendesk
input_schema:
  type: object
  required: [case_id, owner_id]
steps:
  - id: announce
    type: add_comment
    object: case
    record_id: "{{ input.case_id }}"
    body: "Assigning to {{ input.owner_id }}"
  - id: assign
    type: assign
    object: case
    record_id: "{{ input.case_id }}"
    owner_id: "{{ input.owner_id }}"
    on_failure:
      - id: explain
        type: add_comment
        object: case
        record_id: "{{ input.case_id }}"
        body: "Assignment failed ({{ error.type }}): {{ error.message }}"
on_failure:
  - id: report
    type: add_comment
    object: case
    record_id: "{{ input.case_id }}"
    body: "Failed at {{ error.step }}; its compensation {{ error.step_compensation.status }}"
"""
PASSTHROUGH_MAPS = """
kind: value_map
name: tone
tenant: acme
values: {angry: urgent}
on_unmapped: passthrough
---
kind: value_map
name: tone_or_normal
tenant: acme
values: {angry: urgent}
on_unmapped: default
default: normal
---
kind: workflow
name: set_tone
tenant: acme
connection: acme-zendesk
input_schema:
  type: object
  required: [case_id, tone, policy]
steps:
  - id: by_policy
    type: switch
    cases:
      - when: "input.policy == 'passthrough'"
        steps:
          - id: set
            type: update_record
            object: case
            record_id: "{{ input.case_id }}"
            fields:
              priority: "{{ value_map('tone', input.tone) }}"
      - when: "input.policy == 'default'"
        steps:
          - id: set
            type: update_record
            object: case
            record_id: "{{ input.case_id }}"
            fields:
              priority: "{{ value_map('tone_or_normal', input.tone) }}"
    default:
      - id: set
        type: update_record
        object: case
        record_id: "{{ input.case_id }}"
        fields:
          priority: "{{ value_map('case_priority', input.tone) }}"
output:
  branch: "{{ steps.by_policy.case }}"
  priority: "{{ steps.by_policy.steps.set.priority }}"
"""


sandbox = sandbox_fixture()


@pytest.fixture
def metadata_dir(tmp_path: Path) -> Path:
    return example_metadata(
        tmp_path,
        EXAMPLES,
        "acme-zendesk.yaml",
        {
            "note_each.yaml": NOTE_EACH,
            "reprioritise.yaml": FAILING,
            "set_tone.yaml": PASSTHROUGH_MAPS,
            "assign_or_explain.yaml": ASSIGN_OR_EXPLAIN,
        },
    )


class Harness(EngineHarness):
    def comments(self, ticket: int) -> list[str]:
        with self.sandbox.client() as client:
            listed = client.get(f"/api/v2/tickets/{ticket}/comments.json").json()["comments"]
        return [c["body"] for c in listed]

    def ticket(self, ticket: int) -> dict[str, Any]:
        with self.sandbox.client() as client:
            found: dict[str, Any] = client.get(f"/api/v2/tickets/{ticket}.json").json()["ticket"]
        return found

    async def ledger(self, execution_id: str) -> dict[str, Any]:
        return {r.step_id: r for r in await self.store.step_runs(execution_id)}


@pytest.fixture
async def harness(
    database_url: str, sandbox: RunningSandbox, metadata_dir: Path
) -> AsyncIterator[Harness]:
    async with running_harness(Harness, database_url, sandbox, metadata_dir) as h:
        yield h


async def test_example_triage_loops_calls_and_branches(harness: Harness) -> None:
    done = await harness.execute(
        "triage_cases",
        {
            "cases": [{"case_id": 40, "priority": "P1"}, {"case_id": 41, "priority": "P3"}],
            "reason": "batch",
        },
    )
    assert done.status == "succeeded", done.error
    assert done.output == {"escalated": [40, 41], "priorities": ["urgent", "normal"]}
    ledger = await harness.ledger(done.id)
    # In the order the steps started; every key says where its step sits.
    assert [k for k, r in ledger.items() if r.status == "succeeded"] == [
        "each",
        "each[0].escalate",
        "each[0].escalate.set_priority",
        "each[0].escalate.note",
        "each[0].triage",
        "each[0].triage.case0.page_lead",
        "each[1].escalate",
        "each[1].escalate.set_priority",
        "each[1].escalate.note",
        "each[1].triage",
        "each[1].triage.default.routine_note",
    ]
    assert ledger["each[0].escalate.owner"].status == "skipped"
    assert ledger["each[0].triage"].output["case"] == "case0"
    assert ledger["each[1].triage"].output["case"] == "default"
    # Step keys sent to the CRM carry the nested key, so each write is findable on its own.
    assert ledger["each[1].triage.default.routine_note"].request["body"]["ticket"]["metadata"] == {
        "uwf_step_key": f"{done.id}:each[1].triage.default.routine_note"
    }
    assert harness.ticket(40)["priority"] == "urgent"
    assert harness.ticket(41)["priority"] == "normal"
    assert harness.comments(40)[-2:] == [
        "Escalated: batch",
        "SEV-1: on-call lead paged (batch item 0)",
    ]
    assert harness.comments(41)[-2:] == ["Escalated: batch", "Triage: routine (batch item 1)"]


async def test_a_loop_over_its_bound_fails_before_any_write(harness: Harness) -> None:
    before = harness.comments(42)
    done = await harness.execute("note_each", {"case_ids": [42, 42, 42, 42], "text": "too many"})
    assert done.status == "failed"
    assert done.error == {
        "type": "limit",
        "step": "loop",
        "message": "for_each 'loop' got 4 items; max_items is 3, so the execution stopped "
        "before any step ran",
    }
    assert await harness.store.step_runs(done.id) == []
    assert harness.comments(42) == before


async def test_an_oversized_batch_writes_nothing_not_even_compensation(harness: Harness) -> None:
    """triage_cases' schema allows 20 cases, its loop 20; a bigger batch (a caller skipping the
    API's schema check is simulated by submitting directly) fails before any step, and its
    `on_failure` note is not written either: nothing was started, so nothing is compensated."""
    before = harness.comments(58)
    cases = [{"case_id": 58, "priority": "P3"}] * 21
    done = await harness.execute("triage_cases", {"cases": cases, "reason": "too big"})
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["type"] == "limit"
    assert "compensation" not in done.error
    assert await harness.store.step_runs(done.id) == []
    assert harness.comments(58) == before


async def test_a_loop_runs_each_round_once_in_order(harness: Harness) -> None:
    done = await harness.execute("note_each", {"case_ids": [43, 44, 43], "text": "round"})
    assert done.status == "succeeded", done.error
    assert done.output == {"notes": 3}
    assert [c for c in harness.comments(43) if c.startswith("round")] == ["round #0", "round #2"]
    assert [c for c in harness.comments(44) if c.startswith("round")] == ["round #1"]


async def test_an_empty_or_missing_list_runs_no_round(harness: Harness) -> None:
    done = await harness.execute("note_each", {"case_ids": None, "text": "none"})
    assert done.status == "succeeded", done.error
    assert done.output == {"notes": 0}


async def test_on_failure_compensates_and_keeps_the_original_reason(harness: Harness) -> None:
    with harness.sandbox.client() as client:
        client.put("/api/v2/tickets/46.json", json={"ticket": {"status": "pending"}})
    done = await harness.execute(
        "reprioritise", {"case_id": 45, "level": "medium", "report_to": 46}
    )
    assert done.status == "failed"
    assert done.error is not None
    message = "value 'medium' is not in value map 'urgency' (known: high, low)"
    assert done.error["type"] == "expression"
    assert done.error["step"] == "set_priority"
    assert message in done.error["message"]
    assert done.error["compensation"] == {"status": "succeeded"}
    ledger = await harness.ledger(done.id)
    assert ledger["set_priority"].status == "failed"
    assert ledger["on_failure.reopen"].status == "succeeded"
    assert ledger["on_failure.tell"].status == "succeeded"
    assert ledger["on_failure"].status == "succeeded"
    assert harness.ticket(46)["status"] == "open"
    [told] = [c for c in harness.comments(46) if c.startswith("escalation failed")]
    assert told.startswith("escalation failed (expression): ")
    assert message in told


async def test_failed_compensation_is_recorded_and_the_reason_stays(harness: Harness) -> None:
    # The case to report to does not exist: compensation fails with Zendesk's 404.
    done = await harness.execute(
        "reprioritise", {"case_id": 47, "level": "unknown", "report_to": 999999}
    )
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["type"] == "expression"
    assert done.error["step"] == "set_priority"
    compensation = done.error["compensation"]
    assert compensation["status"] == "failed"
    assert compensation["step"] == "on_failure.reopen"
    ledger = await harness.ledger(done.id)
    assert ledger["on_failure"].status == "failed"
    assert "on_failure.tell" not in ledger


async def test_a_steps_own_on_failure_runs_before_the_workflows(harness: Harness) -> None:
    """Zendesk refuses an assignee that does not exist (422 RecordInvalid): the step's own
    compensation leaves a note with the CRM's reason, then the workflow's runs, and the
    execution ends failed with that reason."""
    done = await harness.execute("assign_or_explain", {"case_id": 49, "owner_id": 999999})
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["step"] == "assign"
    assert (
        "422 Unprocessable Entity: RecordInvalid: Record validation errors: Assignee is invalid"
        in done.error["message"]
    )
    assert done.error["step_compensation"] == {"status": "succeeded"}
    assert done.error["compensation"] == {"status": "succeeded"}
    ledger = await harness.ledger(done.id)
    assert ledger["assign"].status == "failed"
    assert ledger["assign"].attempts == 1  # a 422 is not retried
    assert [k for k in ledger if "on_failure" in k] == [
        "assign.on_failure",
        "assign.on_failure.explain",
        "on_failure",
        "on_failure.report",
    ]
    assert all(ledger[k].status == "succeeded" for k in ledger if "on_failure" in k)
    explain = ledger["assign.on_failure.explain"].request["body"]["ticket"]["metadata"]
    assert explain == {"uwf_step_key": f"{done.id}:assign.on_failure.explain"}
    notes = harness.comments(49)[-3:]
    assert notes[0] == "Assigning to 999999"
    assert notes[1] == (
        "Assignment failed (crm_error): Zendesk Support answered 422 Unprocessable Entity: "
        "RecordInvalid: Record validation errors: Assignee is invalid"
    )
    assert notes[2] == "Failed at assign; its compensation succeeded"
    view = await execution_view(harness.store, done)
    assert [(s.id, s.type) for s in view.steps if "on_failure" in s.id] == [
        ("assign.on_failure", "on_failure"),
        ("assign.on_failure.explain", "add_comment"),
        ("on_failure", "on_failure"),
        ("on_failure.report", "add_comment"),
    ]


async def test_a_crash_during_step_compensation_resumes_it_once(harness: Harness) -> None:
    """A worker dies while the step's compensation note is on its way; another resumes the
    compensation from the ledger: the failed step is not sent again, the note is written once."""
    harness.sandbox.control(latency_ms=300)
    eid = await harness.submit("assign_or_explain", {"case_id": 49, "owner_id": 999998})
    [claimed] = await harness.store.claim("doomed-worker", 1, lease_seconds=1)
    dying = asyncio.create_task(harness.executor._interpreter.run(claimed, "doomed-worker"))
    for _ in range(400):
        if "assign.on_failure" in await harness.ledger(eid):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the step's compensation never started")
    await asyncio.sleep(0.1)  # the note's request is in flight
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying
    assert (await harness.ledger(eid))["assign.on_failure"].status == "running"
    harness.sandbox.control(latency_ms=0)

    await harness.run_due()

    done = await harness.store.get_execution(eid)
    assert done is not None
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["step_compensation"] == {"status": "succeeded"}
    assert done.claims == 2
    ledger = await harness.ledger(eid)
    assert ledger["assign"].attempts == 1  # the failed step is not sent again
    explained = [c for c in harness.comments(49) if c.startswith("Assignment failed")]
    assert len(explained) == 1
    assert explained[0].endswith("RecordInvalid: Record validation errors: Assignee is invalid")


@pytest.mark.parametrize(
    ("policy", "tone", "branch", "priority"),
    [
        ("passthrough", "angry", "case0", "urgent"),
        ("passthrough", "high", "case0", "high"),  # unmapped: passed through as it is
        ("default", "angry", "case1", "urgent"),
        ("default", "meh", "case1", "normal"),  # unmapped: the map's default
        ("error", "P2", "default", "high"),
    ],
)
async def test_value_map_policies_end_to_end(
    harness: Harness, policy: str, tone: str, branch: str, priority: str
) -> None:
    done = await harness.execute("set_tone", {"case_id": 48, "tone": tone, "policy": policy})
    assert done.status == "succeeded", done.error
    assert done.output == {"branch": branch, "priority": priority}
    assert harness.ticket(48)["priority"] == priority


async def test_unmapped_value_with_error_policy_names_map_field_and_value(
    harness: Harness,
) -> None:
    done = await harness.execute("set_tone", {"case_id": 49, "tone": "P9", "policy": "error"})
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["step"] == "by_policy.default.set"
    assert done.error["message"] == (
        "fields.priority: value 'P9' is not in value map 'case_priority' (known: P1, P2, P3, P4)"
    )
    assert harness.ticket(49)["priority"] != "P9"


async def test_sub_workflow_input_is_checked_against_its_schema(harness: Harness) -> None:
    before = harness.ticket(50)["priority"]
    done = await harness.execute("escalate_loosely", {"case_id": 50, "priority": "P9"})
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["type"] == "input"
    assert done.error["step"] == "sub"
    assert done.error["message"] == (
        "input for workflow 'escalate_case' from step 'sub' does not match its schema: "
        "/priority: 'P9' is not one of ['P1', 'P2', 'P3', 'P4']"
    )
    assert harness.ticket(50)["priority"] == before


async def test_sub_workflow_steps_are_recorded_under_the_calling_step(harness: Harness) -> None:
    done = await harness.execute("escalate_loosely", {"case_id": 54, "priority": "P2"})
    assert done.status == "succeeded", done.error
    ledger = await harness.ledger(done.id)
    assert {k: r.status for k, r in ledger.items()} == {
        "sub.owner": "skipped",
        "sub.set_priority": "succeeded",
        "sub.reassign": "skipped",
        "sub.note": "skipped",
        "sub": "succeeded",
    }
    assert done.output == {"sub": {"case_id": 54, "priority": "high", "owner_id": None}}
    assert harness.ticket(54)["priority"] == "high"


async def test_crash_mid_loop_then_resume_writes_each_comment_once(harness: Harness) -> None:
    """A worker dies in the middle of a for_each; another resumes it from the ledger."""
    harness.sandbox.control(latency_ms=300)
    eid = await harness.submit("note_each", {"case_ids": [51, 52, 53], "text": "crash loop"})
    [claimed] = await harness.store.claim("doomed-worker", 1, lease_seconds=1)
    dying = asyncio.create_task(harness.executor._interpreter.run(claimed, "doomed-worker"))
    for _ in range(400):
        ledger = await harness.ledger(eid)
        if ledger.get("loop[0].note") and ledger["loop[0].note"].status == "succeeded":
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the first round never finished")
    dying.cancel()  # the worker's process is gone: nothing after this line of its work happens
    with pytest.raises(asyncio.CancelledError):
        await dying
    recorded_before = await harness.ledger(eid)
    assert recorded_before["loop"].status == "running"
    assert recorded_before["loop"].request == {"items": [51, 52, 53]}
    harness.sandbox.control(latency_ms=0)

    await harness.run_due()

    done = await harness.store.get_execution(eid)
    assert done is not None
    assert done.status == "succeeded", done.error
    assert done.claims == 2
    ledger = await harness.ledger(eid)
    assert ledger["loop[0].note"].attempts == 1  # not sent again
    for index, case in enumerate([51, 52, 53]):
        assert [c for c in harness.comments(case) if c.startswith("crash loop")] == [
            f"crash loop #{index}"
        ]


async def test_replay_keeps_the_rounds_that_succeeded(harness: Harness) -> None:
    first = await harness.execute("note_each", {"case_ids": [55, 999999, 56], "text": "again"})
    assert first.status == "failed"
    assert first.error is not None
    assert first.error["step"] == "loop[1].note"
    assert first.error["type"] == "crm_error"

    replayed = await replay_execution(harness.store, "acme", first.id)
    await harness.run_due()
    second = await harness.store.get_execution(replayed.id)
    assert second is not None
    assert second.status == "failed"
    ledger = await harness.ledger(second.id)
    assert ledger["loop[0].note"].attempts == 1
    assert [c for c in harness.comments(55) if c.startswith("again")] == ["again #0"]
    assert [c for c in harness.comments(56) if c.startswith("again")] == []


async def test_the_execution_view_lists_nested_steps_after_their_parent(harness: Harness) -> None:
    done = await harness.execute(
        "triage_cases", {"cases": [{"case_id": 57, "priority": "P2"}], "reason": "view"}
    )
    assert done.status == "succeeded", done.error
    view = await execution_view(harness.store, done)
    assert [(s.id, s.type, s.status) for s in view.steps] == [
        ("each", "for_each", "succeeded"),
        ("each[0].escalate", "call_workflow", "succeeded"),
        ("each[0].escalate.owner", "lookup", "skipped"),
        ("each[0].escalate.set_priority", "update_record", "succeeded"),
        ("each[0].escalate.reassign", "assign", "skipped"),
        ("each[0].escalate.note", "add_comment", "succeeded"),
        ("each[0].triage", "switch", "succeeded"),
        ("each[0].triage.default.routine_note", "add_comment", "succeeded"),
    ]
