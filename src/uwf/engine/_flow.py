"""Workflow logic as data: blocks of steps, `switch`, `for_each`, `call_workflow`, `on_failure`
(the workflow's and a step's own).

One `Walk` carries an execution through its workflow for one claim. Every step, however deeply
nested, has a ledger key that depends only on where it sits, never on when it ran:

| where | key |
|---|---|
| a top-level step | `note` |
| in case 0 of switch `branch` (or its default) | `branch.case0.note`, `branch.default.note` |
| in round 3 of for_each `loop` | `loop[3].note` |
| in the workflow called by step `sub` | `sub.note` |
| a compensation step | `on_failure.note` |
| in step `note`'s own `on_failure` | `note.on_failure.reopen`, `loop[3].note.on_failure.x` |

The step key sent to the CRM (idempotency key, correlation marker) is `<execution id>:<key>`,
so a resumed execution finds, verifies or skips exactly the writes it made before.

A control step (switch, for_each, call_workflow) and compensation write a `running` entry
when they start that records what was decided — the chosen case, the list being iterated, the
called workflow's input, the failure being compensated — and a resumed execution follows that
record instead of deciding again (an expression using `now()` could decide differently).
The entry is written together with the first entry of a step inside, or earlier, so no inner
step is ever in the ledger without the decision that led to it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema

from uwf.errors import ExpressionError
from uwf.mapping import (
    CompiledValue,
    Expression,
    ValueMap,
    compile_expression,
    compile_value,
    is_truthy,
)
from uwf.metadata import (
    CallWorkflowStep,
    ForEachStep,
    MetadataBundle,
    StepSpec,
    SwitchStep,
    WorkflowSpec,
)
from uwf.store import Execution, StepRun, utcnow

if TYPE_CHECKING:
    from uwf.engine._interpreter import Interpreter

__all__ = ["Outcome", "Walk", "compiled_expression", "compiled_value"]

_CONTINUE = ("succeeded", "skipped")
_FAILED = ("failed", "dead")


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # final status, or "rescheduled"
    output: Any = None
    error: dict[str, Any] | None = None


@dataclass
class Walk:
    """One claim's pass through a workflow: the ledger read back and the positions handed out."""

    engine: Interpreter
    execution: Execution
    owner: str
    bundle: MetadataBundle
    ledger: dict[str, StepRun]
    position: int = field(default=0)

    def _next_position(self) -> int:
        self.position += 1
        return self.position - 1

    # -- the workflow -------------------------------------------------------------------------

    async def workflow(self, workflow: WorkflowSpec) -> Outcome:
        value_maps = self.bundle.value_maps_for_workflow(workflow)
        context = self._context(workflow, self.execution.input)
        compensation = self.ledger.get("on_failure")
        if compensation is None:
            refused = self._preflight(workflow, context, value_maps)
            if refused is not None:
                return refused  # nothing started, so there is nothing to compensate either
            outcome = await self.steps(workflow, workflow.steps, "", context, value_maps)
            if outcome is None:
                try:
                    output = _workflow_output(workflow, context, value_maps)
                except ExpressionError as exc:
                    outcome = Outcome(
                        "failed", error={"type": "expression", "message": exc.message}
                    )
                else:
                    return Outcome("succeeded", output=output)
            if outcome.status not in _FAILED or not workflow.on_failure:
                return outcome
        else:
            self.position = compensation.position + 1
            for key, run in self.ledger.items():
                if _is_top_level(key) and run.status in _CONTINUE:
                    context["steps"][key] = run.output
            outcome = _recorded_failure(compensation)
        assert workflow.on_failure is not None
        return await self._compensate(
            workflow, workflow.on_failure, "on_failure", outcome, compensation, context, value_maps
        )

    async def _compensate(
        self,
        workflow: WorkflowSpec,
        block: list[StepSpec],
        key: str,
        outcome: Outcome,
        run: StepRun | None,
        context: dict[str, Any],
        value_maps: dict[str, ValueMap],
    ) -> Outcome:
        """Run compensation `block` for the failure `outcome`; `key` is `on_failure` for the
        workflow's, `<step key>.on_failure` for a step's. `run` is its ledger entry on resume.

        Returns the failure with how its compensation went (`compensation` for the workflow's,
        `step_compensation` for a step's), or `rescheduled`.
        """
        if run is None:
            run = StepRun(
                step_id=key,
                position=self._next_position(),
                status="running",
                request={"status": outcome.status, "error": outcome.error},
            )
            # Written at once: from here on a resumed execution compensates, it does not retry
            # the step that failed.
            await self.engine._save(self.execution.id, self.owner, run)
        summary_key = "compensation" if key == "on_failure" else "step_compensation"
        if run.status != "running":
            return _compensated(outcome, run, summary_key)
        inner = {**context, "steps": dict(context["steps"]), "error": outcome.error}
        result = await self.steps(workflow, block, f"{key}.", inner, value_maps, cancellable=False)
        if result is not None and result.status == "rescheduled":
            return result
        run.finished_at = utcnow()
        if result is None:
            run.status = "succeeded"
            run.output = {s.id: inner["steps"].get(s.id) for s in block}
        else:
            run.status, run.error = "failed", result.error
        self.engine._defer(self.execution.id, run)
        return _compensated(outcome, run, summary_key)

    def _context(self, workflow: WorkflowSpec, data: Any) -> dict[str, Any]:
        return {
            "input": data,
            "steps": {},
            "execution": {
                "id": self.execution.id,
                "tenant": self.execution.tenant,
                "workflow": self.execution.workflow,
            },
        }

    def _preflight(
        self, workflow: WorkflowSpec, context: dict[str, Any], value_maps: dict[str, ValueMap]
    ) -> Outcome | None:
        """A top-level loop over the input that is over its bound fails before anything is sent."""
        if self.ledger:
            return None
        for step in workflow.steps:
            if not isinstance(step, ForEachStep) or "steps" in step.items + (step.when or ""):
                continue
            try:
                if step.when is not None and not is_truthy(
                    _expression(step.when).evaluate(context, value_maps)
                ):
                    continue
                items = _items(step, context, value_maps)
            except ExpressionError:
                continue  # reported with its step, when the loop is reached
            if len(items) > step.max_items:
                return _over_bound(step, step.id, len(items), before_any=True)
        return None

    # -- blocks -------------------------------------------------------------------------------

    async def steps(
        self,
        workflow: WorkflowSpec,
        steps: list[StepSpec],
        prefix: str,
        context: dict[str, Any],
        value_maps: dict[str, ValueMap],
        *,
        cancellable: bool = True,
    ) -> Outcome | None:
        """Run a block in order. Returns None when it is done, or how the execution ends."""
        for step in steps:
            key = prefix + step.id
            position = self._next_position()
            run = self.ledger.get(key)
            if run is not None and run.status in _CONTINUE:
                context["steps"][step.id] = run.output
                continue
            compensation = self.ledger.get(f"{key}.on_failure") if step.on_failure else None
            if step.on_failure and compensation is not None:
                # The step failed before a restart and its compensation had begun: go on with
                # it, do not run the step again.
                compensation.position = self._next_position()
                return await self._compensate(
                    workflow,
                    step.on_failure,
                    f"{key}.on_failure",
                    _recorded_failure(compensation),
                    compensation,
                    context,
                    value_maps,
                )
            if cancellable and self.execution.id in self.engine._cancel_requested:
                # Between steps: what was done stays done and is shown; nothing more is sent.
                return Outcome(
                    "cancelled",
                    error={
                        "type": "cancelled",
                        "step": key,
                        "message": f"cancelled on request before step '{key}'",
                    },
                )
            if isinstance(step, SwitchStep | ForEachStep | CallWorkflowStep):
                outcome = await self._control(
                    workflow, step, key, position, run, context, value_maps
                )
            else:
                outcome = await self.engine._step(
                    self.execution,
                    self.owner,
                    self.bundle,
                    workflow,
                    step,
                    key,
                    position,
                    run,
                    context,
                    value_maps,
                )
            if outcome is not None and step.on_failure and outcome.status in _FAILED:
                return await self._compensate(
                    workflow,
                    step.on_failure,
                    f"{key}.on_failure",
                    outcome,
                    None,
                    context,
                    value_maps,
                )
            if outcome is not None:
                return outcome
        return None

    async def _control(
        self,
        workflow: WorkflowSpec,
        step: SwitchStep | ForEachStep | CallWorkflowStep,
        key: str,
        position: int,
        run: StepRun | None,
        context: dict[str, Any],
        value_maps: dict[str, ValueMap],
    ) -> Outcome | None:
        try:
            if run is None or run.status != "running":
                if step.when is not None and not is_truthy(
                    _expression(step.when).evaluate(context, value_maps)
                ):
                    skipped = StepRun(key, position, "skipped", finished_at=utcnow())
                    self.engine._defer(self.execution.id, skipped)
                    context["steps"][step.id] = None
                    return None
                decision = self._decide(step, context, value_maps)
                run = StepRun(key, position, "running", request=decision)
                count = len(decision.get("items") or [])
                if isinstance(step, ForEachStep) and count > step.max_items:
                    return await self._fail_control(
                        run, _over_bound(step, key, count, before_any=False)
                    )
                self.engine._defer(self.execution.id, run)
        except ExpressionError as exc:
            failed = StepRun(key, position, "failed")
            return await self._fail_control(
                failed,
                Outcome(
                    "failed", error={"type": "expression", "message": exc.message, "step": key}
                ),
            )
        run.position = position
        decision = run.request or {}
        if isinstance(step, SwitchStep):
            outcome, output = await self._switch(workflow, step, key, decision, context, value_maps)
        elif isinstance(step, ForEachStep):
            outcome, output = await self._for_each(
                workflow, step, key, decision, context, value_maps
            )
        else:
            outcome, output = await self._call(step, key, decision, context)
        if outcome is not None:
            return outcome
        run.status, run.output, run.finished_at = "succeeded", output, utcnow()
        self.engine._defer(self.execution.id, run)
        context["steps"][step.id] = output
        return None

    def _decide(
        self,
        step: SwitchStep | ForEachStep | CallWorkflowStep,
        context: dict[str, Any],
        value_maps: dict[str, ValueMap],
    ) -> dict[str, Any]:
        """What a control step does this time, recorded so that a resume does the same."""
        if isinstance(step, SwitchStep):
            for number, case in enumerate(step.cases):
                if is_truthy(_expression(case.when).evaluate(context, value_maps)):
                    return {"case": f"case{number}"}
            return {"case": "default" if step.default else None}
        if isinstance(step, ForEachStep):
            return {"items": _items(step, context, value_maps)}
        data = _compiled_value(step.input).evaluate(context, value_maps)
        return {"workflow": step.workflow, "input": data}

    async def _fail_control(self, run: StepRun, outcome: Outcome) -> Outcome:
        run.status, run.error, run.finished_at = "failed", outcome.error, utcnow()
        await self.engine._save(self.execution.id, self.owner, run)
        return outcome

    # -- control steps ------------------------------------------------------------------------

    async def _switch(
        self,
        workflow: WorkflowSpec,
        step: SwitchStep,
        key: str,
        decision: dict[str, Any],
        context: dict[str, Any],
        value_maps: dict[str, ValueMap],
    ) -> tuple[Outcome | None, Any]:
        label = decision.get("case")
        if label is None:
            return None, {"case": None, "steps": {}}
        block = step.default if label == "default" else step.cases[int(label[4:])].steps
        inner = {**context, "steps": dict(context["steps"])}
        outcome = await self.steps(workflow, block or [], f"{key}.{label}.", inner, value_maps)
        return outcome, {
            "case": label,
            "steps": {s.id: inner["steps"].get(s.id) for s in block or []},
        }

    async def _for_each(
        self,
        workflow: WorkflowSpec,
        step: ForEachStep,
        key: str,
        decision: dict[str, Any],
        context: dict[str, Any],
        value_maps: dict[str, ValueMap],
    ) -> tuple[Outcome | None, Any]:
        rounds: list[dict[str, Any]] = []
        for index, item in enumerate(decision.get("items") or []):
            inner = {**context, "steps": dict(context["steps"]), step.as_: item, "index": index}
            outcome = await self.steps(workflow, step.steps, f"{key}[{index}].", inner, value_maps)
            if outcome is not None:
                return outcome, None
            rounds.append({s.id: inner["steps"].get(s.id) for s in step.steps})
        return None, rounds

    async def _call(
        self, step: CallWorkflowStep, key: str, decision: dict[str, Any], context: dict[str, Any]
    ) -> tuple[Outcome | None, Any]:
        called = self.bundle.workflow(self.execution.tenant, step.workflow)
        if called is None:  # validation makes sure it exists; the check keeps the types honest
            return _step_failure(key, "metadata", f"no workflow '{step.workflow}'"), None
        data = decision.get("input")
        problem = _input_problem(called, data)
        if problem is not None:
            return _step_failure(
                key,
                "input",
                f"input for workflow '{called.name}' from step '{key}' does not match its "
                f"schema: {problem}",
            ), None
        value_maps = self.bundle.value_maps_for_workflow(called)
        inner = self._context(called, data)
        outcome = await self.steps(called, called.steps, f"{key}.", inner, value_maps)
        if outcome is not None:
            return outcome, None
        try:
            return None, _workflow_output(called, inner, value_maps)
        except ExpressionError as exc:
            return _step_failure(key, "expression", exc.message), None


