"""Type coercion: what a field ends up holding, and what the error says when it cannot."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uwf.errors import ExpressionError
from uwf.mapping import COERCE_TYPES, coerce

PRIORITIES = ["P1", "P2", "P3", "P4"]


@pytest.mark.parametrize(
    ("value", "type_name", "expected"),
    [
        # string
        ("  as is  ", "string", "  as is  "),
        ("", "string", ""),
        (42, "string", "42"),
        (1.5, "string", "1.5"),
        (True, "string", "true"),
        (Decimal("0.10"), "string", "0.10"),
        # integer
        (42, "integer", 42),
        (42.0, "integer", 42),
        ("42", "integer", 42),
        (" +7 ", "integer", 7),
        ("-3", "integer", -3),
        ("42.0", "integer", 42),
        ("1e3", "integer", 1000),
        ("9223372036854775807", "integer", 2**63 - 1),
        ("-9223372036854775808", "integer", -(2**63)),
        # decimal
        ("1234.50", "decimal", Decimal("1234.50")),
        ("-0.5", "decimal", Decimal("-0.5")),
        (".5", "decimal", Decimal("0.5")),
        ("2.5e3", "decimal", Decimal("2.5e3")),
        (0.1, "decimal", Decimal("0.1")),
        (7, "decimal", Decimal(7)),
        (Decimal("9.99"), "decimal", Decimal("9.99")),
        # boolean
        (True, "boolean", True),
        ("true", "boolean", True),
        (" YES ", "boolean", True),
        ("On", "boolean", True),
        ("1", "boolean", True),
        (1, "boolean", True),
        ("False", "boolean", False),
        ("no", "boolean", False),
        ("OFF", "boolean", False),
        ("0", "boolean", False),
        (0.0, "boolean", False),
        # datetime
        ("2024-03-05T10:15:00+02:00", "datetime", "2024-03-05T10:15:00+02:00"),
        ("2024-03-05T10:15:00Z", "datetime", "2024-03-05T10:15:00Z"),
        ("2024-03-05T10:15:00", "datetime", "2024-03-05T10:15:00Z"),
        ("2024-03-05 10:15:00.250-05:00", "datetime", "2024-03-05T10:15:00.250-05:00"),
        ("2024-03-05", "datetime", "2024-03-05T00:00:00Z"),
        (1700000000, "datetime", "2023-11-14T22:13:20Z"),
        (1700000000123, "datetime", "2023-11-14T22:13:20.123Z"),
        # enum
        ("P2", "enum", "P2"),
        (" p3 ", "enum", "P3"),
        # no value
        (None, "string", None),
        (None, "integer", None),
        (None, "enum", None),
        ("   ", "integer", None),
        ("", "boolean", None),
        ("", "datetime", None),
    ],
)
def test_coerce_converts(value: Any, type_name: str, expected: Any) -> None:
    result = coerce(value, type_name, field="f", enum=PRIORITIES)

    assert result == expected
    assert type(result) is type(expected)


def test_decimal_keeps_its_scale() -> None:
    assert str(coerce("0.10", "decimal", field="amount")) == "0.10"


def test_enum_takes_integers_as_their_text() -> None:
    assert coerce(2, "enum", field="level", enum=["1", "2", "3"]) == "2"


@pytest.mark.parametrize(
    ("value", "type_name", "message"),
    [
        ({"a": 1}, "string", "field 'f': expected text, got an object {\"a\":1}"),
        ([1], "string", "field 'f': expected text, got an array [1]"),
        (float("nan"), "string", "field 'f': nan is not a finite number"),
        (42.5, "integer", "field 'f': 42.5 is not a whole number"),
        ("42.5", "integer", "field 'f': '42.5' is not a whole number"),
        ("4x", "integer", "field 'f': '4x' is not a number"),
        ("", "string", None),
        (True, "integer", "field 'f': true is a boolean, not a number"),
        ("9223372036854775808", "integer", "'9223372036854775808' is out of range for a 64-bit"),
        (1e300, "integer", "field 'f': 1e+300 is out of range for a 64-bit integer"),
        (
            "1,234.50",
            "decimal",
            "field 'f': '1,234.50' has thousands separators or a decimal comma, which are"
            " ambiguous; write a plain number with '.' for decimals, e.g. 1234.5",
        ),
        ("1.234,50", "decimal", "'1.234,50' has thousands separators or a decimal comma"),
        ("12,5", "decimal", "'12,5' has thousands separators or a decimal comma"),
        ("1 234", "decimal", "'1 234' has thousands separators"),
        ("$12", "decimal", "field 'f': '$12' is not a number"),
        ("NaN", "decimal", "field 'f': 'NaN' is not a number"),
        ("Infinity", "decimal", "field 'f': 'Infinity' is not a number"),
        (float("inf"), "decimal", "field 'f': inf is not a finite number"),
        ("1e5000", "decimal", "field 'f': '1e5000' is out of range"),
        ("1" * 101, "decimal", "is too long to be a number"),
        ("١٢", "decimal", "field 'f': '١٢' is not a number"),
        ({"n": 1}, "decimal", "field 'f': expected a number, got an object"),
        (
            "maybe",
            "boolean",
            "field 'f': 'maybe' is not a boolean; use true/false, yes/no, on/off or 1/0",
        ),
        (2, "boolean", "field 'f': 2 is not a boolean"),
        ([True], "boolean", "field 'f': [true] is not a boolean"),
        ("2024-13-05", "datetime", "field 'f': '2024-13-05' is not an ISO-8601 date or date-time"),
        ("05/03/2024", "datetime", "field 'f': '05/03/2024' is not an ISO-8601 date"),
        (True, "datetime", "field 'f': expected an ISO-8601 date-time or epoch number"),
        ("P9", "enum", "field 'f': 'P9' is not one of P1, P2, P3, P4"),
        (1.5, "enum", "field 'f': expected one of P1, P2, P3, P4, got a number"),
        ("x", "money", "field 'f': unknown type 'money'; known: string, integer, decimal,"),
    ],
)
def test_coerce_errors_name_the_field_and_value(
    value: Any, type_name: str, message: str | None
) -> None:
    if message is None:  # the one blank value that is a value
        assert coerce(value, type_name, field="f") == ""
        return
    with pytest.raises(ExpressionError) as info:
        coerce(value, type_name, field="f", enum=PRIORITIES)

    assert message in info.value.message
    assert info.value.context == {"field": "f"}


def test_enum_without_allowed_values_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="field 'status': type 'enum' needs the list"):
        coerce("open", "enum", field="status")


def test_ambiguous_case_insensitive_enum_match_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="'high' is not one of High, HIGH"):
        coerce("high", "enum", field="f", enum=["High", "HIGH"])


def test_long_enum_lists_are_shortened_in_messages() -> None:
    allowed = [f"v{i}" for i in range(30)]

    with pytest.raises(ExpressionError) as info:
        coerce("x", "enum", field="f", enum=allowed)

    assert info.value.message.endswith("v19, … (30 in all)")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
NUMBERISH = st.text(alphabet="0123456789+-.,eE _", max_size=30)
TYPE_NAMES = st.sampled_from([*COERCE_TYPES, "money", ""])


def _outcome(value: Any, type_name: str, enum: list[str] | None) -> tuple[str, Any]:
    try:
        return "ok", coerce(value, type_name, field="f", enum=enum)
    except ExpressionError as exc:
        return "error", exc.message


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(JSON, NUMBERISH, st.decimals()),
    type_name=TYPE_NAMES,
    enum=st.none() | st.lists(st.text(max_size=5), max_size=4),
)
def test_coerce_is_total_and_deterministic(
    value: Any, type_name: str, enum: list[str] | None
) -> None:
    first = _outcome(value, type_name, enum)  # anything but ExpressionError fails the test
    assert _outcome(value, type_name, enum) == first
    if first[0] == "error":
        assert first[1].startswith("field 'f': ")


@settings(max_examples=200, deadline=None)
@given(number=st.decimals(allow_nan=False, allow_infinity=False, places=4))
def test_decimal_text_round_trips(number: Decimal) -> None:
    assert coerce(str(number), "decimal", field="f") == number


@settings(max_examples=200, deadline=None)
@given(number=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integer_text_round_trips(number: int) -> None:
    assert coerce(str(number), "integer", field="f") == number
    assert coerce(number, "string", field="f") == str(number)
