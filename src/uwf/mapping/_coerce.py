"""Type coercion for mapped values, with errors that name the field and the value.

`coerce(value, type_name, field=…, enum=…)` turns what a caller or a CRM sent into the type a
field of the canonical model declares:

* `string`: text as is; numbers and booleans written out (`42`, `1.5`, `true`) → `str`.
* `integer`: whole numbers, `42.0`, text such as `" 42 "`, `"+7"`, `"42.0"`, `"1e3"` → `int`
  in the signed 64-bit range. `42.5` and `"4x"` are errors.
* `decimal`: numbers and plain decimal text (`"1234.50"`, `"-0.5"`, `"2.5e3"`) →
  `decimal.Decimal`.
* `boolean`: `true`/`false`, the numbers `0`/`1` and the text `true false yes no on off 1 0`
  (any case, spaces ignored) → `bool`.
* `datetime`: ISO-8601 text or Unix time, read as `format_date` reads them (no offset means
  UTC) → ISO-8601 `str` keeping the value's offset, UTC written `Z`
  (`2024-03-05T10:15:00+02:00`, `2024-03-05T00:00:00Z`).
* `enum`: one of `enum`, matched exactly, or else ignoring case and surrounding spaces when
  that names exactly one allowed value → the allowed spelling (`" p1 "` → `"P1"`).

`decimal` gives a `Decimal`, not a float, so `0.10` stays exactly `0.10` (scale kept); write
it out with `str()`. Text with thousands separators or a decimal comma (`"1,234.50"`,
`"1.234,50"`, `"1 234"`) is rejected rather than guessed: `1,234` means 1234 in the US and
1.234 in Germany.

`null` is no value for every type and gives `None`; so does blank text for every type but
`string`. Required fields are the schema's business, not coercion's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from uwf.errors import ExpressionError
from uwf.mapping._functions import describe, iso_format, json_type, parse_datetime

__all__ = ["COERCE_TYPES", "coerce"]

_INT64 = 2**63
_MAX_NUMBER_TEXT = 100
_MAX_EXPONENT = 1000  # |adjusted exponent| of a decimal; beyond this nobody means it
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GROUPED = re.compile(r"[+-]?[0-9.,'_ \u00a0\u202f]*[0-9][0-9.,'_ \u00a0\u202f]*")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_MAX_LISTED = 20


def coerce(value: Any, type_name: str, *, field: str, enum: Sequence[str] | None = None) -> Any:
    """Convert `value` to `type_name` (see the module docstring for what each type accepts).

    Raises:
        ExpressionError: the value cannot be converted, the type is unknown, or `enum` is
            missing for the `enum` type; the message starts with `field '<field>':` and names
            the value, e.g. `field 'priority': 'P9' is not one of P1, P2, P3, P4`.

    Example:
        `coerce(" 42 ", "integer", field="count")` → `42`.
    """
    convert = _CONVERTERS.get(type_name) if isinstance(type_name, str) else None
    if convert is None:
        raise ExpressionError(
            f"field {field!r}: unknown type {describe(type_name)};"
            f" known: {', '.join(COERCE_TYPES)}",
            field=field,
        )
    if value is None or (type_name != "string" and isinstance(value, str) and not value.strip()):
        return None
    try:
        return convert(value, enum)
    except ExpressionError as exc:
        raise ExpressionError(f"field {field!r}: {exc.message}", field=field) from None


def _string(value: Any, _enum: Sequence[str] | None) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value.bit_length() > 3 * _MAX_EXPONENT:
            raise ExpressionError(f"{describe(value)} is too large to write out")
        return str(value)
    if isinstance(value, float | Decimal):
        _check_finite(value)
        return str(value)
    raise ExpressionError(f"expected text, got {json_type(value)} {describe(value)}")


def _integer(value: Any, _enum: Sequence[str] | None) -> int:
    number = _decimal(value, None)
    if number != number.to_integral_value():
        raise ExpressionError(f"{describe(value)} is not a whole number")
    if not -_INT64 <= number < _INT64:
        raise ExpressionError(f"{describe(value)} is out of range for a 64-bit integer")
    return int(number)


def _decimal(value: Any, _enum: Sequence[str] | None) -> Decimal:
    if isinstance(value, bool):
        raise ExpressionError(f"{describe(value)} is a boolean, not a number")
    if isinstance(value, int):
        if value.bit_length() > 3 * _MAX_EXPONENT:
            raise ExpressionError(f"{describe(value)} is out of range")
        return Decimal(value)
    if isinstance(value, float | Decimal):
        _check_finite(value)
        # repr() is the shortest text that round-trips, so 0.1 becomes Decimal('0.1').
        number = Decimal(repr(value)) if isinstance(value, float) else value
    elif isinstance(value, str):
        number = _parse_number_text(value)
    else:
        raise ExpressionError(f"expected a number, got {json_type(value)} {describe(value)}")
    if number and abs(number.adjusted()) > _MAX_EXPONENT:
        raise ExpressionError(f"{describe(value)} is out of range")
    return number


def _parse_number_text(value: str) -> Decimal:
    text = value.strip()
    if len(text) > _MAX_NUMBER_TEXT:
        raise ExpressionError(f"{describe(value)} is too long to be a number")
    if _NUMBER.fullmatch(text):
        try:
            return Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
            pass
    if _GROUPED.fullmatch(text):
        raise ExpressionError(
            f"{describe(value)} has thousands separators or a decimal comma, which are"
            " ambiguous; write a plain number with '.' for decimals, e.g. 1234.5"
        )
    raise ExpressionError(f"{describe(value)} is not a number")


def _is_finite(value: float | Decimal) -> bool:
    return value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)


def _check_finite(value: float | Decimal) -> None:
    if not _is_finite(value):
        raise ExpressionError(f"{describe(value)} is not a finite number")


def _boolean(value: Any, _enum: Sequence[str] | None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal) and _is_finite(value) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().casefold()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    raise ExpressionError(
        f"{describe(value)} is not a boolean; use true/false, yes/no, on/off or 1/0"
    )


def _datetime(value: Any, _enum: Sequence[str] | None) -> str:
    return iso_format(parse_datetime(value))


def _enum(value: Any, enum: Sequence[str] | None) -> str:
    if not enum:
        raise ExpressionError("type 'enum' needs the list of allowed values")
    if isinstance(value, int) and not isinstance(value, bool):
        text = describe(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ExpressionError(f"expected one of {_listed(enum)}, got {json_type(value)}")
    if text in enum:
        return text
    # Messy sources send "p1" or " High "; accept them when they name exactly one value.
    wanted = text.strip().casefold()
    matches = {allowed for allowed in enum if str(allowed).casefold() == wanted}
    if len(matches) == 1:
        return matches.pop()
    raise ExpressionError(f"{describe(value)} is not one of {_listed(enum)}")


def _listed(enum: Sequence[str]) -> str:
    shown = ", ".join(str(v) for v in enum[:_MAX_LISTED])
    return shown + (f", … ({len(enum)} in all)" if len(enum) > _MAX_LISTED else "")


_CONVERTERS: dict[str, Callable[[Any, Sequence[str] | None], Any]] = {
    "string": _string,
    "integer": _integer,
    "decimal": _decimal,
    "boolean": _boolean,
    "datetime": _datetime,
    "enum": _enum,
}
COERCE_TYPES: tuple[str, ...] = tuple(_CONVERTERS)
"""The type names `coerce` knows."""