def _is_top_level(key: str) -> bool:
    return "." not in key and "[" not in key


def _recorded_failure(compensation: StepRun) -> Outcome:
    """The failure a compensation entry was started for (kept in its request)."""
    request = compensation.request or {}
    return Outcome(str(request.get("status", "failed")), error=request.get("error"))


def _compensated(outcome: Outcome, compensation: StepRun, summary_key: str) -> Outcome:
    """The original failure, with how its compensation went under `summary_key`."""
    summary: dict[str, Any] = {"status": compensation.status}
    if compensation.status == "failed" and compensation.error:
        summary["message"] = compensation.error.get("message")
        summary["step"] = compensation.error.get("step")
    return Outcome(outcome.status, error={**(outcome.error or {}), summary_key: summary})


def _step_failure(key: str, kind: str, message: str) -> Outcome:
    return Outcome("failed", error={"type": kind, "message": message, "step": key})


def _over_bound(step: ForEachStep, key: str, count: int, *, before_any: bool) -> Outcome:
    when = "before any step ran" if before_any else "before any of its rounds ran"
    return _step_failure(
        key,
        "limit",
        f"for_each '{key}' got {count} items; max_items is {step.max_items}, so the execution "
        f"stopped {when}",
    )


def _items(
    step: ForEachStep, context: dict[str, Any], value_maps: dict[str, ValueMap]
) -> list[Any]:
    items = _expression(step.items).evaluate(context, value_maps)
    if items is None:
        return []
    if not isinstance(items, list):
        raise ExpressionError(
            f"items of for_each '{step.id}' (`{step.items}`) must be a list, got "
            f"{type(items).__name__}"
        )
    return items


def _input_problem(workflow: WorkflowSpec, data: Any) -> str | None:
    cls = jsonschema.validators.validator_for(workflow.input_schema)
    validator = cls(workflow.input_schema, format_checker=cls.FORMAT_CHECKER)
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.path)):
        where = "/" + "/".join(str(p) for p in error.path)
        return f"{where}: {error.message}"
    return None


def _workflow_output(
    workflow: WorkflowSpec, context: dict[str, Any], value_maps: dict[str, ValueMap]
) -> Any:
    if workflow.output is None:
        return context["steps"]
    return _compiled_value(workflow.output).evaluate(context, value_maps)


@functools.lru_cache(maxsize=4096)
def compiled_expression(source: str) -> Expression:
    return compile_expression(source)


def compiled_value(value: Any) -> CompiledValue:
    """Metadata values are immutable per version: compile each distinct one once."""
    return _compile_json(json.dumps(value, sort_keys=True, default=str))


@functools.lru_cache(maxsize=4096)
def _compile_json(key: str) -> CompiledValue:
    return compile_value(json.loads(key))


_expression = compiled_expression
_compiled_value = compiled_value
