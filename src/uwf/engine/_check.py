"""`uwf metadata check --against-crm`: workflows checked against the CRMs' live field metadata.

For every step that writes fields (`update_record`, `create_record`, wherever it is nested),
each field is resolved to the CRM's name through the connector spec (canonical → native;
custom native names as given) and looked up in the object's live description. Reported:

* a field the CRM object does not have (with the closest names it does have);
* a field the API cannot write (read-only);
* a value the field cannot take: a value-map target (`value_map('name', …)` in the field's
  template), or a literal value, that is not one of the picklist's allowed values.

Each connection's own `custom_fields` and `field_mappings` are checked too, whether or not a
workflow writes them yet: every native field must exist, and an enum's native values must be
allowed values of the CRM's picklist. Those are reported at the connection's document.

Only reads are sent (the describe requests); nothing is written to any CRM.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from uwf.connectors import FieldInfo, FieldSpec, ObjectDescription, native_base
from uwf.errors import ExpressionError, UwfError
from uwf.mapping import ValueMap
from uwf.metadata import ConnectionSpec, MetadataBundle, WorkflowSpec

__all__ = ["Finding", "check_against_crm", "document_lines"]

_VALUE_MAP_CALL = re.compile(r"value_map\(\s*'([^']+)'")
_WRITING_STEPS = ("update_record", "create_record")

Describe = Callable[[ConnectionSpec, str], Awaitable[ObjectDescription]]
# Where a path of a workflow or connection document is: its file and line.
Locate = Callable[[WorkflowSpec | ConnectionSpec, tuple[str | int, ...]], tuple[str, int | None]]


@dataclass(frozen=True, slots=True)
class Finding:
    """One mismatch between a workflow and the CRM, located in the metadata."""

    file: str
    line: int | None
    path: str
    message: str
    severity: str = "error"  # or "note": could not be checked, not a failure

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "message": self.message,
            "severity": self.severity,
        }


async def check_against_crm(
    bundle: MetadataBundle,
    describe: Describe,
    *,
    tenant: str | None = None,
    locate: Locate | None = None,
) -> list[Finding]:
    """Every finding for the workflows of `bundle` (of `tenant` only, when given).

    `describe(connection, object)` reads an object's live fields; each (connection, object) is
    described once. `locate(workflow, path)` gives the file and line of a path in a workflow.
    """
    cache: dict[tuple[str, str], ObjectDescription | str] = {}
    findings: list[Finding] = []

    def where(
        doc: WorkflowSpec | ConnectionSpec, path: tuple[str | int, ...]
    ) -> tuple[str, int | None]:
        if locate is not None:
            return locate(doc, path)
        return f"{_kind(doc)} {doc.tenant}/{doc.name}", None

    async def described_as(connection: ConnectionSpec, obj: str) -> ObjectDescription | str:
        key = (connection.name, obj)
        if key not in cache:
            try:
                cache[key] = await describe(connection, obj)
            except UwfError as exc:
                cache[key] = exc.message
        return cache[key]

    for (wf_tenant, _), wf in sorted(bundle.workflows.items()):
        if tenant is not None and wf_tenant != tenant:
            continue
        maps = bundle.value_maps_for(wf.tenant)
        for path, step in _writing_steps(wf.steps, ("steps",)):
            conn_name = getattr(step, "connection", None) or wf.connection
            connection = bundle.connections.get(conn_name)
            if connection is None:
                continue  # `metadata validate` reports it
            described = await described_as(connection, step.object)
            if isinstance(described, str):
                file, line = where(wf, (*path, "object"))
                message = f"cannot check against {conn_name}: {described}"
                findings.append(Finding(file, line, _dotted((*path, "object")), message, "note"))
                continue
            # The connector as this connection sees it: its custom fields and overrides too.
            connector = bundle.connectors[connection.connector].customized(
                connection.custom_fields, connection.field_mappings
            )
            spec = connector.objects.get(step.object)
            mapping = spec.field_specs if spec is not None else {}
            # The connection's own mappings are checked at the connection (below), once.
            own = set(connection.custom_fields.get(step.object, {})) | set(
                connection.field_mappings.get(step.object, {})
            )
            for name, template in step.fields.items():
                problems = _check_field(described, mapping, name, template, maps, own)
                for inner, message in problems:
                    field_path = (*path, "fields", name, *inner)
                    file, line = where(wf, field_path)
                    findings.append(Finding(file, line, _dotted(field_path), message))
    for conn_name, connection in sorted(bundle.connections.items()):
        if tenant is not None and connection.tenant != tenant:
            continue
        for section in ("custom_fields", "field_mappings"):
            for obj, fields in sorted(getattr(connection, section).items()):
                described = await described_as(connection, obj)
                if isinstance(described, str):
                    file, line = where(connection, (section, obj))
                    message = f"cannot check against {conn_name}: {described}"
                    findings.append(Finding(file, line, f"{section}.{obj}", message, "note"))
                    continue
                for name, field in sorted(fields.items()):
                    for message in _check_mapping(described, name, field):
                        file, line = where(connection, (section, obj, name))
                        findings.append(Finding(file, line, f"{section}.{obj}.{name}", message))
    return findings


def _kind(doc: WorkflowSpec | ConnectionSpec) -> str:
    return "workflow" if isinstance(doc, WorkflowSpec) else "connection"


def _shown(name: str, base: str) -> str:
    return f"'{name}'" + (f" (native '{base}')" if base != name else "")


def _missing(described: ObjectDescription, base: str, shown: str) -> str:
    crm = f"{described.connector} {described.native_name or described.object}"
    close = difflib.get_close_matches(base, [f.name for f in described.fields], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"field {shown} does not exist on {crm} ({described.connection}){hint}"


def _allowed(info: FieldInfo) -> str:
    return ", ".join(
        f"{o.value}" + (f" ({o.label})" if o.label and str(o.label) != str(o.value) else "")
        for o in info.options
    )


def _mapping_values(info: FieldInfo, shown: str, spec: FieldSpec) -> list[str]:
    """An enum mapping's own native values that the CRM's picklist does not allow."""
    if spec.type != "enum" or not info.options:
        return []
    return [
        f"the mapping of {shown} turns '{canonical}' into {native!r}, which is not an allowed "
        f"value (allowed: {_allowed(info)})"
        for canonical, native in (spec.values or {}).items()
        if not info.allows(native)
    ]


def _check_mapping(described: ObjectDescription, name: str, spec: FieldSpec) -> list[str]:
    """Problems of one field a connection adds or maps: it must exist, its values be allowed."""
    base = native_base(spec.native)
    shown = _shown(name, base)
    info = described.field(base)
    if info is None:
        return [_missing(described, base, shown)]
    return _mapping_values(info, shown, spec)


def _writing_steps(
    value: Any, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Steps that write fields, with their path, found in any nesting (branches, loops)."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _writing_steps(item, (*path, index))
    elif isinstance(value, BaseModel):
        if getattr(value, "type", None) in _WRITING_STEPS and isinstance(
            getattr(value, "fields", None), dict
        ):
            yield path, value
        for name in type(value).model_fields:
            child = getattr(value, name)
            if isinstance(child, (list, BaseModel, dict)):
                yield from _writing_steps(child, (*path, name))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (list, BaseModel)):
                yield from _writing_steps(item, (*path, str(key)))


def _check_field(
    described: ObjectDescription,
    mapping: dict[str, FieldSpec],
    name: str,
    template: Any,
    maps: dict[str, ValueMap],
    own: Collection[str] = (),
) -> list[tuple[tuple[str | int, ...], str]]:
    """(path below the field, message) for each problem of one written field.

    `own`: fields the connection maps itself; their existence and mapping are reported at the
    connection, so here only what the workflow writes into them is checked.
    """
    spec = mapping.get(name)
    native = spec.native if spec is not None else name
    base = native_base(native)
    shown = _shown(name, base)
    crm = f"{described.connector} {described.native_name or described.object}"
    info = described.field(base)
    if info is None and spec is None:
        nested = _nested(described, base, template, maps)
        if nested is not None:
            return nested
    if info is None:
        return [] if name in own else [((), _missing(described, base, shown))]
    messages = []
    if info.read_only:
        messages.append(f"field {shown} is read-only on {crm}")
    if info.options:
        if spec is not None and name not in own:
            messages += _mapping_values(info, shown, spec)
        messages += _check_values(info, shown, spec, template, maps)
    return [((), message) for message in messages]


def _nested(
    described: ObjectDescription, base: str, template: Any, maps: dict[str, ValueMap]
) -> list[tuple[tuple[str | int, ...], str]] | None:
    """Custom fields written in the CRM's own container: Freshdesk's `custom_fields: {cf_x: …}`
    (`custom_fields/cf_x`), Zendesk's `custom_fields: [{id, value}]` (`custom_fields[id]`)."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(template, dict):
        for key, inner in template.items():
            for below, message in _check_field(described, {}, f"{base}/{key}", inner, maps):
                found.append(((key, *below), message))
        return found
    if isinstance(template, list) and all(isinstance(i, dict) and "id" in i for i in template):
        for index, item in enumerate(template):
            entry = f"{base}[{item['id']}]"
            for below, message in _check_field(described, {}, entry, item.get("value"), maps):
                found.append(((index, "value", *below), message))
        return found
    return None


