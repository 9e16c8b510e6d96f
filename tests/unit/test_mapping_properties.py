"""Properties of mapping: total and deterministic, and no input can crash the evaluator or get
past its limits. Random JSON documents meet a corpus of expressions (project functions
included), random expression strings meet the compiler, and tight limits meet inputs built to
exceed them."""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uwf.connectors import FieldSpec
from uwf.errors import ExpressionError, UwfError
from uwf.mapping import (
    LIMITS,
    CompiledValue,
    Limits,
    ValueMap,
    compile_expression,
    compile_value,
    document_fits,
    frozen_now,
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["a", "b", "x", "id", "phone", "p"]), children, max_size=4
        )
    ),
    max_leaves=20,
)
MAPS = {
    "strict": ValueMap("strict", {"P1": "urgent", "1": "one", "true": "yes"}),
    "loose": ValueMap("loose", {"P1": "urgent"}, on_unmapped="passthrough"),
    "fallback": ValueMap("fallback", {"P1": "urgent"}, "normal", on_unmapped="default"),
}
# What metadata writes: paths, filters, projections, built-ins and every project function.
CORPUS = [
    "input",
    "input.a",
    "input.a.b || input.x",
    "input[*].a",
    "input.a[?b > `1`]",
    "input.* | [0]",
    "length(input)",
    "keys(input)",
    "to_string(input)",
    "to_number(input.a)",
    "sort_by(input, &a)",
    "max_by(input.a, &b)",
    "join(', ', input.a)",
    "merge(input, input.a)",
    "contains(input.a, 'x')",
    "lower(input.a)",
    "upper(trim(input.p))",
    "coalesce(input.a, input.b, 'none')",
    "merge_each(input.a, {b: input.b})",
    "e164(input.phone, 'US')",
    "e164(input.phone)",
    "iso_country(input.a)",
    "format_date(input.a)",
    "format_date(input.a, '%d/%m/%Y', 'Europe/Berlin')",
    "parse_date(input.a, '%d/%m/%Y')",
    "now()",
    "url_encode(input.a)",
    "soql_quote(input.a)",
    "odata_quote(input.a)",
    "snow_escape(input.a)",
    "value_map('strict', input.p)",
    "value_map('loose', input.a)",
    "value_map('fallback', input.x)",
    "value_map('missing', input.a)",
    "!(input.a) && input.b",
    "input.a == input.b",
    "sum(input.a)",
    "avg(input)",
    "abs(input.a)",
    "reverse(input.a)",
    "not_null(input.x, input.a)",
]
TEMPLATES = st.sampled_from(CORPUS).map(lambda source: f"{{{{ {source} }}}}") | st.sampled_from(
    [f"text {{{{ {source} }}}} more" for source in CORPUS]
)
FROZEN = datetime(2026, 11, 22, 10, 15, 30, tzinfo=UTC)


def _outcome(value: CompiledValue, document: Any) -> tuple[str, Any]:
    with frozen_now(FROZEN):
        try:
            return "ok", value.evaluate({"input": document}, MAPS)
        except ExpressionError as exc:
            return "error", exc.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(templates=st.dictionaries(st.sampled_from(["f", "g", "h"]), TEMPLATES), document=JSON)
def test_mapping_is_total_and_deterministic(templates: dict[str, str], document: Any) -> None:
    compiled = compile_value(templates)
    first = _outcome(compiled, document)  # any exception but ExpressionError fails here
    assert _outcome(compiled, document) == first
    if first[0] == "ok":
        assert set(first[1]) == set(templates)
        assert all(isinstance(v, str) for k, v in first[1].items() if "text " in templates[k])


_EXPRESSION_ALPHABET = string.ascii_letters[:8] + string.digits[:4] + "._*[]{}()|&!=<>?@,:'`\" -"


