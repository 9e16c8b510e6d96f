"""Expressions, templates and value maps: what a metadata author gets back from `{{ … }}`."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uwf.errors import ExpressionError
from uwf.mapping import (
    MAX_EXPRESSION_LENGTH,
    ValueMap,
    compile_expression,
    compile_value,
    is_truthy,
    referenced_value_maps,
)

CONTEXT: dict[str, Any] = {
    "input": {
        "case_id": 123,
        "priority": "P2",
        "reason": "customer is angry",
        "silent": False,
        "ratio": 1.5,
        "tags": ["vip", "billing"],
        "owner": {"name": "Ada", "ids": [7, 3]},
        "shout": "  Hello World  ",
        "empty": "",
    },
    "steps": {"owner": {"id": 42, "email": "ada@example.com"}},
}

PRIORITY = ValueMap("zendesk_priority", {"P1": "urgent", "P2": "high", "P3": "normal"})


# -- literal, single expression, template --------------------------------------------------


@pytest.mark.parametrize(
    ("source", "kind", "expected"),
    [
        pytest.param("plain text", "literal", "plain text", id="string-without-braces"),
        pytest.param("a }} b", "literal", "a }} b", id="closing-braces-alone"),
        pytest.param(42, "literal", 42, id="int"),
        pytest.param(True, "literal", True, id="bool"),
        pytest.param(None, "literal", None, id="null"),
        pytest.param("{{ input.case_id }}", "expression", 123, id="int-stays-int"),
        pytest.param("{{input.case_id}}", "expression", 123, id="no-spaces"),
        pytest.param("{{ input.ratio }}", "expression", 1.5, id="float-stays-float"),
        pytest.param("{{ input.silent }}", "expression", False, id="bool-stays-bool"),
        pytest.param("{{ input.tags }}", "expression", ["vip", "billing"], id="list-stays-list"),
        pytest.param("{{ input.missing }}", "expression", None, id="missing-stays-null"),
        pytest.param("{{ steps.owner.id }}", "expression", 42, id="step-output"),
        pytest.param("Case {{ input.case_id }}", "template", "Case 123", id="int-as-text"),
        pytest.param("Escalated: {{ input.missing }}", "template", "Escalated: ", id="null-empty"),
        pytest.param("{{ input.silent }}!", "template", "false!", id="bool-as-json-text"),
        pytest.param("r={{ input.ratio }}", "template", "r=1.5", id="float-as-text"),
        pytest.param(
            "{{ input.case_id }}-{{ input.priority }}",
            "template",
            "123-P2",
            id="two-expressions",
        ),
        pytest.param(
            "{{ input.priority }}{{ input.case_id }}",
            "template",
            "P2123",
            id="adjacent-expressions-are-text",
        ),
        pytest.param(
            "owner: {{ input.owner }}",
            "template",
            'owner: {"ids":[7,3],"name":"Ada"}',
            id="object-as-compact-sorted-json",
        ),
        pytest.param(
            "tags={{ input.tags }}", "template", 'tags=["vip","billing"]', id="list-as-json"
        ),
    ],
)
def test_compile_value_keeps_types_for_one_expression_and_interpolates_text(
    source: Any, kind: str, expected: Any
) -> None:
    compiled = compile_value(source)

    assert compiled.kind == kind
    result = compiled.evaluate(CONTEXT)
    assert result == expected
    assert type(result) is type(expected)


def test_nested_dicts_and_lists_are_compiled_member_by_member() -> None:
    compiled = compile_value(
        {
            "ticket": {
                "id": "{{ input.case_id }}",
                "subject": "Case {{ input.case_id }} ({{ input.priority }})",
                "tags": ["escalated", "{{ input.tags[0] }}", 7],
                "assignee": "{{ steps.owner.id }}",
                "missing": "{{ input.nothing }}",
            },
            "public": False,
        }
    )

    assert compiled.evaluate(CONTEXT) == {
        "ticket": {
            "id": 123,
            "subject": "Case 123 (P2)",
            "tags": ["escalated", "vip", 7],
            "assignee": 42,
            "missing": None,
        },
        "public": False,
    }
    assert sorted(e.source for e in compiled.expressions()) == [
        "input.case_id",
        "input.case_id",
        "input.nothing",
        "input.priority",
        "input.tags[0]",
        "steps.owner.id",
    ]


def test_a_compiled_value_can_be_evaluated_against_many_contexts() -> None:
    compiled = compile_value("Case {{ input.case_id }}")

    assert compiled.evaluate({"input": {"case_id": 1}}) == "Case 1"
    assert compiled.evaluate({"input": {"case_id": 2}}) == "Case 2"


# -- project functions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("lower(input.priority)", "p2"),
        ("upper(input.owner.name)", "ADA"),
        ("trim(input.shout)", "Hello World"),
        ("lower(input.missing)", None),
        ("upper(input.missing)", None),
        ("trim(input.missing)", None),
        ("coalesce(input.missing, input.empty, input.reason)", "customer is angry"),
        ("coalesce(input.missing, input.case_id, input.reason)", 123),
        ("coalesce(input.silent, input.reason)", False),
        ("coalesce(input.missing, input.empty)", None),
        ("coalesce(input.missing, 'fallback')", "fallback"),
        ("lower(coalesce(input.missing, input.priority))", "p2"),
        (
            "merge_each([input.owner, {name: 'Bo'}], {case: input.case_id})",
            [{"ids": [7, 3], "name": "Ada", "case": 123}, {"name": "Bo", "case": 123}],
        ),
        ("merge_each(input.tags, {case: input.case_id})", ["vip", "billing"]),
        ("merge_each(input.owner.ids[?@ > `10`], {case: input.case_id})", []),
        ("length(input.tags)", 2),
        ("input.priority == 'P2' && !(input.silent)", True),
    ],
)
def test_project_functions(expression: str, expected: Any) -> None:
    assert compile_expression(expression).evaluate(CONTEXT) == expected


def test_negation_binds_tighter_than_the_dot_so_conditions_need_parentheses() -> None:
    # JMESPath reads `!input.silent` as `(!input).silent`, which is always null: a `when` written
    # that way never runs its step. docs/metadata.md tells authors to write `!(input.silent)`.
    assert compile_expression("!input.silent").evaluate(CONTEXT) is None
    assert compile_expression("!(input.silent)").evaluate(CONTEXT) is True


def test_a_function_given_the_wrong_type_fails_with_an_expression_error_naming_it() -> None:
    expression = compile_expression("lower(input.case_id)")

    with pytest.raises(ExpressionError, match=r"`lower\(input\.case_id\)` failed") as info:
        expression.evaluate(CONTEXT)
    assert "string" in info.value.message


def test_builtin_function_type_errors_become_expression_errors() -> None:
    # jmespath's contains() raises a plain TypeError for ('abc', 1); it must not escape.
    expression = compile_expression("contains(input.reason, input.case_id)")

    with pytest.raises(ExpressionError, match="contains"):
        expression.evaluate(CONTEXT)


# -- value maps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "value", "expected"),
    [
        ("error", "P1", "urgent"),
        ("passthrough", "P1", "urgent"),
        ("default", "P1", "urgent"),
        ("passthrough", "P9", "P9"),
        ("passthrough", 9, 9),
        ("default", "P9", "normal"),
        ("default", None, "normal"),
    ],
)
def test_value_map_policies(policy: Any, value: Any, expected: Any) -> None:
    vmap = ValueMap("prio", {"P1": "urgent", "P2": "high"}, default="normal", on_unmapped=policy)

    assert vmap.lookup(value) == expected


def test_an_unmapped_value_names_the_map_the_value_and_the_known_keys() -> None:
    with pytest.raises(ExpressionError) as info:
        PRIORITY.lookup("P9")

    assert info.value.message == (
        "value 'P9' is not in value map 'zendesk_priority' (known: P1, P2, P3)"
    )
    assert info.value.context == {"value_map": "zendesk_priority"}


def test_an_empty_value_map_says_it_knows_none() -> None:
    with pytest.raises(ExpressionError, match=r"\(known: none\)"):
        ValueMap("empty", {}).lookup("x")


def test_value_map_keys_match_non_string_values_by_their_json_text() -> None:
    vmap = ValueMap("codes", {"1": "one", "true": "yes", "null": "nothing"})

    assert [vmap.lookup(1), vmap.lookup(True), vmap.lookup(None)] == ["one", "yes", "nothing"]
    with pytest.raises(ExpressionError, match="value 2 is not in value map 'codes'"):
        vmap.lookup(2)


def test_value_map_in_an_expression_uses_the_maps_given_at_evaluation() -> None:
    compiled = compile_value("{{ value_map('zendesk_priority', input.priority) }}")

    assert compiled.evaluate(CONTEXT, {"zendesk_priority": PRIORITY}) == "high"
    with pytest.raises(ExpressionError, match="value 'P4' is not in value map 'zendesk_priority'"):
        compiled.evaluate({"input": {"priority": "P4"}}, {"zendesk_priority": PRIORITY})


def test_value_map_that_does_not_exist_lists_the_known_maps() -> None:
    compiled = compile_value("{{ value_map('priorities', input.priority) }}")

    with pytest.raises(ExpressionError) as info:
        compiled.evaluate(CONTEXT, {"zendesk_priority": PRIORITY})
    assert info.value.message == "unknown value map 'priorities' (known: zendesk_priority)"


def test_referenced_value_maps_finds_literal_names_in_nested_values() -> None:
    compiled = compile_value(
        {
            "priority": "{{ value_map('zendesk_priority', input.priority) }}",
            "tags": ["x", "status: {{ value_map( 'zendesk_status' , input.status) }}"],
            "text": "value_map('not_an_expression', x)",
            "other": "{{ input.priority }}",
        }
    )

    assert referenced_value_maps(compiled) == {"zendesk_priority", "zendesk_status"}
    assert referenced_value_maps(compile_value("{{ input.priority }}")) == set()


# -- compile errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(
            "{{ escalate(input.case_id) }}",
            "unknown function escalate() in `escalate(input.case_id)`; known: abs,",
            id="unknown-function",
        ),
        pytest.param(
            "Case {{ input.[case_id }}",
            "invalid expression `input.[case_id`",
            id="syntax-error-in-template",
        ),
        pytest.param(
            "{{ input.case_id == }}",
            "invalid expression `input.case_id ==`",
            id="syntax-error-alone",
        ),
        pytest.param("{{ }}", "empty expression", id="empty"),
        pytest.param(
            "Case {{ input.case_id }} and {{ input.reason",
            "unclosed '{{' in template 'Case {{ input.case_id }} and {{ input.reason'",
            id="unclosed",
        ),
        pytest.param(
            {"a": ["ok", "{{ nope(x) }}"]}, "unknown function nope()", id="nested-unknown-function"
        ),
    ],
)
def test_compile_errors_quote_the_expression(source: Any, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_value(source)

    assert message in info.value.message


def test_unknown_function_error_lists_the_project_functions() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("phone_fmt(input.phone)")

    known = info.value.message.split("known: ", 1)[1].split(", ")
    assert {"coalesce", "lower", "trim", "upper", "value_map", "length"} <= set(known)


def test_function_names_inside_string_literals_are_not_calls() -> None:
    compiled = compile_value("{{ join(' ', ['call me(', input.priority]) }}")

    assert compiled.evaluate(CONTEXT) == "call me( P2"


def test_unknown_function_error_names_the_function_as_written() -> None:
    with pytest.raises(ExpressionError, match=r"unknown function Lower\(\)"):
        compile_expression("Lower(input.priority)")


def test_expression_length_limit() -> None:
    at_limit = "a" * MAX_EXPRESSION_LENGTH
    assert compile_expression(at_limit).evaluate({"a" * MAX_EXPRESSION_LENGTH: 1}) == 1

    with pytest.raises(ExpressionError) as info:
        compile_value("{{ " + "a" * (MAX_EXPRESSION_LENGTH + 1) + " }}")
    assert info.value.message == (
        f"expression is {MAX_EXPRESSION_LENGTH + 1} characters long; "
        f"the limit is {MAX_EXPRESSION_LENGTH}"
    )


# -- truthiness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (True, True),
        (0, True),
        (0.0, True),
        ("0", True),
        ("false", True),
        (" ", True),
        ([None], True),
        ({"a": None}, True),
    ],
)
def test_is_truthy_follows_jmespath(value: Any, expected: bool) -> None:
    assert is_truthy(value) is expected


# -- property: evaluation is total (only ExpressionError) and deterministic -----------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "id", "case_id"]), children, max_size=4)
    ),
    max_leaves=12,
)
_CONTEXTS = st.fixed_dictionaries(
    {"a": _JSON, "b": _JSON},
    optional={"input": _JSON, "steps": st.dictionaries(st.just("owner"), _JSON)},
)
_TEMPLATES = [
    compile_value(source)
    for source in (
        "{{ a }}",
        "{{ input.case_id }}",
        "Case {{ input.case_id }}: {{ input.reason }} / {{ a }}",
        "{{ lower(a) }}",
        "{{ upper(b) }} {{ trim(a) }}",
        "{{ coalesce(a, b, 'none') }}",
        "{{ value_map('strict', a) }}",
        "{{ value_map('loose', b) }}",
        "{{ value_map('absent', b) }}",
        "{{ length(a) }}",
        "{{ a[0] }}.{{ a.b.c }}",
        "{{ sort(a) }}",
        "{{ max(a) }}",
        "{{ join(', ', a) }}",
        "{{ keys(a) }}",
        "{{ to_number(a) }}",
        "{{ a == b && !input.silent }}",
        "{{ a[?b] }}",
        "{{ contains(a, b) }}",
        "{{ starts_with(a, b) }}",
        "{{ steps.owner.id || input.owner_email }}",
        {"ticket": {"id": "{{ input.case_id }}", "tags": ["{{ a }}", "x {{ b }}"]}},
    )
]
_MAPS = {
    "strict": ValueMap("strict", {"x": 1, "1": "one"}),
    "loose": ValueMap("loose", {"y": 2}, on_unmapped="passthrough"),
}


def _outcome(compiled: Any, context: Any) -> tuple[str, Any]:
    try:
        return "value", compiled.evaluate(context, _MAPS)
    except ExpressionError as exc:
        return "error", exc.message


@settings(max_examples=150, deadline=None)
@given(context=_CONTEXTS)
def test_evaluation_only_raises_expression_error_and_is_deterministic(
    context: dict[str, Any],
) -> None:
    for compiled in _TEMPLATES:
        first = _outcome(compiled, context)
        again = _outcome(compiled, copy.deepcopy(context))
        assert first == again
        if first[0] == "value" and compiled.kind == "template":
            assert isinstance(first[1], str)
