"""Validation of workflow logic: every nested step, condition and template is checked with its
file, line and path; call cycles, loop bounds and step-key lengths are caught before apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ACME_EXAMPLES
from uwf.metadata import (
    MAX_STEP_KEY_LENGTH,
    ForEachStep,
    key_root,
    metadata_json_schema,
    step_at,
    validate_directory,
)

BAD = """kind: workflow
name: ping
tenant: acme
connection: acme-zendesk
input_schema: {type: object}
steps:
  - id: call_pong
    type: call_workflow
    workflow: pong
  - id: loop
    type: for_each
    items: "input.[x"
    as: input
    max_items: 100
    steps:
      - id: n
        type: add_comment
        object: case
        record_id: "{{ item }}"
        body: "{{ steps.later.id }}"
  - id: sw
    type: switch
    cases:
      - when: "nope(input)"
        steps:
          - id: n
            type: add_comment
            object: agent
            record_id: 1
            body: "{{ value_map('missing', 'x') }}"
  - id: ghost
    type: call_workflow
    workflow: nothere
on_failure:
  - id: tell
    type: add_comment
    object: case
    record_id: "{{ error.step }}"
    body: "{{ steps.nobody }}"
---
kind: workflow
name: pong
tenant: acme
connection: acme-zendesk
input_schema: {type: object}
steps:
  - id: back
    type: call_workflow
    workflow: ping
"""


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    directory = tmp_path / "metadata"
    shutil.copytree(ACME_EXAMPLES, directory)
    return directory


def test_every_nested_problem_is_reported_with_line_and_path(metadata: Path) -> None:
    (metadata / "bad.yaml").write_text(BAD)
    bundle, problems = validate_directory(metadata)
    assert bundle is None
    found = [(p.file, p.line, p.path, p.message.split(":")[0]) for p in problems]
    assert found == [
        ("bad.yaml", 7, "steps", "call_workflow cycle"),
        ("bad.yaml", 12, "steps[1].items", "invalid expression `input.[x`"),
        (
            "bad.yaml",
            13,
            "steps[1].as",
            "'input' is already a name in expressions here; choose another",
        ),
        ("bad.yaml", 20, "steps[1].steps[0].body", "`steps.later` does not name an earlier step"),
        (
            "bad.yaml",
            24,
            "steps[2].cases[0].when",
            "unknown function nope() in `nope(input)`; known",
        ),
        (
            "bad.yaml",
            28,
            "steps[2].cases[0].steps[0].object",
            "connector 'zendesk' has no object 'agent'",
        ),
        ("bad.yaml", 30, "steps[2].cases[0].steps[0].body", "unknown value map 'missing'"),
        ("bad.yaml", 33, "steps[3].workflow", "unknown workflow 'nothere' for tenant 'acme'"),
        ("bad.yaml", 39, "on_failure[0].body", "`steps.nobody` does not name an earlier step"),
        ("bad.yaml", 47, "steps", "call_workflow cycle"),
    ]
    messages = {p.path: p.message for p in problems}
    assert "call_workflow cycle: ping → pong → ping" in [p.message for p in problems]
    assert messages["steps[3].workflow"] == "unknown workflow 'nothere' for tenant 'acme'"


def test_a_loop_bound_over_the_hard_cap_is_refused(metadata: Path) -> None:
    (metadata / "bad.yaml").write_text(BAD.replace("max_items: 100", "max_items: 101"))
    _, problems = validate_directory(metadata)
    assert [(p.line, p.path, p.message) for p in problems] == [
        (14, "steps[1].max_items", "Input should be less than or equal to 100")
    ]


def test_step_keys_that_would_not_fit_the_ledger_are_refused(metadata: Path) -> None:
    long_id = "a" * 30
    text = f"""kind: workflow
name: deep
tenant: acme
connection: acme-zendesk
input_schema: {{type: object}}
steps:
  - id: {long_id}
    type: for_each
    items: input.xs
    max_items: 100
    steps:
      - id: {long_id}
        type: add_comment
        object: case
        record_id: "{{{{ item }}}}"
        body: hi
"""
    (metadata / "deep.yaml").write_text(text)
    _, problems = validate_directory(metadata)
    assert [(p.path, p.message) for p in problems] == [
        (
            "steps",
            f"the longest step key of this workflow (nested ids joined with '.', loop indexes "
            f"in []) has 65 characters; the limit is {MAX_STEP_KEY_LENGTH}",
        )
    ]


def test_sibling_cases_may_reuse_an_id_but_a_block_may_not_shadow(metadata: Path) -> None:
    text = """kind: workflow
