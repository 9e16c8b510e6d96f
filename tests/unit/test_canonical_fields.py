"""Canonical fields: typed writes with coercion, enums both ways, custom fields and overrides."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from uwf.connectors import FieldSpec, ObjectSpec, builtin_connectors
from uwf.errors import ExpressionError
from uwf.metadata import validate_directory

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "metadata" / "acme"
CANONICAL_PRIORITIES = ("low", "normal", "high", "urgent")
CANONICAL_STATUSES = ("new", "open", "pending", "on_hold", "solved", "closed")


def _case(connector: str) -> ObjectSpec:
    return builtin_connectors()[connector].objects["case"]


# -- the built-in specs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connector", "native"),
    [
        ("zendesk", {"priority": "urgent", "status": "hold"}),
        ("salesforce", {"Priority": "High", "Status": "Working"}),
        ("servicenow", {"priority": "1", "state": "3"}),
        ("hubspot", {"hs_ticket_priority": "URGENT", "hs_pipeline_stage": "2"}),
        ("dynamics", {"prioritycode": 1, "statuscode": 2}),
        ("freshdesk", {"priority": 4, "status": 3}),
    ],
)
def test_one_canonical_write_becomes_each_crms_own_values(
    connector: str, native: dict[str, Any]
) -> None:
    assert _case(connector).to_native({"priority": "urgent", "status": "on_hold"}) == native


@pytest.mark.parametrize("connector", sorted(builtin_connectors()))
def test_every_crm_knows_the_same_canonical_enums(connector: str) -> None:
    specs = _case(connector).field_specs
    assert tuple(specs["priority"].values or {}) == CANONICAL_PRIORITIES
    assert set(specs["status"].values or {}) == set(CANONICAL_STATUSES)


@pytest.mark.parametrize("connector", sorted(builtin_connectors()))
def test_every_native_value_written_reads_back_as_a_canonical_one(connector: str) -> None:
    for name in ("priority", "status"):
        spec = _case(connector).field_specs[name]
        for canonical, native in (spec.values or {}).items():
            back = spec.to_canonical(native)
            assert back in (spec.values or {})
            # Where two canonical values share a native one, reading is lossy but stable.
            assert spec.to_native(name, back) == native, (canonical, native, back)


@pytest.mark.parametrize("connector", sorted(builtin_connectors()))
def test_a_value_outside_the_enum_is_refused_naming_field_and_value(connector: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        _case(connector).to_native({"priority": "P7"})
    assert caught.value.message == "field 'priority': 'P7' is not one of low, normal, high, urgent"


def test_record_view_gives_the_canonical_value_and_the_native_one_beside_it() -> None:
    view = _case("servicenow").to_canonical(
        {"sys_id": "abc", "priority": "2", "state": "3", "impact": "1", "urgency": "2"}
    )
    assert (view["priority"], view["priority_native"]) == ("high", "2")
    assert (view["status"], view["status_native"]) == ("on_hold", "3")
    assert view["native"]["sys_id"] == "abc"


def test_an_unknown_native_value_reads_as_none_and_keeps_the_native_one() -> None:
    view = _case("salesforce").to_canonical({"Id": "500", "Priority": "Critical"})
    assert (view["priority"], view["priority_native"]) == (None, "Critical")


def test_native_values_from_older_value_maps_still_pass() -> None:
    # Tenants whose value maps give the CRM's own values keep working unchanged.
    assert _case("salesforce").to_native({"priority": "Medium"}) == {"Priority": "Medium"}
    assert _case("freshdesk").to_native({"priority": "3"}) == {"priority": 3}
    assert _case("dynamics").to_native({"priority": 2}) == {"prioritycode": 2}


def test_enum_matching_ignores_case_and_spaces() -> None:
    assert _case("zendesk").to_native({"priority": " High "}) == {"priority": "high"}


def test_untyped_and_unmapped_fields_pass_through() -> None:
    assert _case("zendesk").to_native({"owner_id": "7", "tags": ["a"]}) == {
        "assignee_id": "7",
        "tags": ["a"],
    }


# -- typed fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "value", "sent"),
    [
        ("boolean", "yes", True),
        ("boolean", " Off ", False),
        ("integer", "42", 42),
        ("decimal", "1234.50", 1234.5),
        ("decimal", "12.00", 12),
        ("datetime", "2024-03-05T10:15:00+02:00", "2024-03-05T10:15:00+02:00"),
        ("datetime", "2024-03-05", "2024-03-05T00:00:00Z"),
        ("string", 42, "42"),
    ],
)
def test_typed_fields_are_coerced_on_write(type_name: str, value: Any, sent: Any) -> None:
    spec = FieldSpec.model_validate({"native": "X__c", "type": type_name})
    result = spec.to_native("x", value)
    assert result == sent
    assert type(result) is type(sent)
    assert not isinstance(result, Decimal)  # JSON bodies cannot carry a Decimal


@pytest.mark.parametrize(
    ("type_name", "value", "message"),
    [
        ("boolean", "maybe", "field 'escalated': 'maybe' is not a boolean"),
        ("integer", "4x", "field 'escalated': '4x' is not a number"),
        ("decimal", "1,234.50", "field 'escalated': '1,234.50' has thousands separators"),
        ("datetime", "next tuesday", "field 'escalated': "),
    ],
)
def test_a_value_its_type_cannot_take_names_field_and_value(
    type_name: str, value: Any, message: str
) -> None:
    spec = FieldSpec.model_validate({"native": "SL_Escalated__c", "type": type_name})
    with pytest.raises(ExpressionError) as caught:
        spec.to_native("escalated", value)
    assert caught.value.message.startswith(message)
    assert repr(value) in caught.value.message or value in caught.value.message


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"native": "X", "type": "enum"}, "a field of type enum needs `values`"),
        ({"native": "X", "type": "boolean", "values": {"a": 1}}, "are for fields of type enum"),
        (
            {"native": "X", "type": "enum", "values": {"a": 1}, "read_values": {"2": "b"}},
            "read_values name b, which `values` does not allow",
        ),
        ({"native": "X", "type": "float"}, "Input should be"),
        ({"native": "has space"}, "String should match pattern"),
    ],
)
def test_bad_field_specs_are_refused(spec: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error.replace("`", ".").replace("(", ".")):
        FieldSpec.model_validate(spec)


# -- custom fields: where they live in the record ------------------------------------------


def test_zendesk_custom_field_ids_are_written_as_list_entries_and_read_back() -> None:
    case = _case("zendesk").with_fields(
        {
            "escalated": FieldSpec(native="custom_fields[360003]", type="boolean"),
            "order": FieldSpec(native="custom_fields[360001]"),
        },
        {},
    )
    sent = case.to_native({"escalated": "yes", "order": "ORD-1", "priority": "high"})
    assert sent == {
        "custom_fields": [{"id": 360003, "value": True}, {"id": 360001, "value": "ORD-1"}],
        "priority": "high",
    }
    view = case.to_canonical(
        {"id": 1, "custom_fields": [{"id": 360001, "value": "A"}, {"id": 360003, "value": True}]}
    )
    assert (view["escalated"], view["order"]) == (True, "A")


def test_nested_native_names_write_into_an_object() -> None:
    case = _case("freshdesk").with_fields(
        {"escalated": FieldSpec(native="custom_fields/cf_escalated", type="boolean")}, {}
    )
    assert case.to_native({"escalated": 1}) == {"custom_fields": {"cf_escalated": True}}
    assert case.to_canonical({"id": 1, "custom_fields": {"cf_escalated": True}})["escalated"]


def test_hubspot_custom_properties_are_read_from_properties() -> None:
    case = _case("hubspot").with_fields(
        {"escalated": FieldSpec(native="sl_escalated", type="boolean")}, {}
    )
    view = case.to_canonical({"id": "1", "properties": {"sl_escalated": "true"}})
    assert view["escalated"] is True
    assert view["native"]["properties"]["sl_escalated"] == "true"


def test_an_override_replaces_the_mapping_and_where_it_is_read() -> None:
    override = FieldSpec.model_validate(
        {
            "native": "SL_Severity__c",
            "type": "enum",
            "values": {"low": "Sev3", "normal": "Sev3", "high": "Sev2", "urgent": "Sev1"},
        }
    )
    case = _case("salesforce").with_fields({}, {"priority": override})
    assert case.to_native({"priority": "urgent"}) == {"SL_Severity__c": "Sev1"}
    view = case.to_canonical({"Id": "500", "Priority": "Low", "SL_Severity__c": "Sev2"})
    assert (view["priority"], view["priority_native"]) == ("high", "Sev2")
    # The built-in spec itself is unchanged.
    assert _case("salesforce").to_native({"priority": "urgent"}) == {"Priority": "High"}


# -- connection metadata --------------------------------------------------------------------


def _problems(tmp_path: Path, connection_extra: str) -> list[Any]:
    directory = tmp_path / "metadata"
    shutil.copytree(EXAMPLES, directory)
    conn = directory / "acme-zendesk.yaml"
    text = conn.read_text()
    assert "timeout_seconds: 20\n" in text
    conn.write_text(
        text.replace("timeout_seconds: 20\n", "timeout_seconds: 20\n" + connection_extra)
    )
    bundle, problems = validate_directory(directory)
    assert (bundle is None) == bool(problems)
    return problems


def test_connection_custom_fields_and_mappings_are_accepted(tmp_path: Path) -> None:
    extra = (
        "custom_fields:\n  case:\n    escalated: {native: 'custom_fields[360003]', type: boolean}\n"
        "field_mappings:\n  case:\n    priority:\n      native: priority\n      type: enum\n"
        "      values: {low: low, normal: normal, high: urgent, urgent: urgent}\n"
    )
    assert _problems(tmp_path, extra) == []


@pytest.mark.parametrize(
    ("extra", "path", "message", "line"),
    [
        (
            "custom_fields:\n  ticket:\n    escalated: {native: x}\n",
            "custom_fields.ticket",
            "connector 'zendesk' has no object 'ticket'",
            18,
        ),
        (
            "custom_fields:\n  case:\n    priority: {native: priority}\n",
            "custom_fields.case.priority",
            "'priority' is already a field of 'case' in connector 'zendesk'; change its mapping "
            "under field_mappings",
            18,
        ),
        (
            "field_mappings:\n  case:\n    escalated: {native: x}\n",
            "field_mappings.case.escalated",
            "'case' has no field 'escalated' in connector 'zendesk'; add a new one under "
            "custom_fields",
            18,
        ),
        (
            "custom_fields:\n  case:\n    level: {native: x, type: enum}\n",
            "custom_fields.case.level",
            "a field of type enum needs `values` (canonical → native)",
            18,
        ),
        (
            "custom_fields:\n  case:\n    level: {native: x, read: 'a[?'}\n",
            "custom_fields.case.level.read",
            "",
            18,
        ),
    ],
)
def test_bad_custom_fields_are_reported_with_file_line_and_path(
    tmp_path: Path, extra: str, path: str, message: str, line: int
) -> None:
    [problem] = _problems(tmp_path, extra)
    assert problem.file == "acme-zendesk.yaml"
    assert problem.path == path
    assert message in problem.message
    assert problem.line == line


# -- typed reads: what each CRM really sends ------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "native", "canonical"),
    [
        # HubSpot: every property is text.
        ("boolean", "true", True),
        ("boolean", "false", False),
        ("integer", "42", 42),
        ("decimal", "1234.50", 1234.5),
        ("decimal", "1000", 1000),
        ("datetime", "2026-01-05T10:00:00Z", "2026-01-05T10:00:00Z"),
        ("datetime", "2026-01-05T10:00:00.883Z", "2026-01-05T10:00:00.883Z"),
        ("datetime", "1767607200000", "2026-01-05T10:00:00Z"),  # epoch milliseconds
        ("datetime", "2026-01-05", "2026-01-05T00:00:00Z"),  # HubSpot `date` properties
        # ServiceNow Table API: text, date-times in UTC with a space.
        ("boolean", "1", True),
        ("integer", "0", 0),
        ("datetime", "2026-01-05 10:00:00", "2026-01-05T10:00:00Z"),
        # Salesforce: JSON types, offsets without a colon.
        ("datetime", "2026-01-05T10:00:00.000+0000", "2026-01-05T10:00:00Z"),
        ("datetime", "2026-01-05T12:00:00.000+0200", "2026-01-05T12:00:00+02:00"),
        ("boolean", False, False),
        ("decimal", 99.95, 99.95),
        # Dynamics: JSON types already; they pass unchanged.
        ("integer", 7, 7),
        ("boolean", True, True),
        ("datetime", "2026-01-05T10:00:00+01:00", "2026-01-05T10:00:00+01:00"),
        # Zendesk custom fields: checkbox booleans, numeric fields as text.
        ("integer", "3", 3),
        ("decimal", "0.10", 0.1),
    ],
)
def test_typed_fields_read_back_as_json_of_their_type(
    type_name: str, native: Any, canonical: Any
) -> None:
    back = FieldSpec.model_validate({"native": "x", "type": type_name}).to_canonical(native)
    assert back == canonical
    assert type(back) is type(canonical)


@pytest.mark.parametrize(
    ("type_name", "native"),
    [
        ("boolean", "maybe"),
        ("integer", "4x"),
        ("integer", "42.5"),
        ("decimal", "1,234.50"),
        ("datetime", "next Tuesday"),
        ("datetime", "05/01/2026"),
        ("datetime", "²"),  # a digit to str.isdigit(), not a number
        ("integer", {"value": 1}),
        ("boolean", ["true"]),
    ],
)
def test_a_read_value_that_does_not_convert_is_kept_as_the_crm_sent_it(
    type_name: str, native: Any
) -> None:
    spec = FieldSpec.model_validate({"native": "x", "type": type_name})
    assert spec.to_canonical(native) == native


def test_the_same_bad_value_still_fails_a_write_naming_field_and_value() -> None:
    spec = FieldSpec.model_validate({"native": "x", "type": "integer"})
    assert spec.to_canonical("4x") == "4x"
    with pytest.raises(ExpressionError, match="field 'count': '4x' is not a number"):
        spec.to_native("count", "4x")


def test_a_servicenow_record_reads_custom_columns_typed() -> None:
    case = _case("servicenow").with_fields(
        {
            "escalated": FieldSpec(native="u_escalated", type="boolean"),
            "reopen_count": FieldSpec(native="reopen_count", type="integer"),
            "resolved_at": FieldSpec(native="resolved_at", type="datetime"),
            "cost": FieldSpec(native="u_cost", type="decimal"),
        },
        {},
    )
    record = {
        "sys_id": "46d44a5d",
        "number": "INC0010001",
        "priority": "2",
        "state": "2",
        "u_escalated": "false",
        "reopen_count": "1",
        "resolved_at": "",
        "u_cost": "n/a",
    }
    view = case.to_canonical(record)
    assert view["escalated"] is False
    assert view["reopen_count"] == 1
    assert view["resolved_at"] is None  # ServiceNow's empty text is no value
    assert view["cost"] == "n/a"
    assert (view["priority"], view["priority_native"]) == ("high", "2")
    assert view["native"] == record
