"""Checks of a workflow's steps: nested blocks, expressions, step references, value maps,
sub-workflow calls (with cycle detection) and the length of the ledger keys they make."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import jsonschema

from uwf.errors import ExpressionError
from uwf.mapping import compile_expression, compile_value, referenced_value_maps
from uwf.metadata._bundle import MetadataBundle
from uwf.metadata._models import (
    MAX_STEP_KEY_LENGTH,
    STEP_OPERATION,
    CallWorkflowStep,
    ConnectionSpec,
    ForEachStep,
    SwitchStep,
    TriggerSpec,
    WorkflowSpec,
)

__all__ = ["check_call_cycles", "check_value", "check_workflow", "known", "max_step_key_length"]

_STEP_REFERENCE = re.compile(r"(?<![\w.])steps\.([a-z_][a-z0-9_]*)")
_VALUE_MAP_CALL = re.compile(r"value_map\(\s*'([^']+)'")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`[^`]*`|\"(?:[^\"\\]|\\.)*\"")


def known(names: Iterable[str]) -> str:
    listed = sorted(set(names))
    return "known: " + (", ".join(listed) if listed else "none")


def check_workflow(bundle: MetadataBundle, wf: WorkflowSpec, report: Any) -> None:
    if wf.tenant not in bundle.tenants:
        report(wf, ("tenant",), f"unknown tenant '{wf.tenant}'", known(bundle.tenants))
    try:
        jsonschema.Draft202012Validator.check_schema(wf.input_schema)
    except jsonschema.SchemaError as exc:
        path = ("input_schema", *exc.path)
        report(wf, path, f"not a valid JSON Schema: {exc.message}")
    checker = _StepChecker(bundle, wf, report)
    top = checker.walk(wf.steps, ("steps",), [], "", frozenset())
    if wf.output is not None:
        check_value(wf, ("output",), wf.output, top, checker.value_maps, report)
    if wf.on_failure:
        # Compensation sees what the main steps left (null for those that did not run).
        checker.walk(
            wf.on_failure,
            ("on_failure",),
            top,
            "on_failure.",
            frozenset({"error"}),
            compensating=True,
        )
    too_long = max_step_key_length(bundle, wf)
    if too_long > MAX_STEP_KEY_LENGTH:
        report(
            wf,
            ("steps",),
            f"the longest step key of this workflow (nested ids joined with '.', loop "
            f"indexes in []) has {too_long} characters; the limit is {MAX_STEP_KEY_LENGTH}",
            "use shorter step ids or nest less deeply",
        )


_RESERVED_NAMES = frozenset({"input", "steps", "execution", "error", "index"})


class _StepChecker:
    """Checks a workflow's steps, descending into switch cases, loops and sub-workflow calls."""

    def __init__(self, bundle: MetadataBundle, wf: WorkflowSpec, report: Any) -> None:
        self.bundle = bundle
        self.wf = wf
        self.report = report
        self.value_maps = bundle.value_maps_for_workflow(wf)
        self.tenant_connections = [
            c.name for c in bundle.connections.values() if c.tenant == wf.tenant
        ]
        self.default_connection = self.connection_of(wf.connection, ("connection",))

    def connection_of(self, name: str, path: tuple[str | int, ...]) -> ConnectionSpec | None:
        conn = self.bundle.connections.get(name)
        if conn is None or conn.tenant != self.wf.tenant:
            self.report(
                self.wf,
                path,
                f"unknown connection '{name}' for tenant '{self.wf.tenant}'",
                known(self.tenant_connections),
            )
            return None
        return conn

    def walk(
        self,
        steps: list[Any],
        path: tuple[str | int, ...],
        visible: list[str],
        prefix: str,
        names: frozenset[str],
        *,
        compensating: bool = False,
    ) -> list[str]:
        """Check `steps`; returns the step ids visible after them (the block's own ids).

        `compensating`: the steps are (inside) compensation, which has no compensation of its
        own: a failing compensation step ends the compensation.
        """
        wf, report = self.wf, self.report
        earlier = list(visible)
        for index, step in enumerate(steps):
            base: tuple[str | int, ...] = (*path, index)
            self.compensation(step, base, earlier, prefix, names, compensating=compensating)
            if step.id in earlier:
                report(wf, (*base, "id"), f"duplicate step id '{step.id}'")
            if not prefix and step.id == "on_failure":
                report(wf, (*base, "id"), "step id 'on_failure' is reserved for compensation")
            if step.when is not None:
                self.value(step, (*base, "when"), step.when, earlier, condition=True)
            if isinstance(step, SwitchStep):
                for number, case in enumerate(step.cases):
                    here = (*base, "cases", number)
                    self.value(step, (*here, "when"), case.when, earlier, condition=True)
                    self.walk(
                        case.steps,
                        (*here, "steps"),
                        earlier,
                        f"{prefix}{step.id}.case{number}.",
                        names,
                        compensating=compensating,
                    )
                if step.default:
                    self.walk(
                        step.default,
                        (*base, "default"),
                        earlier,
                        f"{prefix}{step.id}.default.",
                        names,
                        compensating=compensating,
                    )
            elif isinstance(step, ForEachStep):
                self.value(step, (*base, "items"), step.items, earlier, condition=True)
                if step.as_ in _RESERVED_NAMES or step.as_ in names:
                    report(
                        wf,
                        (*base, "as"),
                        f"'{step.as_}' is already a name in expressions here; choose another",
                        "taken: " + ", ".join(sorted(_RESERVED_NAMES | names)),
                    )
                self.walk(
                    step.steps,
                    (*base, "steps"),
                    earlier,
                    f"{prefix}{step.id}[{step.max_items - 1}].",
                    names | {step.as_},
                    compensating=compensating,
                )
            elif isinstance(step, CallWorkflowStep):
                called = self.bundle.workflow(wf.tenant, step.workflow)
                if called is None:
                    report(
                        wf,
                        (*base, "workflow"),
                        f"unknown workflow '{step.workflow}' for tenant '{wf.tenant}'",
                        known(self.bundle.workflow_names(wf.tenant)),
                    )
                self.value(step, (*base, "input"), step.input, earlier)
            else:
                self.action(step, base, earlier)
            earlier.append(step.id)
        return earlier

    def compensation(
        self,
        step: Any,
        base: tuple[str | int, ...],
        earlier: list[str],
        prefix: str,
        names: frozenset[str],
        *,
        compensating: bool,
    ) -> None:
        """A step's own `on_failure`: its steps see what the step saw, plus `error`."""
        if not step.on_failure:
            return
        if compensating:
            self.report(
                self.wf,
                (*base, "on_failure"),
                f"step '{step.id}' is a compensation step and cannot have its own on_failure",
                "a failing compensation step ends the compensation; move these steps into "
                "the same on_failure list",
            )
            return
        self.walk(
            step.on_failure,
            (*base, "on_failure"),
            earlier,
            f"{prefix}{step.id}.on_failure.",
            names | {"error"},
            compensating=True,
        )

    def value(
        self,
        step: Any,
        path: tuple[str | int, ...],
        value: Any,
        earlier: list[str],
        *,
        condition: bool = False,
    ) -> None:
        check_value(
            self.wf, path, value, earlier, self.value_maps, self.report, condition=condition
        )

    def action(self, step: Any, base: tuple[str | int, ...], earlier: list[str]) -> None:
        wf, report = self.wf, self.report
        conn = (
            self.connection_of(step.connection, (*base, "connection"))
            if step.connection
            else self.default_connection
        )
        if conn is not None:
            connector = self.bundle.connectors.get(conn.connector)
            if connector is not None:
                obj = connector.objects.get(step.object)
                op = STEP_OPERATION[step.type]
                if obj is None:
                    report(
                        wf,
                        (*base, "object"),
                        f"connector '{connector.id}' has no object '{step.object}'",
                        known(connector.objects),
                    )
                elif op not in obj.operations:
                    report(
                        wf,
                        (*base, "type"),
                        f"object '{step.object}' of connector '{connector.id}' does not "
                        f"support {step.type}",
                        known(obj.operations),
                    )
        for name, value in step.model_dump(exclude_none=True).items():
            if name in (
                "id",
                "type",
                "object",
                "connection",
                "retry",
                "required",
                "public",
                "when",
                "on_failure",
            ):
                continue
            if name == "output":  # named JMESPath extractions over the step's result
                for key, expr in value.items():
                    check_value(
                        wf, (*base, name, key), expr, [], self.value_maps, report, condition=True
                    )
                continue
            self.value(step, (*base, name), value, earlier)


