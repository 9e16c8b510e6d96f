"""Canonical fields: how one field of the canonical model is named, typed and valued in a CRM.

A connector spec maps each canonical field of an object to the CRM's own (`FieldSpec`). A plain
string is the native name alone; a mapping may add a `type`, and for an `enum` the allowed
canonical values with their native spelling (`values`), so that a workflow writes
`priority: urgent` on every CRM and each CRM receives its own value (`urgent`, `High`, `1`,
`4`). Reads go the other way: the record view gives the canonical value and the CRM's own
beside it (`priority: high`, `priority_native: "2"`); booleans, integers, decimals and
datetimes read back as JSON of their type (HubSpot's `"true"` is `true`, ServiceNow's
`"2026-01-05 10:00:00"` is `"2026-01-05T10:00:00Z"`), or as sent when they do not convert.

Native names may point inside the record:

* `custom_fields[360001]`: entry `360001` of a list of `{id, value}` (Zendesk custom fields);
* `custom_fields/cf_escalated`: key `cf_escalated` of the object `custom_fields` (Freshdesk).
  A slash, not a dot: Dataverse names such as `ownerid@odata.bind` contain dots.

Writes go through `uwf.mapping.coerce`, whose errors name the field and the value.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from uwf.errors import ExpressionError
from uwf.mapping import coerce

__all__ = ["FieldSpec", "FieldType", "native_path_expression", "place_native"]

FieldType = Literal["string", "integer", "decimal", "boolean", "datetime", "enum"]

_DIGITS = re.compile(r"[0-9]+")
_LIST_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[([^\[\]]+)\]$")
_NAME = r"[A-Za-z_$@][A-Za-z0-9_$@.:-]*"
NATIVE_NAME = rf"^(?:{_NAME}(?:/{_NAME})*|[A-Za-z_][A-Za-z0-9_]*\[[^\[\]]+\])$"


class FieldSpec(BaseModel):
    """One canonical field in one CRM: its native name, its type and, for enums, its values.

    Example (Salesforce's case priority):
        `{native: Priority, type: enum, values: {low: Low, normal: Medium, high: High,
        urgent: High}, read_values: {High: high}}`
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    native: str = Field(
        pattern=NATIVE_NAME,
        description="The CRM's field name; `list[id]` is entry `id` of a list of {id, value} "
        "(Zendesk `custom_fields[360001]`), `object/key` a key inside an object",
    )
    type: FieldType | None = Field(
        default=None,
        description="Writes are coerced to this type (errors name the field and the value); "
        "reads are converted to it, or kept as sent when they do not convert; none: as given",
    )
    values: dict[str, Any] | None = Field(
        default=None,
        description="enum: canonical value → the CRM's value (written); the keys are the "
        "allowed canonical values",
    )
    read_values: dict[str, str] | None = Field(
        default=None,
        description="enum: the CRM's value (as text) → canonical value, for reading; default: "
        "`values` reversed (the first canonical value of each native one)",
    )
    read: str | None = Field(
        default=None,
        description="JMESPath reading the field from a native record; default: from `native` "
        "(and the object's `record_fields`)",
    )

    @model_validator(mode="after")
    def _enum_needs_values(self) -> FieldSpec:
        if self.type == "enum" and not self.values:
            raise ValueError("a field of type enum needs `values` (canonical → native)")
        if self.type != "enum" and (self.values is not None or self.read_values is not None):
            raise ValueError("`values` and `read_values` are for fields of type enum")
        unknown = sorted(set((self.read_values or {}).values()) - set(self.values or {}))
        if unknown:
            raise ValueError(
                f"read_values name {', '.join(unknown)}, which `values` does not allow"
            )
        return self

    @cached_property
    def _reading(self) -> dict[str, str]:
        reading: dict[str, str] = {}
        for canonical, native in (self.values or {}).items():
            reading.setdefault(_text(native), canonical)
        return {**reading, **(self.read_values or {})}

    def to_native(self, name: str, value: Any) -> Any:
        """The value to send for canonical field `name`.

        Raises:
            ExpressionError: the value cannot be converted; the message names the field and
                the value, e.g. `field 'priority': 'P7' is not one of low, normal, high, urgent`.
        """
        if self.type is None:
            return value
        if self.type != "enum":
            return _json_ready(coerce(value, self.type, field=name))
        values = self.values or {}
        if isinstance(value, str) and value in values:
            return values[value]
        if value is None:
            return None
        # A value already in the CRM's spelling passes (value maps written before the canonical
        # enums produce native values), so existing tenants keep working.
        if not isinstance(value, bool):
            for native in values.values():
                if _text(value) == _text(native):
                    return native
        return values[coerce(value, "enum", field=name, enum=list(values))]

    def to_canonical(self, native: Any) -> Any:
        """The canonical value of a native one, as JSON of the declared type.

        Enums give the canonical value (None when the CRM's value has none). Booleans, integers,
        decimals and datetimes are converted from however the CRM spells them (HubSpot and
        ServiceNow send every value as text); a value that cannot be converted is returned as
        the CRM sent it, because a read must never fail on the CRM's data.
        """
        if self.type == "enum":
            return None if native is None else self._reading.get(_text(native))
        if self.type is None or self.type == "string":
            return native
        return _read_typed(native, self.type)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_typed(native: Any, type_name: str) -> Any:
    """`native` converted to `type_name` as JSON, or `native` itself when it does not convert."""
    value = native
    if type_name == "datetime" and isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value)  # HubSpot's date-times may come as epoch milliseconds in text
    try:
        return _json_ready(coerce(value, type_name, field="read"))
    except ExpressionError:
        return native


def _json_ready(value: Any) -> Any:
    """Decimals go out as JSON numbers, exactly when they are whole."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def native_path_expression(native: str, prefix: str | None = None) -> str:
    """JMESPath reading the native field `native` (see the module docstring) from a record."""
    entry = _LIST_ENTRY.match(native)
    if entry is not None:
        key = entry.group(2).replace("'", "\\'")
        expr = f"{_quoted(entry.group(1))}[?to_string(id) == '{key}'].value | [0]"
    else:
        expr = ".".join(_quoted(part) for part in native.split("/"))
    return f"{prefix}.{expr}" if prefix else expr


def place_native(out: dict[str, Any], native: str, value: Any) -> None:
    """Put `value` at `native` in the request fields `out` (list entries and nested keys)."""
    entry = _LIST_ENTRY.match(native)
    if entry is not None:
        name, key = entry.group(1), entry.group(2)
        items = out.get(name)
        if not isinstance(items, list):
            items = out[name] = []
        items[:] = [item for item in items if not _same_id(item, key)]
        items.append({"id": int(key) if key.isdigit() else key, "value": value})
        return
    *parents, last = native.split("/")
    node = out
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        else:
            child = node[part] = dict(child)
        node = child
    node[last] = value


def _same_id(item: Any, key: str) -> bool:
    return isinstance(item, dict) and str(item.get("id")) == key
