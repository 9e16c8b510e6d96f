"""`kind: trigger` documents: loaded, checked against the rest of the metadata, exported."""

from __future__ import annotations

import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.unit.test_metadata import EXAMPLES, line_of, problems_of, replace_once
from uwf.metadata import TriggerSpec, metadata_json_schema, validate_directory

TRIGGER = "vip_webhook.yaml"


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    target = tmp_path / "metadata"
    shutil.copytree(EXAMPLES, target)
    return target


def test_the_example_trigger_binds_acme_zendesk_to_escalate_case() -> None:
    bundle, problems = validate_directory(EXAMPLES)
    assert problems == []
    assert bundle is not None
    [trigger] = bundle.triggers_for("acme", "acme-zendesk")
    assert (trigger.name, trigger.scheme, trigger.workflow) == (
        "vip_escalation",
        "zendesk",
        "escalate_case",
    )
    assert bundle.triggers_for("acme", "other") == []
    # A stored version keeps its triggers.
    assert bundle.from_document(bundle.to_document()).digest == bundle.digest


@pytest.mark.parametrize(
    ("old", "new", "path", "message", "hint"),
    [
        (
            "workflow: escalate_case",
            "workflow: escalate",
            "workflow",
            "unknown workflow 'escalate' for tenant 'acme'",
            "known: escalate_case, triage_cases",
        ),
        (
            "connection: acme-zendesk",
            "connection: acme-zen",
            "connection",
            "unknown connection 'acme-zen' for tenant 'acme'",
            "known: acme-zendesk",
        ),
        (
            "tenant: acme",
            "tenant: acne",
            "tenant",
            "unknown tenant 'acne'",
            "known: acme",
        ),
        (
            "  priority: P1",
            "  priority: \"{{ value_map('prio', event.x) }}\"",
            "input.priority",
            "unknown value map 'prio'",
            "known: case_priority",
        ),
    ],
)
def test_each_trigger_problem_has_file_line_path_and_hint(
    metadata: Path, old: str, new: str, path: str, message: str, hint: str
) -> None:
    replace_once(metadata / TRIGGER, old, new)

    problems = [p for p in problems_of(metadata) if p.file == TRIGGER]

    assert [(p.path, p.message, p.hint) for p in problems] == [(path, message, hint)]
    assert problems[0].line == line_of(metadata / TRIGGER, new.strip())


def test_a_bad_event_condition_is_reported(metadata: Path) -> None:
    replace_once(metadata / TRIGGER, 'event: "event.type ==', 'event: "event.type ===')

    [problem] = problems_of(metadata)

    assert (problem.file, problem.path) == (TRIGGER, "event")
    assert problem.message.startswith("invalid expression")


def test_an_unknown_scheme_lists_the_schemes(metadata: Path) -> None:
    replace_once(metadata / TRIGGER, "scheme: zendesk", "scheme: zendesk_v2")

    [problem] = problems_of(metadata)

    assert (problem.path, problem.line) == ("scheme", line_of(metadata / TRIGGER, "zendesk_v2"))
    assert "hubspot_v3" in problem.message
    assert "salesforce_outbound" in problem.message


def test_salesforce_triggers_need_the_organization_id(metadata: Path) -> None:
    replace_once(metadata / TRIGGER, "scheme: zendesk", "scheme: salesforce_outbound")

    [problem] = problems_of(metadata)

    assert problem.file == TRIGGER
    assert "organization_id" in problem.message


def test_triggers_of_one_endpoint_must_verify_alike(metadata: Path) -> None:
    text = (metadata / TRIGGER).read_text()
    second = text.replace("name: vip_escalation", "name: vip_second").replace(
        "scheme: zendesk", "scheme: hmac"
    )
    (metadata / "second.yaml").write_text(second)

    [problem] = problems_of(metadata)

    assert (problem.file, problem.path) == ("second.yaml", "scheme")
    assert "differs from trigger 'vip_escalation'" in problem.message


def test_json_schema_describes_triggers() -> None:
    schema = metadata_json_schema()
    document = yaml.safe_load((EXAMPLES / TRIGGER).read_text())
    jsonschema.validate(document, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "scheme": "carrier_pigeon"}, schema)
    assert TriggerSpec.model_validate(document).secret.env == "ACME_ZENDESK_WEBHOOK_SECRET"
