"""JMESPath expressions and `{{ … }}` string templates over a JSON context.

A metadata value is compiled once (when metadata is loaded) and evaluated many times:

* a string with no `{{` is a literal;
* a string that is exactly one `{{ expr }}` evaluates to the expression's value, keeping its type
  (so `"{{ input.case_id }}"` stays an integer and a missing value stays `null`);
* any other string interpolates each `{{ expr }}` as text (`null` becomes the empty string);
* dicts and lists are compiled member by member.

Project functions are JMESPath custom functions: `value_map(name, value)`, `lower`, `upper`,
`trim`, `coalesce(a, b, …)`, `merge_each(items, extra)`, conversions (`e164`, `iso_country`,
`now`, `format_date`; see `_functions`), and quoting for CRM query languages: `url_encode`,
`soql_quote`, `odata_quote`, `snow_escape`.

Limits (`Limits`, checked on every evaluation, each failure an `ExpressionError` quoting the
expression): the document an expression reads (`max_document_nodes`, `max_depth`), every
value it makes on the way (strings up to `max_string_length`, lists up to `max_list_length`),
and its work (`max_steps` visits of the expression's syntax tree, `max_seconds` of time).
JMESPath has no loops, so the work is bounded by the document times the expression; the budget
makes that bound small. Sources are bounded by `MAX_EXPRESSION_LENGTH`.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser
import jmespath.visitor

from uwf.errors import ExpressionError
from uwf.mapping import _functions

MAX_EXPRESSION_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Limits:
    """What one evaluation may read, make and spend. The defaults hold for every expression."""

    max_document_nodes: int = 200_000
    """Values (objects, arrays, strings, numbers…) in the document an expression reads."""
    max_depth: int = 64
    """Nesting of objects and arrays, in the document and in what the expression makes."""
    max_string_length: int = 1_000_000
    """Characters in any string an expression makes (a template's text included)."""
    max_list_length: int = 10_000
    """Elements of any array an expression makes."""
    max_steps: int = 1_000_000
    """Visits of the expression's syntax tree: a projection over n elements costs n visits."""
    max_seconds: float = 10.0
    """Wall-clock backstop; the step budget is the limit that matters on a healthy machine."""


LIMITS = Limits()
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

    def __init__(self, value_maps: Mapping[str, ValueMap], limits: Limits = LIMITS) -> None:
        super().__init__()
        self._value_maps = value_maps
        self._limits = limits

    @jmespath.functions.signature({"types": ["string"]}, {"types": ["array-string"]})
    def _func_join(self, separator: str, parts: list[str]) -> str:
        # The one built-in that can make a string far longer than anything it reads.
        size = sum(map(len, parts)) + len(separator) * max(len(parts) - 1, 0)
        if size > self._limits.max_string_length:
            raise _LimitError(
                f"would make a string of {size} characters; "
                f"the limit is {self._limits.max_string_length}"
            )
        return separator.join(parts)

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

    @jmespath.functions.signature({"types": ["array"]}, {"types": ["object"]})
    def _func_merge_each(self, items: list[Any], extra: dict[str, Any]) -> list[Any]:
        """`merge_each(items, extra)`: every object of `items` with `extra`'s keys added.

        JMESPath cannot reach outside a projection (`items[*]` sees only each item), so a
        value from elsewhere in the document, e.g. the operation's `input`, is given to every
        element this way. Elements that are not objects are kept as they are.
        """
        return [{**item, **extra} if isinstance(item, dict) else item for item in items]

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

    @jmespath.functions.signature({"types": ["string", "number", "null"], "variadic": True})
    def _func_parse_date(self, value: Any, *rest: Any) -> str | None:
        """`parse_date(value, format, timezone?)`: a `strptime` pattern read into ISO-8601."""
        if not rest:
            raise ExpressionError("parse_date() needs a format, e.g. parse_date(d, '%d/%m/%Y')")
        return _functions.parse_date(value, *_optional("parse_date", rest, 2))

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


class _LimitError(Exception):
    """An evaluation went over a limit; `Expression.evaluate` names the expression."""


class _BudgetedInterpreter(jmespath.visitor.TreeInterpreter):
    """JMESPath's interpreter, counting its steps and checking the size of what it makes."""

    def __init__(self, options: jmespath.Options, limits: Limits) -> None:
        super().__init__(options)
        self._limits = limits
        self._left = limits.max_steps
        self._deadline = time.monotonic() + limits.max_seconds

    def visit(self, node: Any, *args: Any, **kwargs: Any) -> Any:
        self._left -= 1
        if self._left < 0:
            raise _LimitError(f"took more than {self._limits.max_steps} steps")
        if self._left % 1024 == 0 and time.monotonic() > self._deadline:
            raise _LimitError(f"took longer than {self._limits.max_seconds} s")
        result = super().visit(node, *args, **kwargs)
        if isinstance(result, str) and len(result) > self._limits.max_string_length:
            raise _LimitError(
                f"made a string of {len(result)} characters; "
                f"the limit is {self._limits.max_string_length}"
            )
        if isinstance(result, list) and len(result) > self._limits.max_list_length:
            raise _LimitError(
                f"made a list of {len(result)} elements; "
                f"the limit is {self._limits.max_list_length}"
            )
        return result


def document_fits(document: Any, limits: Limits = LIMITS) -> bool:
    """Whether `document` is within `limits` (size, depth, string length).

    Checking costs a walk of the whole document, often more than the expression: a caller
    that evaluates several expressions over one document checks it once and passes
    `checked=True`. One that does not fit is left to each `evaluate`, which names the
    expression in its error.
    """
    return _document_problem(document, limits) is None


_SCALARS = frozenset({int, float, bool, type(None)})


def _document_problem(document: Any, limits: Limits) -> str | None:
    """Why `document` is too big or too deep to evaluate over, or None. Stops early.

    Walked one nesting level at a time: a level's values are counted, its strings measured
    and its containers opened together, which is several times faster in Python than a
    value-by-value stack (this runs on every evaluation that is not `checked`).
    """
    left = limits.max_document_nodes
    longest = limits.max_string_length
    level: list[Any] = [document]
    depth = 0
    while level:
        left -= len(level)
        if left < 0:
            return f"has more than {limits.max_document_nodes} values"
        inner: list[Any] = []
        nested = False
        for value in level:
            kind = type(value)
            if kind in _SCALARS:
                continue
            if kind is str or isinstance(value, str):
                if len(value) > longest:
                    return f"holds a string of {len(value)} characters; the limit is {longest}"
            elif isinstance(value, dict):
                nested = True
                inner.extend(value.values())
            elif isinstance(value, list | tuple):
                nested = True
                inner.extend(value)
        if nested and depth >= limits.max_depth:
            return f"is nested more than {limits.max_depth} levels deep"
        level, depth = inner, depth + 1
    return None


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

    def evaluate(
        self,
        context: Any,
        value_maps: Mapping[str, ValueMap] = _NO_MAPS,
        limits: Limits = LIMITS,
        *,
        checked: bool = False,
    ) -> Any:
        """The expression's value over `context`, within `limits`.

        `checked`: the caller has just seen `document_fits(context, limits)` say yes.

        Raises:
            ExpressionError: it failed (a wrong argument type, an unmapped value) or went over
                a limit; the message quotes the expression.
        """
        problem = None if checked else _document_problem(context, limits)
        if problem is not None:
            raise ExpressionError(f"expression `{self.source}`: the document it reads {problem}")
        options = jmespath.Options(custom_functions=_Functions(value_maps, limits))
        interpreter = _BudgetedInterpreter(options, limits)
        try:
            result = interpreter.visit(self._parsed.parsed, context)
        except ExpressionError:
            raise
        except _LimitError as exc:
            raise ExpressionError(f"expression `{self.source}` {exc}") from None
        except RecursionError:
            raise ExpressionError(f"expression `{self.source}` is nested too deeply") from None
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError, ArithmeticError) as exc:
            # Built-in functions given the wrong types raise plain TypeErrors.
            raise ExpressionError(f"expression `{self.source}` failed: {exc}") from None
        return result


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
        with warnings.catch_warnings():
            # JMESPath still reads `foo` (an unquoted string in backticks) as 'foo', with a
            # deprecation warning; the meaning is clear, so the warning is not the user's problem.
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            parsed = jmespath.compile(source)
    except jmespath.exceptions.JMESPathError as exc:
        reason = str(exc).splitlines()[0]
        raise ExpressionError(f"invalid expression `{source}`: {reason}") from None
    except (RecursionError, ValueError, TypeError, ArithmeticError):
        # The parser recurses per nesting level; literals are parsed as JSON.
        raise ExpressionError(
            f"invalid expression `{source}`: too deeply nested or malformed"
        ) from None
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

    def evaluate(
        self,
        context: Any,
        value_maps: Mapping[str, ValueMap] = _NO_MAPS,
        where: str = "",
        *,
        checked: bool = False,
    ) -> Any:
        """The value over `context`. An error names where in the value it happened, after
        `where` (the field's name): `fields.priority: value 'P9' is not in value map …`.

        `checked`: as for `Expression.evaluate`; a dict or list checks `context` once for
        all its members."""
        if self.kind == "literal":
            return self.literal
        if self.kind == "dict":
            checked = checked or document_fits(context)
            return {
                key: value.evaluate(
                    context, value_maps, f"{where}.{key}" if where else key, checked=checked
                )
                for key, value in self.members
            }
        if self.kind == "list":
            checked = checked or document_fits(context)
            return [
                item.evaluate(context, value_maps, f"{where}[{index}]", checked=checked)
                for index, item in enumerate(self.items)
            ]
        try:
            return self._evaluate_leaf(context, value_maps, checked)
        except ExpressionError as exc:
            if not where:
                raise
            context = {**exc.context, "field": where}
            raise ExpressionError(f"{where}: {exc.message}", **context) from None

    def _evaluate_leaf(
        self, context: Any, value_maps: Mapping[str, ValueMap], checked: bool
    ) -> Any:
        if self.kind == "expression":
            assert self.expression is not None
            return self.expression.evaluate(context, value_maps, checked=checked)
        if not checked and sum(isinstance(part, Expression) for part in self.parts) > 1:
            checked = document_fits(context)  # once for all of them
        text = "".join(
            part
            if isinstance(part, str)
            else _as_text(part.evaluate(context, value_maps, checked=checked))
            for part in self.parts
        )
        if len(text) > LIMITS.max_string_length:
            raise ExpressionError(
                f"template makes a string of {len(text)} characters; "
                f"the limit is {LIMITS.max_string_length}"
            )
        return text

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