def _children(steps: list[Any]) -> Iterator[tuple[str, list[Any]]]:
    """Each nested block of `steps` with the key prefix its steps get (loops: their last
    index), a step's own `on_failure` included."""
    for step in steps:
        if isinstance(step, SwitchStep):
            for number, case in enumerate(step.cases):
                yield f"{step.id}.case{number}.", case.steps
            if step.default:
                yield f"{step.id}.default.", step.default
        elif isinstance(step, ForEachStep):
            yield f"{step.id}[{step.max_items - 1}].", step.steps
        if step.on_failure:
            yield f"{step.id}.on_failure.", step.on_failure


def _called(steps: list[Any]) -> Iterator[tuple[str, CallWorkflowStep]]:
    """Every `call_workflow` in `steps`, nested ones included, with its key prefix."""
    for step in steps:
        if isinstance(step, CallWorkflowStep):
            yield "", step
    for prefix, block in _children(steps):
        for inner, call in _called(block):
            yield prefix + inner, call


def max_step_key_length(
    bundle: MetadataBundle, wf: WorkflowSpec, calling: frozenset[str] = frozenset()
) -> int:
    """The longest ledger key `wf` can produce (loops at their last index), through calls."""

    def longest(steps: list[Any], prefix: str) -> int:
        best = 0
        for step in steps:
            best = max(best, len(prefix) + len(step.id))
        for inner, block in _children(steps):
            best = max(best, longest(block, prefix + inner))
        for inner, call in _called(steps):
            called = bundle.workflow(wf.tenant, call.workflow)
            if called is not None and called.name not in calling:
                sub = max_step_key_length(bundle, called, calling | {wf.name})
                best = max(best, len(prefix) + len(inner) + len(call.id) + 1 + sub)
        return best

    return max(longest(wf.steps, ""), longest(wf.on_failure or [], "on_failure."))


