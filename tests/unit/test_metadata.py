"""Loading metadata: the examples are clean, and every kind of mistake is located precisely."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
import yaml

from uwf.connectors import builtin_connectors
from uwf.errors import MetadataError
from uwf.metadata import (
    MetadataBundle,
    Problem,
    load_directory,
    metadata_json_schema,
    validate_directory,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "metadata" / "acme"


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    """A private copy of examples/metadata to break."""
    target = tmp_path / "metadata"
    shutil.copytree(EXAMPLES, target)
    return target


def replace_once(file: Path, old: str, new: str) -> None:
    text = file.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is no longer in {file.name}; update the test"
    file.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(file: Path, text: str) -> int:
    """1-based number of the last line of `file` that contains `text`."""
    lines = file.read_text(encoding="utf-8").splitlines()
    numbers = [n for n, line in enumerate(lines, start=1) if text in line]
    assert numbers, f"{text!r} not in {file.name}"
    return numbers[-1]


def problems_of(directory: Path) -> list[Problem]:
    bundle, problems = validate_directory(directory)
    assert bundle is None, "broken metadata was accepted"
    assert problems
    return problems


# -- the examples ----------------------------------------------------------------------------


def test_examples_are_valid() -> None:
    bundle, problems = validate_directory(EXAMPLES)

    assert problems == []
    assert bundle is not None
    assert set(bundle.tenants) == {"acme"}
    assert set(bundle.connections) == {"acme-zendesk"}
    assert bundle.workflow_names("acme") == ["escalate_case", "triage_cases"]
    assert set(bundle.value_maps_for("acme")) == {"case_priority"}
    assert bundle.value_maps_for("someone-else") == {}


def test_load_directory_raises_listing_every_problem(metadata: Path) -> None:
    replace_once(metadata / "tenants.yaml", "display_name:", "colour: red\ndisplay_name:")
    replace_once(metadata / "acme-zendesk.yaml", "timeout_seconds: 20", "timeout_seconds: soon")

    with pytest.raises(MetadataError) as info:
        load_directory(metadata)

    assert len(info.value.problems) == 2
    assert "2 problem(s)" in info.value.message
    assert "tenants.yaml:" in info.value.message
    assert "acme-zendesk.yaml:" in info.value.message


# -- one mistake at a time -------------------------------------------------------------------


@dataclass(frozen=True)
class Breakage:
    file: str
    old: str
    new: str
    path: str
    message: str
    hint: str | None
    at: str  # text on the line the problem must point at


BREAKAGES = {
    "unknown-kind": Breakage(
        "tenants.yaml",
        "kind: tenant",
        "kind: tennant",
        "kind",
        "unknown kind 'tennant'",
        "expected one of 'tenant', 'connection', 'workflow', 'value_map'",
        "kind: tennant",
    ),
    "unknown-step-type": Breakage(
        "escalate_case.yaml",
        "type: lookup",
        "type: search",
        "steps[0].type",
        "unknown type 'search'",
        "'lookup', 'update_record', 'create_record', 'add_comment', 'assign'",
        "type: search",
    ),
    "unknown-field": Breakage(
        "tenants.yaml",
        "display_name:",
        "colour: red\ndisplay_name:",
        "colour",
        "unknown field",
        "fields: kind, name, display_name, description",
        "colour: red",
    ),
    "unknown-field-in-step": Breakage(
        "escalate_case.yaml",
        "    public: false",
        "    public: false\n    visible: true",
        "steps[3].visible",
        "unknown field",
        "fields: id, when, on_failure, connection, output, retry, timeout_seconds, type, object, "
        "record_id, body, public",
        "visible: true",
    ),
    "missing-field": Breakage(
        "acme-zendesk.yaml",
        "connector: zendesk\n",
        "",
        "connector",
        "required field is missing",
        "fields: kind, name, tenant, connector, base_url, auth",
        "kind: connection",
    ),
    "bad-value": Breakage(
        "acme-zendesk.yaml",
        "timeout_seconds: 20",
        "timeout_seconds: soon",
        "timeout_seconds",
        "valid number",
        None,
        "timeout_seconds: soon",
    ),
    "unknown-tenant": Breakage(
        "escalate_case.yaml",
        "tenant: acme",
        "tenant: acne",
        "tenant",
        "unknown tenant 'acne'",
        "known: acme",
        "tenant: acne",
    ),
    "unknown-connection": Breakage(
        "escalate_case.yaml",
        "connection: acme-zendesk",
        "connection: acme-hubspot",
        "connection",
        "unknown connection 'acme-hubspot' for tenant 'acme'",
        "known: acme-zendesk",
        "connection: acme-hubspot",
    ),
    "unknown-connector": Breakage(
        "acme-zendesk.yaml",
        "connector: zendesk",
        "connector: pipedrive",
        "connector",
        "unknown connector 'pipedrive'",
        "known: " + ", ".join(sorted(builtin_connectors())),
        "connector: pipedrive",
    ),
    "unsupported-auth": Breakage(
        "acme-zendesk.yaml",
        "type: api_token\n  email: admin@uwf-sandbox.test\n  token:",
        "type: basic\n  username: admin@uwf-sandbox.test\n  password:",
        "auth.type",
        "connector 'zendesk' does not support auth 'basic'",
        "known: api_token, bearer",
        "type: basic",
    ),
    "unknown-base-url-interpolation": Breakage(
        "acme-zendesk.yaml",
        'base_url: "${sandbox:zendesk}"',
        'base_url: "${vault:zendesk}"',
        "base_url",
        "unknown interpolation ${vault:…}",
        "known: ${sandbox:<crm>}, ${env:<NAME>}",
        "base_url:",
    ),
    "object-not-in-connector": Breakage(
        "escalate_case.yaml",
        "object: user",
        "object: agent",
        "steps[0].object",
        "connector 'zendesk' has no object 'agent'",
        "known: account, case, comment, contact, user",
        "object: agent",
    ),
    "operation-not-supported": Breakage(
        "escalate_case.yaml",
        "object: user",
        "object: case",
        "steps[0].type",
        "object 'case' of connector 'zendesk' does not support lookup",
        "known: add_comment, assign, create, get, update",
        "type: lookup",
    ),
    "refers-to-later-step": Breakage(
        "escalate_case.yaml",
        "priority: \"{{ value_map('case_priority', input.priority) }}\"",
        'priority: "{{ steps.note.id }}"',
        "steps[1].fields.priority",
        "`steps.note` does not name an earlier step",
        "earlier steps: owner",
        "steps.note.id",
    ),
    "refers-to-unknown-step": Breakage(
        "escalate_case.yaml",
        'owner_id: "{{ steps.owner.id }}"',
        'owner_id: "{{ steps.boss.id }}"',
        "steps[2].owner_id",
        "`steps.boss` does not name an earlier step",
        "earlier steps: owner, set_priority",
        "steps.boss.id",
    ),
    "refers-to-own-step-in-when": Breakage(
        "escalate_case.yaml",
        "when: input.reason",
        "when: steps.note.id",
        "steps[3].when",
        "`steps.note` does not name an earlier step",
        "earlier steps: owner, set_priority, reassign",
        "when: steps.note.id",
    ),
    "unknown-value-map": Breakage(
        "escalate_case.yaml",
        "value_map('case_priority'",
        "value_map('priority_map'",
        "steps[1].fields.priority",
        "unknown value map 'priority_map'",
        "known: case_priority",
        "priority_map",
    ),
    "bad-jmespath-in-when": Breakage(
        "escalate_case.yaml",
        "when: input.reason",
        "when: input.[reason",
        "steps[3].when",
        "invalid expression `input.[reason`",
        None,
        "when: input.[reason",
    ),
    "unknown-function-in-template": Breakage(
        "escalate_case.yaml",
        'body: "Escalated: {{ input.reason }}"',
        'body: "Escalated: {{ shout(input.reason) }}"',
        "steps[3].body",
        "unknown function shout() in `shout(input.reason)`",
        None,
        "shout(input.reason)",
    ),
    "invalid-json-schema": Breakage(
        "escalate_case.yaml",
        "minLength: 1",
        "minLength: -1",
        "input_schema.properties.case_id.minLength",
        "not a valid JSON Schema: -1 is less than the minimum of 0",
        None,
        "minLength: -1",
    ),
    "duplicate-step-id": Breakage(
        "escalate_case.yaml",
        "id: note",
        "id: set_priority",
        "steps[3].id",
        "duplicate step id 'set_priority'",
        None,
        "id: set_priority",
    ),
    "invalid-yaml": Breakage(
        "tenants.yaml",
        "display_name: Acme",
        "  display_name: Acme",
        "",
        "not valid YAML: mapping values are not allowed here",
        None,
        "display_name: Acme",
    ),
}


@pytest.mark.parametrize(
    "name",
    [name for name in BREAKAGES],
)
def test_each_problem_is_reported_with_file_line_path_and_hint(metadata: Path, name: str) -> None:
    case = BREAKAGES[name]
    file = metadata / case.file
    replace_once(file, case.old, case.new)

    problems = problems_of(metadata)

    matching = [p for p in problems if case.message in p.message]
    assert matching, f"no problem says {case.message!r}: {[str(p) for p in problems]}"
    problem = matching[0]
    assert (problem.file, problem.path, problem.line) == (
        case.file,
        case.path,
        line_of(file, case.at),
    )
    if case.hint is None:
        assert problem.hint is None
    else:
        assert problem.hint is not None
        assert case.hint in problem.hint


def test_an_unknown_step_type_lists_the_known_types(metadata: Path) -> None:
    replace_once(metadata / "escalate_case.yaml", "type: lookup", "type: search")

    [problem] = problems_of(metadata)

    assert problem.file == "escalate_case.yaml"
    assert problem.message == "unknown type 'search'"
    assert problem.hint == (
        "expected one of 'lookup', 'update_record', 'create_record', 'add_comment', 'assign', "
        "'switch', 'for_each', 'call_workflow'"
    )


def test_problem_prints_as_file_line_path_message_and_hint(metadata: Path) -> None:
    replace_once(metadata / "escalate_case.yaml", "object: user", "object: agent")

    [problem] = problems_of(metadata)

    assert str(problem) == (
        f"escalate_case.yaml:{line_of(metadata / 'escalate_case.yaml', 'object: agent')}: "
        "steps[0].object: connector 'zendesk' has no object 'agent' (hint: known: account, "
        "case, comment, contact, user)"
    )
    assert problem.as_dict()["hint"] == "known: account, case, comment, contact, user"


def test_a_problem_without_a_path_names_the_document(metadata: Path) -> None:
    (metadata / "tenants.yaml").write_text("# a tenant without its kind\nname: acme\n")

    [problem] = problems_of(metadata)

    assert str(problem).startswith("tenants.yaml:2: (document): missing `kind`")


def test_a_duplicate_workflow_is_reported_in_the_later_file(metadata: Path) -> None:
    shutil.copy(metadata / "escalate_case.yaml", metadata / "zz_copy.yaml")

    problems = problems_of(metadata)

    assert [(p.file, p.path, p.message) for p in problems] == [
        ("zz_copy.yaml", "name", "duplicate workflow 'escalate_case'")
    ]
    assert problems[0].line == line_of(metadata / "zz_copy.yaml", "name: escalate_case")


def test_a_duplicate_tenant_is_reported(metadata: Path) -> None:
    (metadata / "zz_more.yaml").write_text("kind: tenant\nname: acme\n", encoding="utf-8")

    problems = problems_of(metadata)

    assert [(p.file, p.line, p.path, p.message) for p in problems] == [
        ("zz_more.yaml", 2, "name", "duplicate tenant 'acme'")
    ]


def test_files_in_subdirectories_are_read_and_named_relative(metadata: Path) -> None:
    (metadata / "extra").mkdir()
    (metadata / "extra" / "beta.yml").write_text(
        "kind: tenant\nname: beta\nlogo: big\n", encoding="utf-8"
    )

    [problem] = problems_of(metadata)

    assert (problem.file, problem.line, problem.path) == (
        str(Path("extra") / "beta.yml"),
        3,
        "logo",
    )


def test_every_problem_is_reported_not_only_the_first(metadata: Path) -> None:
    replace_once(metadata / "escalate_case.yaml", "object: user", "object: agent")
    replace_once(metadata / "escalate_case.yaml", "minLength: 1", "minLength: -1")
    replace_once(metadata / "escalate_case.yaml", "id: note", "id: set_priority")

    problems = problems_of(metadata)

    assert sorted(p.path for p in problems) == [
        "input_schema.properties.case_id.minLength",
        "steps[0].object",
        "steps[3].id",
    ]


def test_an_unknown_workflow_connection_is_reported_once(metadata: Path) -> None:
    replace_once(metadata / "escalate_case.yaml", "connection: acme-zendesk", "connection: nope")

    problems = problems_of(metadata)

    assert len(problems) == 1


def test_a_yaml_error_in_one_file_does_not_hide_problems_in_another(metadata: Path) -> None:
    (metadata / "broken.yaml").write_text("kind: tenant\nname: beta\n\tdescription: x\n")
    replace_once(metadata / "acme-zendesk.yaml", "timeout_seconds: 20", "timeout_seconds: soon")

    problems = problems_of(metadata)

    assert [(p.file, p.line) for p in problems] == [
        ("acme-zendesk.yaml", line_of(metadata / "acme-zendesk.yaml", "timeout_seconds: soon")),
        ("broken.yaml", 3),
    ]
    assert problems[1].message.startswith("not valid YAML")


def test_yaml_error_says_what_is_wrong(metadata: Path) -> None:
    replace_once(metadata / "tenants.yaml", "display_name: Acme Corporation", "display_name: [Acme")

    [problem] = problems_of(metadata)

    assert "expected ',' or ']'" in problem.message


def test_an_empty_directory_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no metadata here", encoding="utf-8")

    bundle, problems = validate_directory(tmp_path)

    assert bundle is None
    assert [(p.file, p.message) for p in problems] == [
        (str(tmp_path), "no .yaml or .yml files found")
    ]


def test_a_missing_directory_is_a_problem(tmp_path: Path) -> None:
    bundle, problems = validate_directory(tmp_path / "nowhere")

    assert bundle is None
    assert [p.message for p in problems] == ["not a directory"]


def test_a_document_without_kind_lists_the_kinds(metadata: Path) -> None:
    (metadata / "nokind.yaml").write_text("name: beta\n", encoding="utf-8")

    [problem] = problems_of(metadata)

    assert (problem.file, problem.line, problem.message) == ("nokind.yaml", 1, "missing `kind`")
    assert problem.hint == "known: connection, connector, tenant, trigger, value_map, workflow"


# -- bugs in the load-time checks: mistakes that should be caught, and one that is not a mistake


def test_a_bad_step_output_expression_is_reported(metadata: Path) -> None:
    replace_once(
        metadata / "escalate_case.yaml",
        "    object: user\n",
        '    object: user\n    output:\n      owner_id: "id.["\n',
    )

    problems = problems_of(metadata)

    assert [p.path for p in problems] == ["steps[0].output.owner_id"]


def test_an_unknown_value_map_in_when_is_reported(metadata: Path) -> None:
    replace_once(
        metadata / "escalate_case.yaml",
        "when: input.reason",
        "when: value_map('nope', input.priority) == 'urgent'",
    )

    problems = problems_of(metadata)

    assert [(p.path, p.message) for p in problems] == [
        ("steps[3].when", "unknown value map 'nope'")
    ]


def test_an_input_field_called_steps_is_not_a_step_reference(metadata: Path) -> None:
    replace_once(
        metadata / "escalate_case.yaml",
        'body: "Escalated: {{ input.reason }}"',
        'body: "Escalated: {{ input.steps.reason }}"',
    )

    bundle, problems = validate_directory(metadata)

    assert problems == []
    assert bundle is not None


# -- bundles: digest, round trip, schema -----------------------------------------------------


def test_to_document_and_from_document_round_trip_keeps_the_digest() -> None:
    bundle = load_directory(EXAMPLES)

    document = json.loads(json.dumps(bundle.to_document()))
    again = MetadataBundle.from_document(document)

    assert again.digest == bundle.digest
    assert again.to_document() == bundle.to_document()
    assert again.workflow("acme", "escalate_case") == bundle.workflow("acme", "escalate_case")


def test_document_order_does_not_change_the_digest() -> None:
    bundle = load_directory(EXAMPLES)

    reordered = MetadataBundle(tuple(reversed(bundle.documents)))

    assert reordered.digest == bundle.digest


def test_file_layout_does_not_change_the_digest(tmp_path: Path) -> None:
    documents = [
        doc
        for file in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(file.read_text(encoding="utf-8"))
        if doc
    ]
    (tmp_path / "all.yaml").write_text(
        yaml.safe_dump_all(list(reversed(documents)), sort_keys=True), encoding="utf-8"
    )

    assert load_directory(tmp_path).digest == load_directory(EXAMPLES).digest


def test_a_content_change_changes_the_digest(metadata: Path) -> None:
    replace_once(metadata / "tenants.yaml", "the quickstart tenant", "the first tenant")

    assert load_directory(metadata).digest != load_directory(EXAMPLES).digest


def test_writing_a_default_value_explicitly_does_not_change_the_digest(metadata: Path) -> None:
    replace_once(metadata / "acme-zendesk.yaml", "timeout_seconds: 20", "timeout_seconds: 20.0")
    replace_once(
        metadata / "escalate_case.yaml",
        "    object: user\n",
        "    object: user\n    required: true\n",
    )

    assert load_directory(metadata).digest == load_directory(EXAMPLES).digest


def _example_documents() -> list[object]:
    return [
        pytest.param(doc, id=f"{file.name}:{doc['kind']}")
        for file in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(file.read_text(encoding="utf-8"))
        if doc
    ]


@pytest.fixture(scope="module")
def schema_validator() -> jsonschema.Draft202012Validator:
    schema = metadata_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("document", _example_documents())
def test_json_schema_accepts_every_example_document(
    schema_validator: jsonschema.Draft202012Validator, document: dict[str, object]
) -> None:
    assert [e.message for e in schema_validator.iter_errors(document)] == []


@pytest.mark.parametrize(
    "document",
    [
        {"kind": "tenants", "name": "acme"},
        {"kind": "tenant", "name": "acme", "colour": "red"},
        {"kind": "tenant", "name": "Acme Corp"},
        {"kind": "value_map", "name": "m", "values": {}, "on_unmapped": "ignore"},
    ],
)
def test_json_schema_rejects_what_the_loader_rejects(
    schema_validator: jsonschema.Draft202012Validator, document: dict[str, object]
) -> None:
    assert not schema_validator.is_valid(document)


def test_json_schema_is_titled_2020_12() -> None:
    schema = metadata_json_schema()

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "UWF metadata document"


# -- docs/metadata.md: its examples are real -------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metadata.md"


def _doc_yaml_documents() -> list[dict[str, object]]:
    text = DOCS.read_text(encoding="utf-8")
    blocks = [chunk.split("```", 1)[0] for chunk in text.split("```yaml\n")[1:]]
    found = []
    for block in blocks:
        lines = block.splitlines()
        indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
        document = yaml.safe_load("\n".join(line[indent:] for line in lines))
        if isinstance(document, dict) and "kind" in document:
            found.append(document)
    return found


def test_docs_metadata_examples_are_the_examples_and_valid(
    schema_validator: jsonschema.Draft202012Validator,
) -> None:
    examples = {
        (doc["kind"], doc["name"]): doc
        for file in EXAMPLES.glob("*.yaml")
        for doc in yaml.safe_load_all(file.read_text(encoding="utf-8"))
        if doc
    }
    documents = _doc_yaml_documents()

    shown = {(d["kind"], d["name"]) for d in documents}
    assert set(examples) <= shown, "docs/metadata.md should show every example document"
    for document in documents:
        assert schema_validator.is_valid(document), document
        key = (document["kind"], document["name"])
        if key in examples:
            assert document == examples[key], f"docs/metadata.md differs from the example {key}"
