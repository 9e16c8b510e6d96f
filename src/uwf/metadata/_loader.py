"""Load a metadata directory and report every problem with file, line, path and a hint."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from uwf.connectors import ConnectorSpec, NetworkPolicy, builtin_connectors
from uwf.errors import ExpressionError, MetadataError
from uwf.mapping import compile_expression
from uwf.metadata._bundle import MetadataBundle, _name
from uwf.metadata._models import (
    AddCommentStep,
    ApiTokenAuth,
    AssignStep,
    BasicAuth,
    BearerAuth,
    CallWorkflowStep,
    ConnectionSpec,
    ConnectorDocument,
    CreateRecordStep,
    Document,
    ForEachStep,
    LookupStep,
    SwitchStep,
    TenantSpec,
    TriggerSpec,
    UpdateRecordStep,
    ValueMapSpec,
    WorkflowSpec,
)
from uwf.metadata._workflow_checks import check_call_cycles, check_value, check_workflow
from uwf.metadata._workflow_checks import known as _known

__all__ = ["Problem", "check_bundle", "load_directory", "validate_directory"]

_DOCUMENT = TypeAdapter(Document)
_MODELS_BY_TAG: dict[str, type[BaseModel]] = {
    "tenant": TenantSpec,
    "connection": ConnectionSpec,
    "workflow": WorkflowSpec,
    "value_map": ValueMapSpec,
    "connector": ConnectorDocument,
    "trigger": TriggerSpec,
    "lookup": LookupStep,
    "update_record": UpdateRecordStep,
    "create_record": CreateRecordStep,
    "add_comment": AddCommentStep,
    "assign": AssignStep,
    "switch": SwitchStep,
    "for_each": ForEachStep,
    "call_workflow": CallWorkflowStep,
    "api_token": ApiTokenAuth,
    "basic": BasicAuth,
    "bearer": BearerAuth,
}
_INTERPOLATION = re.compile(r"\$\{([a-z_]+):([^}]*)\}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the metadata, located as precisely as we can."""

    file: str
    path: str
    message: str
    hint: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.path or '(document)'}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True)
class _Origin:
    file: str
    node: yaml.Node | None

    def line(self, path: tuple[str | int, ...]) -> int | None:
        node = self.node
        best = node.start_mark.line + 1 if node is not None else None
        for key in path:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                node = node.value[key] if key < len(node.value) else None
            else:
                node = None
            if node is None:
                break
            best = node.start_mark.line + 1
        return best


def _format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_directory(directory: Path) -> tuple[MetadataBundle | None, list[Problem]]:
    """Read every `*.yaml`/`*.yml` below `directory`; return the bundle or the problems."""
    if not directory.is_dir():
        return None, [Problem(str(directory), "", "not a directory")]
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        return None, [Problem(str(directory), "", "no .yaml or .yml files found")]
    problems: list[Problem] = []
    documents: list[Any] = []
    origins: dict[int, _Origin] = {}
    for file in files:
        name = str(file.relative_to(directory))
        try:
            text = file.read_text(encoding="utf-8")
            nodes = list(yaml.compose_all(text))
            datas = list(yaml.safe_load_all(text))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            context = getattr(exc, "context", None)
            message = f"not valid YAML: {reason}" + (f" ({context})" if context else "")
            problems.append(Problem(name, "", message, line=line))
            continue
        for node, data in zip(nodes, datas, strict=True):
            if data is None:
                continue
            origin = _Origin(name, node)
            doc = _parse_document(data, origin, problems)
            if doc is not None:
                origins[id(doc)] = origin
                documents.append(doc)
    if problems:
        return None, problems
    bundle = MetadataBundle(tuple(documents))
    problems = check_bundle(bundle, lambda doc: origins.get(id(doc)))
    problems.sort(key=lambda p: (p.file, p.line or 0))
    return (None, problems) if problems else (bundle, [])


def load_directory(directory: Path) -> MetadataBundle:
    """Like `validate_directory`, but raise `MetadataError` listing every problem."""
    bundle, problems = validate_directory(directory)
    if bundle is None:
        raise MetadataError(
            f"{len(problems)} problem(s) in {directory}:\n" + "\n".join(map(str, problems)),
            problems=problems,
        )
    return bundle


def _parse_document(data: Any, origin: _Origin, problems: list[Problem]) -> Any:
    if not isinstance(data, dict):
        problems.append(Problem(origin.file, "", "a document must be a mapping with a `kind`"))
        return None
    if "kind" not in data:
        problems.append(
            Problem(origin.file, "", "missing `kind`", _known(_DOCUMENT_KINDS), origin.line(()))
        )
        return None
    try:
        return _DOCUMENT.validate_python(data)
    except ValidationError as exc:
        for error in exc.errors():
            path = _clean_location(data, error["loc"])
            if error["type"] == "union_tag_invalid":
                path = (*path, str(error.get("ctx", {}).get("discriminator", "")).strip("'"))
            problems.append(
                Problem(
                    origin.file,
                    _format_path(path),
                    _message(error),
                    _hint(data, path, error),
                    origin.line(path),
                )
            )
        return None