name: shadow
tenant: acme
connection: acme-zendesk
input_schema: {type: object}
steps:
  - id: note
    type: add_comment
    object: case
    record_id: 1
    body: first
  - id: pick
    type: switch
    cases:
      - when: input.a
        steps:
          - {id: again, type: add_comment, object: case, record_id: 1, body: a}
      - when: input.b
        steps:
          - {id: again, type: add_comment, object: case, record_id: 1, body: b}
    default:
      - {id: note, type: add_comment, object: case, record_id: 1, body: c}
"""
    (metadata / "shadow.yaml").write_text(text)
    _, problems = validate_directory(metadata)
    assert [(p.path, p.message) for p in problems] == [
        ("steps[1].default[0].id", "duplicate step id 'note'")
    ]


def test_the_example_keys_resolve_to_their_steps() -> None:
    bundle, problems = validate_directory(ACME_EXAMPLES)
    assert problems == []
    assert bundle is not None
    workflow = bundle.workflow("acme", "triage_cases")
    assert workflow is not None
    cases = {
        "each": "for_each",
        "each[7].escalate": "call_workflow",
        "each[7].escalate.set_priority": "update_record",
        "each[0].triage": "switch",
        "each[0].triage.case0.page_lead": "add_comment",
        "each[19].triage.default.routine_note": "add_comment",
        "on_failure.report": "add_comment",
    }
    for key, kind in cases.items():
        assert step_at(bundle, workflow, key).type == kind, key
        assert key_root(key) == key.split(".")[0].split("[")[0]
    for missing in ("each.escalate", "each[0].triage.case1.page_lead", "nope", "each[0]"):
        assert step_at(bundle, workflow, missing) is None, missing
    assert isinstance(workflow.steps[0], ForEachStep)
    assert workflow.steps[0].as_ == "case"


def test_the_json_schema_knows_the_new_step_types() -> None:
    schema = json.dumps(metadata_json_schema())
    for name in ("SwitchStep", "ForEachStep", "CallWorkflowStep", "LocalValueMapSpec"):
        assert name in schema
    assert '"as"' in schema
    assert '"as_"' not in schema


STEP_COMPENSATION = """kind: workflow
name: comp
tenant: acme
connection: acme-zendesk
input_schema: {type: object}
steps:
  - id: assign
    type: assign
    object: case
    record_id: 1
    owner_id: 2
    on_failure:
      - id: explain
        type: add_comment
        object: case
        record_id: 1
        body: "{{ error.message }} {{ steps.nobody }}"
        on_failure:
          - {id: deeper, type: add_comment, object: case, record_id: 1, body: x}
on_failure:
  - id: report
    type: add_comment
    object: case
    record_id: 1
    body: report
    on_failure:
      - {id: again, type: add_comment, object: case, record_id: 1, body: y}
"""


def test_compensation_inside_compensation_is_refused_with_file_line_and_path(
    metadata: Path,
) -> None:
    (metadata / "comp.yaml").write_text(STEP_COMPENSATION)
    bundle, problems = validate_directory(metadata)
    assert bundle is None
    assert [(p.file, p.line, p.path, p.message) for p in problems] == [
        (
            "comp.yaml",
            17,
            "steps[0].on_failure[0].body",
            "`steps.nobody` does not name an earlier step",
        ),
        (
            "comp.yaml",
            19,
            "steps[0].on_failure[0].on_failure",
            "step 'explain' is a compensation step and cannot have its own on_failure",
        ),
        (
            "comp.yaml",
            27,
            "on_failure[0].on_failure",
            "step 'report' is a compensation step and cannot have its own on_failure",
        ),
    ]


def test_a_steps_compensation_keys_resolve_and_count_toward_the_key_limit(
    metadata: Path,
) -> None:
    text = STEP_COMPENSATION.split("        on_failure:")[0].replace(" {{ steps.nobody }}", "")
    (metadata / "comp.yaml").write_text(text)
    bundle, problems = validate_directory(metadata)
    assert problems == []
    assert bundle is not None
    workflow = bundle.workflow("acme", "comp")
    assert workflow is not None
    assert step_at(bundle, workflow, "assign.on_failure.explain").type == "add_comment"
    assert step_at(bundle, workflow, "assign.on_failure.nothere") is None
    assert key_root("assign.on_failure.explain") == "assign"
    too_long = text.replace("id: explain", "id: " + "e" * 48)
    (metadata / "comp.yaml").write_text(too_long)
    _, problems = validate_directory(metadata)
    assert [p.message.split(";")[0] for p in problems] == [
        "the longest step key of this workflow (nested ids joined with '.', loop indexes in "
        "[]) has 66 characters"
    ]