def _check_values(
    info: FieldInfo,
    shown: str,
    spec: FieldSpec | None,
    template: Any,
    maps: dict[str, ValueMap],
) -> list[str]:
    """What the workflow writes into a picklist: each possible value must be allowed."""
    allowed = _allowed(info)
    messages = []

    def refused(value: Any) -> str | None:
        """Why `value`, written to this field, would not be accepted; None when it would."""
        native = value
        if spec is not None and spec.type is not None:
            try:
                native = spec.to_native(shown, value)
            except ExpressionError as exc:
                return exc.message
        if native is not None and not info.allows(native):
            if native != value:
                return f"sent as {native!r}, not an allowed value of {shown} (allowed: {allowed})"
            return f"not an allowed value of {shown} (allowed: {allowed})"
        return None

    candidates: list[tuple[str, Any]] = []
    if not isinstance(template, str) or "{{" not in template:
        if template is not None:
            candidates.append((f"value {template!r}", template))
    else:
        for map_name in dict.fromkeys(_VALUE_MAP_CALL.findall(template)):
            vmap = maps.get(map_name)
            if vmap is None:
                continue  # `metadata validate` reports unknown maps
            targets = dict(vmap.values)
            if vmap.on_unmapped == "default" and vmap.default is not None:
                targets["(default)"] = vmap.default
            for source, target in targets.items():
                if target is not None:
                    candidates.append(
                        (f"value map '{map_name}' maps {source} → {target!r}", target)
                    )
    for what, value in candidates:
        reason = refused(value)
        if reason is not None:
            plain = reason.startswith(("not ", "sent as "))
            messages.append(f"{what}, which is {reason}" if plain else f"{what}: {reason}")
    return messages


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def document_lines(directory: Path) -> Locate:
    """A `Locate` for the metadata in `directory`: the file and line of a path in a document."""
    nodes: dict[tuple[str, str, str], tuple[str, yaml.Node]] = {}
    for file in sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml")):
        try:
            documents = list(yaml.compose_all(file.read_text(encoding="utf-8")))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        for node in documents:
            if not isinstance(node, yaml.MappingNode):
                continue
            values = {k.value: v for k, v in node.value if isinstance(v, yaml.ScalarNode)}
            kind, name, owner = (values.get(k) for k in ("kind", "name", "tenant"))
            if kind is not None and kind.value in ("workflow", "connection") and name and owner:
                key = (kind.value, owner.value, name.value)
                nodes[key] = (str(file.relative_to(directory)), node)

    def locate(
        doc: WorkflowSpec | ConnectionSpec, path: tuple[str | int, ...]
    ) -> tuple[str, int | None]:
        found = nodes.get((_kind(doc), doc.tenant, doc.name))
        if found is None:
            return f"{_kind(doc)} {doc.tenant}/{doc.name}", None
        file, node = found
        line = node.start_mark.line + 1
        current: yaml.Node | None = node
        for key in path:
            if isinstance(current, yaml.MappingNode):
                current = next((v for k, v in current.value if k.value == key), None)
            elif isinstance(current, yaml.SequenceNode) and isinstance(key, int):
                current = current.value[key] if key < len(current.value) else None
            else:
                current = None
            if current is None:
                break
            line = current.start_mark.line + 1
        return file, line

    return locate