_DOCUMENT_KINDS = ("tenant", "connection", "workflow", "value_map", "connector", "trigger")


def _clean_location(data: Any, loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-tag entries, so the path matches the YAML the user wrote."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if (
            isinstance(node, dict)
            and part not in node
            and part
            in (
                node.get("kind"),
                node.get("type"),
            )
        ):
            continue
        path.append(part)
        node = (
            node.get(part)
            if isinstance(node, dict)
            else (
                node[part]
                if isinstance(node, list) and isinstance(part, int) and part < len(node)
                else None
            )
        )
    return tuple(path)


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"unknown {ctx.get('discriminator', 'tag').strip(chr(39))} {ctx.get('tag')!r}"
    if kind == "missing":
        return "required field is missing"
    return str(error["msg"])


def _hint(data: Any, path: tuple[str | int, ...], error: Any) -> str | None:
    kind = error["type"]
    if kind == "union_tag_invalid":
        return f"expected one of {error.get('ctx', {}).get('expected_tags')}"
    if kind in ("extra_forbidden", "missing"):
        parent: Any = data
        for part in path[:-1]:
            if isinstance(parent, dict):
                parent = parent.get(part)
            elif isinstance(parent, list) and isinstance(part, int) and part < len(parent):
                parent = parent[part]
            else:
                parent = None
        tag = parent.get("kind") or parent.get("type") if isinstance(parent, dict) else None
        model = _MODELS_BY_TAG.get(tag) if isinstance(tag, str) else None
        if model is not None:
            return "fields: " + ", ".join(f.alias or n for n, f in model.model_fields.items())
    return None


def check_bundle(bundle: MetadataBundle, origin_of: Any = lambda doc: None) -> list[Problem]:
    """Cross-document checks: references resolve, expressions compile, schemas are schemas."""
    problems: list[Problem] = []

    def report(
        doc: Any, path: tuple[str | int, ...], message: str, hint: str | None = None
    ) -> None:
        origin = origin_of(doc)
        file = origin.file if origin else f"{doc.kind} {_name(doc)}"
        line = origin.line(path) if origin else None
        problems.append(Problem(file, _format_path(path), message, hint, line))

    seen: dict[tuple[str, ...], Any] = {}
    for doc in bundle.documents:
        key: tuple[str, ...] = (doc.kind, _name(doc))
        if doc.kind in ("workflow", "value_map", "trigger"):
            key = (doc.kind, getattr(doc, "tenant", None) or "", _name(doc))
        if key in seen:
            field = "id" if doc.kind == "connector" else "name"
            report(doc, (field,), f"duplicate {doc.kind} '{_name(doc)}'")
        seen[key] = doc

    connectors = bundle.connectors
    for doc in bundle.documents:
        if isinstance(doc, ConnectorDocument) and doc.id in builtin_connectors():
            report(doc, ("id",), f"connector '{doc.id}' is built in; give yours another id")
    for conn in bundle.connections.values():
        if conn.tenant not in bundle.tenants:
            report(conn, ("tenant",), f"unknown tenant '{conn.tenant}'", _known(bundle.tenants))
        connector = connectors.get(conn.connector)
        if connector is None:
            report(
                conn, ("connector",), f"unknown connector '{conn.connector}'", _known(connectors)
            )
        elif conn.auth.type not in connector.auth:
            report(
                conn,
                ("auth", "type"),
                f"connector '{conn.connector}' does not support auth '{conn.auth.type}'",
                _known(connector.auth),
            )
        if connector is not None:
            _check_connection_fields(conn, connector, report)
        for scheme, value in _INTERPOLATION.findall(conn.base_url):
            if scheme not in ("sandbox", "env"):
                report(
                    conn,
                    ("base_url",),
                    f"unknown interpolation ${{{scheme}:…}}",
                    "known: ${sandbox:<crm>}, ${env:<NAME>}",
                )
            elif scheme == "sandbox" and value not in connectors:
                report(conn, ("base_url",), f"no built-in sandbox '{value}'", _known(connectors))
        bare = _INTERPOLATION.sub("http://x", conn.base_url)
        if not bare.startswith(("http://", "https://")):
            report(conn, ("base_url",), "base_url must be an http(s) URL")
        _check_outbound(conn, report)

    for vmap in (d for d in bundle.documents if isinstance(d, ValueMapSpec)):
        if vmap.tenant is not None and vmap.tenant not in bundle.tenants:
            report(vmap, ("tenant",), f"unknown tenant '{vmap.tenant}'", _known(bundle.tenants))

    for wf in bundle.workflows.values():
        check_workflow(bundle, wf, report)
    check_call_cycles(bundle, report)
    _check_triggers(bundle, report)
    return problems