def check_call_cycles(bundle: MetadataBundle, report: Any) -> None:
    """A workflow may not call itself, directly or through others: that would never end."""
    for wf in bundle.workflows.values():
        for name in sorted(
            {call.workflow for _, call in _called([*wf.steps, *(wf.on_failure or [])])}
        ):
            cycle = _path_back(bundle, wf, name, (wf.name,))
            if cycle is not None:
                report(
                    wf,
                    ("steps",),
                    "call_workflow cycle: " + " → ".join((*cycle, wf.name)),
                    "a workflow may not call itself, directly or through others",
                )
                break


def _path_back(
    bundle: MetadataBundle, wf: WorkflowSpec, name: str, trail: tuple[str, ...]
) -> tuple[str, ...] | None:
    """The chain of calls from `wf` through `name` back to `wf`, if there is one."""
    if name == wf.name:
        return trail
    called = bundle.workflow(wf.tenant, name)
    if name in trail or called is None:
        return None
    for _, call in _called([*called.steps, *(called.on_failure or [])]):
        found = _path_back(bundle, wf, call.workflow, (*trail, name))
        if found is not None:
            return found
    return None


def check_value(
    wf: WorkflowSpec | TriggerSpec,
    path: tuple[str | int, ...],
    value: Any,
    earlier: list[str],
    value_maps: dict[str, Any],
    report: Any,
    *,
    condition: bool = False,
) -> None:
    if isinstance(value, dict) and not condition:
        for key, member in value.items():
            check_value(wf, (*path, key), member, earlier, value_maps, report)
        return
    try:
        if condition:
            compiled_sources = [compile_expression(value).source]
            names = set(_VALUE_MAP_CALL.findall(compiled_sources[0]))
        else:
            compiled = compile_value(value)
            compiled_sources = [e.source for e in compiled.expressions()]
            names = referenced_value_maps(compiled)
    except ExpressionError as exc:
        report(wf, path, exc.message)
        return
    for source in compiled_sources:
        for ref in _STEP_REFERENCE.findall(_QUOTED.sub("''", source)):
            if ref not in earlier:
                report(
                    wf,
                    path,
                    f"`steps.{ref}` does not name an earlier step",
                    "earlier steps: " + (", ".join(earlier) or "none"),
                )
    for name in sorted(names - set(value_maps)):
        report(wf, path, f"unknown value map '{name}'", known(value_maps))


# -- triggers -----------------------------------------------------------------------------------
