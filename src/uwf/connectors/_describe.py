"""Read an object's live field metadata through its connector spec's `describe` section.

Every CRM lists its fields differently (Salesforce `describe`, Zendesk `ticket_fields`,
ServiceNow `sys_dictionary` + `sys_choice`, HubSpot `properties`, Dataverse
`EntityDefinitions`, Freshdesk `ticket_fields`); the spec says where each piece is, and this
module turns the answers into one normalised shape, `FieldInfo`, that `uwf connections
describe` prints and `uwf metadata check --against-crm` checks workflows against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uwf.connectors.spec import ChoicesSpec, DescribeSpec, ObjectSpec
from uwf.errors import ExpressionError, FatalError
from uwf.mapping import Expression, is_truthy

if TYPE_CHECKING:
    from uwf.connectors.runtime import ConnectorRuntime, Target

_PLAIN_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

__all__ = [
    "FieldInfo",
    "ObjectDescription",
    "PicklistOption",
    "describe_object",
    "native_base",
]


@dataclass(frozen=True, slots=True)
class PicklistOption:
    """One allowed value of a picklist field: what is stored, and what people see."""

    value: Any
    label: str | None

    def matches(self, value: Any) -> bool:
        """Equal, allowing for CRMs that take numbers as text and text as numbers."""
        if value is None:
            return False
        return bool(value == self.value or str(value).strip() == str(self.value).strip())


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One field of a CRM object as the CRM describes it; `canonical` is the spec's name."""

    name: str
    canonical: str | None = None
    label: str | None = None
    type: str | None = None
    required: bool | None = None
    read_only: bool | None = None
    options: tuple[PicklistOption, ...] = ()

    def allows(self, value: Any) -> bool:
        """Whether `value` is one of the picklist's values (any value, for a non-picklist)."""
        return not self.options or any(option.matches(value) for option in self.options)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "canonical": self.canonical,
            "label": self.label,
            "type": self.type,
            "required": self.required,
            "read_only": self.read_only,
            "options": [{"value": o.value, "label": o.label} for o in self.options],
        }


@dataclass(frozen=True)
class ObjectDescription:
    """The live fields of one object of one connection."""

    connection: str
    connector: str
    object: str
    native_name: str | None
    fields: tuple[FieldInfo, ...]
    by_name: dict[str, FieldInfo] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # CRMs differ on case sensitivity (Salesforce is insensitive); exact names win.
        index = {f.name.lower(): f for f in self.fields}
        index.update({f.name: f for f in self.fields})
        object.__setattr__(self, "by_name", index)

    def field(self, native: str) -> FieldInfo | None:
        """The field a write names `native` (exactly, else case-insensitively)."""
        return self.by_name.get(native) or self.by_name.get(native.lower())

    def to_json(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "connector": self.connector,
            "object": self.object,
            "native_name": self.native_name,
            "fields": [f.to_json() for f in self.fields],
        }


async def describe_object(
    runtime: ConnectorRuntime, target: Target, object_name: str
) -> ObjectDescription:
    """Ask the CRM for `object_name`'s fields (GET requests only; nothing is written).

    Raises `FatalError` when the connector has no such object or cannot describe it, and the
    runtime's `ConnectorError`s when the CRM refuses.
    """
    spec = target.spec
    obj = spec.objects.get(object_name)
    if obj is None:
        known = ", ".join(sorted(spec.objects)) or "none"
        raise FatalError(f"connector '{spec.id}' has no object '{object_name}' (known: {known})")
    if obj.describe is None:
        raise FatalError(f"connector '{spec.id}' cannot describe '{object_name}' (no `describe:`)")
    describe = obj.describe
    context = {"object": object_name, "native_name": obj.native_name or object_name}
    answer = await _request(runtime, target, describe, context)
    compiled = describe.compiled
    entries = _evaluate(compiled["fields"], {**answer, "input": context}, "fields")
    extra: dict[str, list[PicklistOption]] = {}
    for choices in describe.choices:
        for name, found in (await _choices(runtime, target, choices, context)).items():
            extra.setdefault(name, []).extend(found)
    canonical = _canonical_names(obj)
    fields = []
    for entry in entries if isinstance(entries, list) else []:
        raw_name = _evaluate(compiled["name"], entry, "name")
        if raw_name in (None, ""):
            continue
        name = str(raw_name)
        options = _options(compiled, _optional(compiled["options"], entry))
        options += tuple(extra.pop(name, ()))
        fields.append(
            FieldInfo(
                name=name,
                canonical=canonical.get(name),
                label=_text(_optional(compiled["label"], entry)),
                type=_text(_optional(compiled["type"], entry)),
                required=_flag(compiled["required"], entry),
                read_only=_flag(compiled["read_only"], entry),
                options=options,
            )
        )
    return ObjectDescription(
        connection=target.connection,
        connector=spec.id,
        object=object_name,
        native_name=obj.native_name,
        fields=tuple(fields),
    )