def _check_connection_fields(conn: ConnectionSpec, connector: ConnectorSpec, report: Any) -> None:
    """Custom fields must be new names, mappings must replace existing ones, on real objects."""
    for key, fields_by_object in (
        ("custom_fields", conn.custom_fields),
        ("field_mappings", conn.field_mappings),
    ):
        for obj_name, fields in fields_by_object.items():
            obj = connector.objects.get(obj_name)
            if obj is None:
                report(
                    conn,
                    (key, obj_name),
                    f"connector '{connector.id}' has no object '{obj_name}'",
                    _known(connector.objects),
                )
                continue
            known = set(obj.fields) | set(obj.record)
            for name, spec in fields.items():
                if key == "custom_fields" and name in known:
                    report(
                        conn,
                        (key, obj_name, name),
                        f"'{name}' is already a field of '{obj_name}' in connector "
                        f"'{connector.id}'; change its mapping under field_mappings",
                    )
                elif key == "field_mappings" and name not in known:
                    report(
                        conn,
                        (key, obj_name, name),
                        f"'{obj_name}' has no field '{name}' in connector '{connector.id}'; "
                        "add a new one under custom_fields",
                        _known(sorted(known)),
                    )
                if spec.read is not None:
                    try:
                        compile_expression(spec.read)
                    except ExpressionError as exc:
                        report(conn, (key, obj_name, name, "read"), exc.message)


def _check_outbound(conn: ConnectionSpec, report: Any) -> None:
    """The static half of the SSRF guard: scheme and literal addresses, where no `${…}` hides
    them; the connector runtime checks every resolved address again at connect time."""
    policy = outbound_policy()
    urls = [("base_url", conn.base_url), ("token_url", getattr(conn.auth, "token_url", None))]
    for field, url in urls:
        if not url or _INTERPOLATION.search(url.split("/", 3)[2] if "//" in url else url):
            continue
        problem = policy.url_problem(url)
        if problem is not None:
            path = (field,) if field == "base_url" else ("auth", field)
            report(conn, path, problem, "list the host in UWF_ALLOWED_HOSTS if it is intended")


def outbound_policy() -> NetworkPolicy:
    """The deployment's network policy, as `uwf serve` would apply it (UWF_ALLOWED_HOSTS…)."""
    allow_private = os.environ.get("UWF_ALLOW_PRIVATE_NETWORKS", "").lower() in ("1", "true", "yes")
    return NetworkPolicy.parse(os.environ.get("UWF_ALLOWED_HOSTS", ""), allow_private=allow_private)


def _check_triggers(bundle: MetadataBundle, report: Any) -> None:
    """A trigger names its tenant's connection and workflow; its expressions compile; the
    triggers of one endpoint agree on how deliveries are verified (they share one URL)."""
    first_of_endpoint: dict[tuple[str, str], TriggerSpec] = {}
    # By name, the order the endpoint tries them in: the first one's scheme is the endpoint's.
    triggers = sorted((d for d in bundle.documents if isinstance(d, TriggerSpec)), key=_name)
    for trigger in triggers:
        if trigger.tenant not in bundle.tenants:
            report(
                trigger, ("tenant",), f"unknown tenant '{trigger.tenant}'", _known(bundle.tenants)
            )
            continue  # its connection and workflow cannot be found either: one problem is enough
        conn = bundle.connections.get(trigger.connection)
        if conn is None or conn.tenant != trigger.tenant:
            report(
                trigger,
                ("connection",),
                f"unknown connection '{trigger.connection}' for tenant '{trigger.tenant}'",
                _known(c.name for c in bundle.connections.values() if c.tenant == trigger.tenant),
            )
        if bundle.workflow(trigger.tenant, trigger.workflow) is None:
            report(
                trigger,
                ("workflow",),
                f"unknown workflow '{trigger.workflow}' for tenant '{trigger.tenant}'",
                _known(bundle.workflow_names(trigger.tenant)),
            )
        value_maps = bundle.value_maps_for(trigger.tenant)
        if trigger.event is not None:
            check_value(trigger, ("event",), trigger.event, [], value_maps, report, condition=True)
        check_value(trigger, ("input",), trigger.input, [], value_maps, report)
        endpoint = (trigger.tenant, trigger.connection)
        first = first_of_endpoint.setdefault(endpoint, trigger)
        for field in ("scheme", "secret", "organization_id"):
            if getattr(trigger, field) != getattr(first, field):
                report(
                    trigger,
                    (field,),
                    f"differs from trigger '{first.name}' on the same endpoint "
                    f"/v1/webhooks/{trigger.tenant}/{trigger.connection}",
                    "triggers of one connection share one URL, so they share scheme, secret "
                    "and organization_id",
                )
