"""How executions look from outside: the same shape for the API and `uwf executions show`."""

from __future__ import annotations

from typing import Any

from uwf.api._models import ExecutionSummary, ExecutionView, StepView
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


async def execution_view(store: Store, execution: Execution) -> ExecutionView:
    """The execution with every step of its workflow, run or still pending."""
    runs = {r.step_id: r for r in await store.step_runs(execution.id)}
    bundle = await store.metadata(execution.metadata_version)
    workflow = bundle.workflow(execution.tenant, execution.workflow) if bundle else None
    steps = [_step_view(s.id, s.type, runs.get(s.id)) for s in (workflow.steps if workflow else [])]
    return ExecutionView(
        **_summary_fields(execution),
        cancel_requested=execution.cancel_requested,
        replay_of=execution.replay_of,
        input=execution.input,
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
