"""How executions look from outside: the same shape for the API and `uwf executions show`."""

from __future__ import annotations

from typing import Any

from uwf.api._models import ExecutionSummary, ExecutionView, StepView
from uwf.auth import mask_sensitive
from uwf.metadata import key_root, step_at
from uwf.store import Execution, StepRun, Store

__all__ = ["execution_summary", "execution_view"]


def execution_summary(execution: Execution) -> ExecutionSummary:
    return ExecutionSummary(**_summary_fields(execution))


def _summary_fields(execution: Execution) -> dict[str, Any]:
    return {
        "id": execution.id,
        "tenant": execution.tenant,
        "workflow": execution.workflow,
        "workflow_version": execution.metadata_version,
        "status": execution.status,
        "error": execution.error,
        "created_at": execution.created_at,
        "started_at": execution.started_at,
        "finished_at": execution.finished_at,
    }


async def execution_view(
    store: Store, execution: Execution, ledger: list[StepRun] | None = None
) -> ExecutionView:
    """The execution with every step of its workflow, run or still pending.

    `ledger`: the execution's step runs when the caller has them (else they are read).
    """
    recorded = ledger if ledger is not None else await store.step_runs(execution.id)
    runs = {r.step_id: r for r in recorded}
    bundle = await store.metadata(execution.metadata_version)
    workflow = bundle.workflow(execution.tenant, execution.workflow) if bundle else None
    # Every step of the workflow; after each one the steps recorded inside it (switch cases,
    # loop rounds, called workflows: `loop[3].note`), then compensation, in the order they ran.
    nested: dict[str, list[StepRun]] = {}
    for run in recorded:
        root = key_root(run.step_id)
        if run.step_id != root:
            nested.setdefault(root, []).append(run)
    steps: list[StepView] = []
    for top in [
        *(workflow.steps if workflow else []),
        *(["on_failure"] if "on_failure" in runs else []),
    ]:
        top_id, top_type = (top, "on_failure") if isinstance(top, str) else (top.id, top.type)
        steps.append(_step_view(top_id, top_type, runs.get(top_id)))
        for run in nested.get(top_id, []):
            spec = step_at(bundle, workflow, run.step_id) if bundle and workflow else None
            kind = "on_failure" if run.step_id.endswith(".on_failure") else "unknown"
            steps.append(_step_view(run.step_id, spec.type if spec else kind, run))
    # Sensitive input properties are stored sealed; shown, they are `***` under their key.
    data = mask_sensitive(execution.input, workflow.input_schema) if workflow else execution.input
    return ExecutionView(
        **_summary_fields(execution),
        cancel_requested=execution.cancel_requested,
        replay_of=execution.replay_of,
        input=data,
        output=execution.output,
        steps=steps,
        updated_at=execution.updated_at,
    )


def _step_view(step_id: str, step_type: str, run: StepRun | None) -> StepView:
    if run is None:
        return StepView(
            id=step_id,
            type=step_type,
            status="pending",
            attempts=0,
            request=None,
            response=None,
            output=None,
            error=None,
            started_at=None,
            finished_at=None,
        )
    return StepView(
        id=step_id,
        type=step_type,
        status=run.status,
        attempts=run.attempts,
        request=run.request,
        response=run.response,
        output=run.output,
        error=run.error,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )
