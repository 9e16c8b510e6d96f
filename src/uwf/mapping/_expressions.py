"""JMESPath expressions and `{{ … }}` string templates over a JSON context.

A metadata value is compiled once (when metadata is loaded) and evaluated many times:

* a string with no `{{` is a literal;
* a string that is exactly one `{{ expr }}` evaluates to the expression's value, keeping its type
  (so `"{{ input.case_id }}"` stays an integer and a missing value stays `null`);
* any other string interpolates each `{{ expr }}` as text (`null` becomes the empty string);
* dicts and lists are compiled member by member.

Project functions are JMESPath custom functions: `value_map(name, value)`, `lower`, `upper`,
`trim`, `coalesce(a, b, …)`, conversions (`e164`, `iso_country`, `now`, `format_date`; see
`_functions`), and quoting for CRM query languages: `url_encode`, `soql_quote`,
`odata_quote`, `snow_escape`. JMESPath has no loops, so evaluation time is bounded by the size of
the context; sources are bounded by `MAX_EXPRESSION_LENGTH`.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser

from uwf.errors import ExpressionError
from uwf.mapping import _functions

MAX_EXPRESSION_LENGTH = 2000
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_VALUE_MAP_CALL = re.compile(r"value_map\(\s*'([^']+)'")


@dataclass(frozen=True, slots=True)
class ValueMap:
    """A named translation table, e.g. P1 → urgent, with a policy for values it does not list."""

    name: str
    values: Mapping[str, Any]
    default: Any = None
    on_unmapped: Literal["error", "passthrough", "default"] = "error"

    def lookup(self, value: Any) -> Any:
        key = value if isinstance(value, str) else json.dumps(value)
        if key in self.values:
            return self.values[key]
        if self.on_unmapped == "passthrough":
            return value
        if self.on_unmapped == "default":
            return self.default
        known = ", ".join(sorted(self.values)) or "none"
        raise ExpressionError(
            f"value {value!r} is not in value map '{self.name}' (known: {known})",
            value_map=self.name,
        )


class _Functions(jmespath.functions.Functions):
    """Project functions; one instance per evaluation so `value_map` sees the right maps."""

    _now: str | None = None

    def __init__(self, value_maps: Mapping[str, ValueMap]) -> None:
        super().__init__()
        self._value_maps = value_maps

    @jmespath.functions.signature({"types": ["string"]}, {"types": []})
    def _func_value_map(self, name: str, value: Any) -> Any:
        try:
            vmap = self._value_maps[name]
        except KeyError:
            known = ", ".join(sorted(self._value_maps)) or "none"
            raise ExpressionError(f"unknown value map '{name}' (known: {known})") from None
        return vmap.lookup(value)

    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_lower(self, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_upper(self, value: str | None) -> str | None:
        return None if value is None else value.upper()

    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_trim(self, value: str | None) -> str | None:
        return None if value is None else value.strip()

    @jmespath.functions.signature({"types": [], "variadic": True})
    def _func_coalesce(self, *values: Any) -> Any:
        return next((v for v in values if v is not None and v != ""), None)

    # Conversions; the work is done in `_functions`. JMESPath has no optional arguments, so
    # the optional ones are variadic and their count is checked here.

    @jmespath.functions.signature({"types": ["string", "number", "null"], "variadic": True})
    def _func_e164(self, phone: Any, *rest: Any) -> str | None:
        """`e164(phone, region?)`: the number as `+14155550132`."""
        return _functions.e164(phone, *_optional("e164", rest, 1))

    @jmespath.functions.signature({"types": ["string", "number", "null"]})
    def _func_iso_country(self, name_or_code: Any) -> str | None:
        """`iso_country(name_or_code)`: the ISO 3166-1 alpha-2 code."""
        return _functions.iso_country(name_or_code)

    @jmespath.functions.signature()
    def _func_now(self) -> str:
        """`now()`: ISO-8601 UTC with milliseconds, one instant per expression."""
        # Memoised on this instance (one per evaluation) so `now()` agrees with itself.
        if self._now is None:
            self._now = _functions.now()
        return self._now

    @jmespath.functions.signature({"types": ["string", "number", "null"], "variadic": True})
    def _func_format_date(self, value: Any, *rest: Any) -> str | None:
        """`format_date(value, format?, timezone?)`: ISO-8601 or a `strftime` pattern."""
        return _functions.format_date(value, *_optional("format_date", rest, 2))

    # Quoting for the query languages CRMs take in URLs. Values from callers must never be
    # able to change a query's meaning.

    @jmespath.functions.signature({"types": ["string", "number"]})
    def _func_url_encode(self, value: str | float) -> str:
        """Percent-encode for one path segment or query value (`/` included)."""
        return urllib.parse.quote(_as_text(value), safe="")

    @jmespath.functions.signature({"types": ["string", "number"]})
    def _func_soql_quote(self, value: str | float) -> str:
        """A SOQL string literal: `O'Brien` → `'O\\'Brien'` (Salesforce)."""
        text = _as_text(value)
        for char, escaped in (("\\", "\\\\"), ("'", "\\'"), ("\n", "\\n"), ("\r", "\\r")):
            text = text.replace(char, escaped)
        return f"'{text}'"

    @jmespath.functions.signature({"types": ["string", "number"]})
    def _func_odata_quote(self, value: str | float) -> str:
        """An OData string literal: `O'Brien` → `'O''Brien'` (Dynamics 365)."""
        return "'" + _as_text(value).replace("'", "''") + "'"

    @jmespath.functions.signature({"types": ["string", "number"]})
    def _func_snow_escape(self, value: str | float) -> str:
        """A value inside a ServiceNow encoded query, where `^` separates conditions."""
        return _as_text(value).replace("^", "^^")


def _optional(name: str, rest: tuple[Any, ...], most: int) -> tuple[Any, ...]:
    if len(rest) > most:
        raise ExpressionError(f"{name}() takes at most {most + 1} arguments, got {len(rest) + 1}")
    return rest


_NO_MAPS: Mapping[str, ValueMap] = {}


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled JMESPath expression."""

    source: str
    _parsed: jmespath.parser.ParsedResult = field(repr=False, compare=False)

    def evaluate(self, context: Any, value_maps: Mapping[str, ValueMap] = _NO_MAPS) -> Any:
        options = jmespath.Options(custom_functions=_Functions(value_maps))
        try:
            return self._parsed.search(context, options=options)
        except ExpressionError:
            raise
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError) as exc:
            # Built-in functions given the wrong types raise plain TypeErrors.
            raise ExpressionError(f"expression `{self.source}` failed: {exc}") from None