def _canonical_names(obj: ObjectSpec) -> dict[str, str]:
    """Native name → canonical name, from the spec's field map (`x@odata.bind` → `x`), then
    from the record map where it reads a field as it is (`priority: properties.hs_priority`)."""
    names: dict[str, str] = {}
    for canonical, spec in obj.field_specs.items():
        names.setdefault(native_base(spec.native), canonical)
    for canonical, expression in obj.record.items():
        if _PLAIN_PATH.fullmatch(expression.strip()):
            names.setdefault(expression.strip().rsplit(".", 1)[-1], canonical)
    return names


def native_base(native: str) -> str:
    """The field a native write key sets: Dataverse binds a lookup as `name@odata.bind`."""
    return native.split("@", 1)[0]


async def _request(
    runtime: ConnectorRuntime,
    target: Target,
    spec: DescribeSpec | ChoicesSpec,
    context: dict[str, Any],
) -> dict[str, Any]:
    ctx = {**context, "connection": dict(target.config)}
    compiled = spec.compiled
    try:
        path = str(compiled["path"].evaluate(ctx))
        raw_query = compiled["query"].evaluate(ctx) or {}
        body = compiled["body"].evaluate(ctx) if compiled["body"] is not None else None
    except ExpressionError as exc:
        raise FatalError(f"cannot build the describe request: {exc.message}") from None
    query = {k: v if isinstance(v, str) else str(v) for k, v in raw_query.items() if v is not None}
    return await runtime.fetch(target, spec.method, path, query, body)


async def _choices(
    runtime: ConnectorRuntime,
    target: Target,
    choices: ChoicesSpec,
    context: dict[str, Any],
) -> dict[str, list[PicklistOption]]:
    answer = await _request(runtime, target, choices, context)
    compiled = choices.compiled
    items = _evaluate(compiled["items"], {**answer, "input": context}, "choices.items")
    found: dict[str, list[PicklistOption]] = {}
    for item in items if isinstance(items, list) else []:
        name = _evaluate(compiled["field"], item, "choices.field")
        if name in (None, ""):
            continue
        raw = (
            _evaluate(compiled["options"], item, "choices.options")
            if compiled["options"]
            else [item]
        )
        found.setdefault(str(name), []).extend(_options(compiled, raw))
    return found


def _options(compiled: dict[str, Any], raw: Any) -> tuple[PicklistOption, ...]:
    """Options from a list (of objects or plain values) or an object (entries `{key, value}`),
    read with the compiled `option_value` and `option_label` of a describe or choices spec."""
    if isinstance(raw, dict):
        raw = [{"key": key, "value": value} for key, value in raw.items()]
    if not isinstance(raw, list):
        return ()
    options = []
    for option in raw:
        if isinstance(option, dict):
            value = _evaluate(compiled["option_value"], option, "option_value")
            label = _text(_evaluate(compiled["option_label"], option, "option_label"))
        else:
            value, label = option, _text(option)
        if value is not None:
            options.append(PicklistOption(value, label))
    return tuple(options)


def _evaluate(expression: Expression, data: Any, where: str) -> Any:
    try:
        return expression.evaluate(data)
    except ExpressionError as exc:
        raise FatalError(f"unexpected describe answer ({where}): {exc.message}") from None


def _optional(expression: Expression | None, data: Any) -> Any:
    return None if expression is None else _evaluate(expression, data, expression.source)


def _flag(expression: Expression | None, data: Any) -> bool | None:
    return None if expression is None else is_truthy(_evaluate(expression, data, "flag"))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