@settings(max_examples=400, deadline=None)
@given(
    source=st.text(alphabet=_EXPRESSION_ALPHABET, max_size=60)
    | st.sampled_from(CORPUS).flatmap(
        lambda s: st.integers(0, len(s)).map(lambda cut: s[:cut] + s[cut + 1 :])
    ),
    document=JSON,
)
def test_random_expressions_compile_or_fail_cleanly_and_never_crash(
    source: str, document: Any
) -> None:
    try:
        expression = compile_expression(source)
    except ExpressionError:
        return
    with contextlib.suppress(ExpressionError):
        expression.evaluate({"input": document}, MAPS)


@pytest.mark.parametrize("depth", [500, 5000])
def test_deeply_nested_expressions_are_errors_not_crashes(depth: int) -> None:
    source = "(" * depth + "input" + ")" * depth
    with pytest.raises(ExpressionError):
        compile_expression(source).evaluate({"input": 1})
    with pytest.raises(ExpressionError):
        compile_expression("!" * 1500 + "input").evaluate({"input": 1})


@settings(max_examples=200, deadline=None)
@given(value=JSON, policy=st.sampled_from(["error", "passthrough", "default"]))
def test_value_maps_are_total(value: Any, policy: Any) -> None:
    vmap = ValueMap("m", {"P1": "urgent", "1": "one"}, "normal", policy)
    result, error = _attempt(lambda: vmap.lookup(value))
    key = value if isinstance(value, str) else json.dumps(value)
    if key in ("P1", "1"):
        assert error is None
        assert result == {"P1": "urgent", "1": "one"}[key]
    elif policy == "error":
        assert error is not None
        assert error.message.startswith(f"value {value!r} is not in value map 'm' (known: 1, P1)")
    else:
        assert error is None
        assert result == (value if policy == "passthrough" else "normal")


def _attempt(func: Callable[[], Any]) -> tuple[Any, ExpressionError | None]:
    try:
        return func(), None
    except ExpressionError as exc:
        return None, exc


# -- limits -----------------------------------------------------------------------------------

TIGHT = Limits(
    max_document_nodes=500,
    max_depth=8,
    max_string_length=200,
    max_list_length=20,
    max_steps=2_000,
    max_seconds=5.0,
)
AMPLIFIERS = [
    "join('', [input.s, input.s, input.s, input.s, input.s])",
    "join('', input.l[*].s)",
    "[input.l, input.l, input.l][]",
    "input.l[*].[s, s, s, s][]",
    "input.l[*].{a: s, b: s, c: s}",
    "to_string(input)",
    "sort_by(input.l, &s)",
    "input",
]


def _within(value: Any, limits: Limits) -> bool:
    if isinstance(value, str):
        return len(value) <= limits.max_string_length
    if isinstance(value, list):
        return len(value) <= limits.max_list_length
    return True


@settings(max_examples=200, deadline=None)
@given(
    source=st.sampled_from(AMPLIFIERS + CORPUS),
    text=st.text(max_size=120),
    count=st.integers(0, 60),
    depth=st.integers(0, 12),
)
def test_no_input_gets_an_expression_past_its_limits(
    source: str, text: str, count: int, depth: int
) -> None:
    nested: Any = text
    for _ in range(depth):
        nested = [nested]
    document = {"s": text, "l": [{"s": text}] * count, "a": nested}
    expression = compile_expression(source)
    result, error = _attempt(lambda: expression.evaluate({"input": document}, MAPS, TIGHT))
    if error is None:
        assert _within(result, TIGHT)
    else:
        assert f"`{source}`" in error.message or error.message.startswith(
            ("e164", "iso_country", "format_date", "parse_date", "value ", "unknown value map")
        )


def test_a_string_over_the_limit_is_refused_before_it_is_built() -> None:
    document = {"input": {"s": "x" * 600_000}}
    with pytest.raises(ExpressionError) as info:
        compile_expression("join('', [input.s, input.s])").evaluate(document)
    assert info.value.message == (
        "expression `join('', [input.s, input.s])` would make a string of 1200000 characters; "
        "the limit is 1000000"
    )


def test_a_list_over_the_limit_is_refused() -> None:
    document = {"input": {"l": list(range(6_000))}}
    with pytest.raises(ExpressionError) as info:
        compile_expression("[input.l, input.l][]").evaluate(document)
    assert info.value.message == (
        "expression `[input.l, input.l][]` made a list of 12000 elements; the limit is 10000"
    )