def compile_expression(source: str) -> Expression:
    """Compile a JMESPath expression, raising `ExpressionError` with a readable reason."""
    source = source.strip()
    if not source:
        raise ExpressionError("empty expression")
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"expression is {len(source)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"
        )
    try:
        parsed = jmespath.compile(source)
    except jmespath.exceptions.JMESPathError as exc:
        reason = str(exc).splitlines()[0]
        raise ExpressionError(f"invalid expression `{source}`: {reason}") from None
    unknown = _unknown_functions(source)
    if unknown:
        raise ExpressionError(
            f"unknown function {unknown[0]}() in `{source}`; known: {', '.join(_known_functions())}"
        )
    return Expression(source, parsed)


_FUNCTION_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def _known_functions() -> list[str]:
    table = _Functions(_NO_MAPS).FUNCTION_TABLE
    return sorted(table)


def _unknown_functions(source: str) -> list[str]:
    # Strip quoted literals so words inside strings are not taken for calls.
    bare = re.sub(r"'(?:[^'\\]|\\.)*'|`[^`]*`|\"(?:[^\"\\]|\\.)*\"", "''", source)
    known = set(_known_functions())
    return [name for name in _FUNCTION_CALL.findall(bare) if name not in known]


def is_truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty strings, lists and objects are false."""
    return not (value is None or value is False or value in ("", [], {}))


@dataclass(frozen=True, slots=True)
class CompiledValue:
    """A metadata value (literal, template, dict or list) ready to evaluate against a context."""

    kind: Literal["literal", "expression", "template", "dict", "list"]
    literal: Any = None
    expression: Expression | None = None
    parts: tuple[str | Expression, ...] = ()
    members: tuple[tuple[str, CompiledValue], ...] = ()
    items: tuple[CompiledValue, ...] = ()

    def evaluate(self, context: Any, value_maps: Mapping[str, ValueMap] = _NO_MAPS) -> Any:
        if self.kind == "literal":
            return self.literal
        if self.kind == "expression":
            assert self.expression is not None
            return self.expression.evaluate(context, value_maps)
        if self.kind == "template":
            return "".join(
                part if isinstance(part, str) else _as_text(part.evaluate(context, value_maps))
                for part in self.parts
            )
        if self.kind == "dict":
            return {key: value.evaluate(context, value_maps) for key, value in self.members}
        return [item.evaluate(context, value_maps) for item in self.items]

    def expressions(self) -> list[Expression]:
        """Every expression inside, for static checks."""
        found: list[Expression] = []
        if self.expression is not None:
            found.append(self.expression)
        found.extend(p for p in self.parts if isinstance(p, Expression))
        for _, member in self.members:
            found.extend(member.expressions())
        for item in self.items:
            found.extend(item.expressions())
        return found


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def compile_value(value: Any) -> CompiledValue:
    """Compile a metadata value; raises `ExpressionError` naming the bad expression."""
    if isinstance(value, str):
        if "{{" not in value:
            return CompiledValue("literal", literal=value)
        whole = _TEMPLATE.fullmatch(value.strip())
        if whole and "{{" not in whole.group(1):
            return CompiledValue("expression", expression=compile_expression(whole.group(1)))
        parts: list[str | Expression] = []
        pos = 0
        for match in _TEMPLATE.finditer(value):
            if match.start() > pos:
                parts.append(value[pos : match.start()])
            parts.append(compile_expression(match.group(1)))
            pos = match.end()
        rest = value[pos:]
        if "{{" in rest:
            raise ExpressionError(f"unclosed '{{{{' in template {value!r}")
        if rest:
            parts.append(rest)
        return CompiledValue("template", parts=tuple(parts))
    if isinstance(value, Mapping):
        return CompiledValue(
            "dict", members=tuple((str(k), compile_value(v)) for k, v in value.items())
        )
    if isinstance(value, list | tuple):
        return CompiledValue("list", items=tuple(compile_value(v) for v in value))
    return CompiledValue("literal", literal=value)


def referenced_value_maps(compiled: CompiledValue) -> set[str]:
    """Names passed as literals to `value_map('…', …)`, for checking at load time."""
    return {
        name for expr in compiled.expressions() for name in _VALUE_MAP_CALL.findall(expr.source)
    }