def test_the_step_budget_stops_expensive_evaluations() -> None:
    document = {"input": {"l": [{"a": n} for n in range(500)]}}
    source = "input.l[*].[" + ", ".join(["a"] * 40) + "] | length(@)"
    budget = Limits(max_steps=10_000, max_seconds=60.0)
    assert compile_expression(source).evaluate(document) == 500  # fine within the defaults
    with pytest.raises(ExpressionError) as info:
        compile_expression(source).evaluate(document, limits=budget)
    assert info.value.message.endswith("took more than 10000 steps")


def test_documents_too_big_or_too_deep_are_refused() -> None:
    deep: Any = 1
    for _ in range(LIMITS.max_depth + 1):
        deep = {"a": deep}
    with pytest.raises(ExpressionError) as info:
        compile_expression("input").evaluate({"input": deep})
    assert info.value.message == (
        f"expression `input`: the document it reads is nested more than {LIMITS.max_depth} "
        "levels deep"
    )
    wide = {"input": [[1, 2, 3, 4]] * 50_000}
    with pytest.raises(ExpressionError) as info:
        compile_expression("length(input)").evaluate(wide)
    assert "has more than 200000 values" in info.value.message


def test_values_over_a_document_too_deep_still_name_field_and_expression() -> None:
    """A dict, list or template checks the document once for all its expressions; one that
    does not fit is still refused with the field and the expression named."""
    deep: Any = 1
    for _ in range(LIMITS.max_depth + 1):
        deep = {"a": deep}
    document = {"input": {"deep": deep, "id": 7}}
    compiled = compile_value({"id": "{{ input.id }}", "note": ["case {{ input.id }}: ok"]})
    with pytest.raises(UwfError) as info:
        compiled.evaluate(document, where="fields")
    assert info.value.message == (
        "fields.id: expression `input.id`: the document it reads is nested more than "
        f"{LIMITS.max_depth} levels deep"
    )
    assert document_fits({"input": {"id": 7}})
    assert not document_fits(document)
    fits = {"input": {"id": 7}}
    assert compiled.evaluate(fits) == {"id": 7, "note": ["case 7: ok"]}


def test_a_template_over_the_string_limit_names_the_field() -> None:
    compiled = compile_value({"body": "{{ input.s }}{{ input.s }}"})
    with pytest.raises(UwfError) as info:
        compiled.evaluate({"input": {"s": "y" * 600_000}}, where="fields")
    assert info.value.message == (
        "fields.body: template makes a string of 1200000 characters; the limit is 1000000"
    )


def test_ordinary_workloads_fit_the_default_limits() -> None:
    """A large but real CRM document: 2,000 records, a filter, a projection, a join."""
    records = [{"id": n, "email": f"u{n}@acme.test", "tags": ["a", "b"]} for n in range(2_000)]
    expression = compile_expression("join(',', input.records[?contains(tags, 'a')].email)")
    result = expression.evaluate({"input": {"records": records}})
    assert result.count(",") == 1_999


# -- typed reads never fail -----------------------------------------------------------------

CRM_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["true", "FALSE", "", " ", "42", "-0", "1e999", "2026-01-05 10:00:00"]),
    st.integers(min_value=0, max_value=10**20).map(str),
    st.datetimes().map(lambda d: d.isoformat(sep=" ")),
)


@given(
    st.sampled_from(["string", "integer", "decimal", "boolean", "datetime", None]),
    st.one_of(JSON, CRM_TEXT, st.floats()),
)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_typed_reads_never_raise_and_are_deterministic(type_name: str | None, native: Any) -> None:
    spec = FieldSpec.model_validate({"native": "x", "type": type_name})
    first = spec.to_canonical(native)
    assert json.dumps(first, default=str) == json.dumps(spec.to_canonical(native), default=str)
    if first is not native and first is not None:
        # A converted value is plain JSON (no Decimal, no datetime object).
        json.dumps(first, allow_nan=False)
