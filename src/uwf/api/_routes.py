"""The routes of API Data Access: accept actions, report executions."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from uwf.api._accept import (
    accept_action,
    cancel_execution,
    find_connection,
    replay_execution,
    tenant_metadata,
    validate_action,
)
from uwf.api._models import (
    ActionRequest,
    ConnectionTest,
    ConnectionView,
    DryRunView,
    ExecutionPage,
    ExecutionStatus,
    ExecutionView,
    Health,
    ObjectDescriptionView,
    ReplayRequest,
    WorkflowView,
)
from uwf.api._problems import ProblemError
from uwf.api._security import Requires, audit_entry
from uwf.api._views import execution_summary, execution_view
from uwf.connectors import describe_object
from uwf.engine import dry_run
from uwf.errors import ConflictError, InputValidationError, NotFoundError
from uwf.service import Service, make_executor
from uwf.store import AuditEntry, Execution, StepRun, api_first

router = APIRouter()
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def _service(request: Request) -> Service:
    # async: FastAPI runs a plain `def` dependency in a thread pool, a thread hop per request.
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(_service)]


@contextlib.asynccontextmanager
async def _refusals_audited(
    service: Service, entry: AuditEntry, target: str
) -> AsyncIterator[None]:
    """A cancel or replay that is refused (already ended, nothing to replay) is recorded too."""
    try:
        yield
    except (ConflictError, InputValidationError) as exc:
        details = {**(entry.details or {}), "reason": exc.message[:500]}
        refused = dataclasses.replace(entry, target=target, outcome="refused", details=details)
        await service.store.audit.write(refused)
        raise


@router.get("/healthz", response_model=Health, tags=["operations"])
async def healthz(service: ServiceDep) -> Health:
    """Liveness and readiness: the Pipe DB answers and metadata is loaded."""
    active = await service.store.active_metadata()
    return Health(
        status="ok",
        database=service.store.dialect,
        metadata_version=active[0] if active else None,
        worker="running" if service.executor is not None else "disabled",
    )


@router.post(
    "/v1/tenants/{tenant}/actions",
    response_model=ExecutionView,
    status_code=202,
    dependencies=[Requires("actions:write")],
    tags=["actions"],
    responses={
        200: {
            "description": "Finished within `wait` seconds; with `dry_run=true`, the plan",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/ExecutionView"},
                            {"$ref": "#/components/schemas/DryRunView"},
                        ]
                    }
                }
            },
        }
    },
)
async def submit_action(
    tenant: str,
    body: ActionRequest,
    request: Request,
    response: Response,
    service: ServiceDep,
    wait: Annotated[float | None, Query(ge=0, le=30, description="Seconds to wait (≤ 30)")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    dry_run_: Annotated[
        bool,
        Query(
            alias="dry_run",
            description="Evaluate against the CRM without writing: reads are sent, writes are "
            "listed (with each update's current → new values); nothing is stored or queued",
        ),
    ] = False,
) -> ExecutionView | JSONResponse:
    """Validate and persist a workflow action; it runs in the background.

    Answers `202` with the queued execution and its `Location`, or `200` with the finished
    execution when it ends within `wait` seconds. The same `Idempotency-Key` with the same body
    returns the same execution; with a different body, `422`. With `dry_run=true`, answers
    `200` with the plan (`DryRunView`) and stores nothing.
    """
    if dry_run_:
        version, bundle, _ = await validate_action(service.store, tenant, body.workflow, body.input)
        executor = service.executor or make_executor(
            service.settings, service.store, service.sandbox_base
        )
        try:
            plan = await dry_run(
                bundle=bundle,
                version=version,
                tenant=tenant,
                workflow=body.workflow,
                data=body.input,
                targets=executor.targets.fresh(),
                policy=executor.runtime.policy,
            )
        finally:
            if executor is not service.executor:
                await executor.runtime.close()  # its token requests' sessions
        return JSONResponse(DryRunView(**plan).model_dump(mode="json"))
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise ProblemError(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            "Idempotency-Key must be 1–255 visible ASCII characters",
        )
    with api_first():  # storing it goes before the worker's Pipe DB requests (SQLite)
        execution, created = await accept_action(
            service.store,
            tenant,
            body.workflow,
            body.input,
            idempotency_key,
            audit=audit_entry(request, "action.accepted", tenant, workflow=body.workflow),
            vault=service.vault,
            active=getattr(request.state, "metadata", None),
        )
    ticket = getattr(request.state, "accept_ticket", None)
    if ticket is not None:
        ticket.release()  # stored: the worker may go on, and run this one
    if service.executor is not None and created:
        service.executor.wake()
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    ledger: list[StepRun] | None = None
    if wait and not execution.is_final and service.executor is not None:
        latest, ledger = await service.executor.wait_for_result(execution.id, wait)
        execution = latest or execution
    elif wait and not execution.is_final:
        execution = await _poll(service, execution, wait)
    elif created:
        ledger = []  # just stored: nothing has run yet
    response.headers["Location"] = f"/v1/tenants/{tenant}/executions/{execution.id}"
    if execution.is_final:
        response.status_code = 200
    return await execution_view(service.store, execution, ledger)


async def _poll(service: Service, execution: Execution, seconds: float) -> Execution:
    """Without an in-process worker, watch the Pipe DB for the result."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        latest = await service.store.get_execution(execution.id)
        if latest is not None:
            execution = latest
            if latest.is_final:
                break
    return execution


@router.get(
    "/v1/tenants/{tenant}/executions/{execution_id}",
    response_model=ExecutionView,
    dependencies=[Requires("executions:read")],
    tags=["executions"],
)
async def get_execution(tenant: str, execution_id: str, service: ServiceDep) -> ExecutionView:
    """One execution with every step's request, response, timing and outcome."""
    execution = (
        await service.store.get_execution(execution_id, tenant=tenant)
        if _UUID.fullmatch(execution_id)
        else None
    )
    if execution is None:
        raise NotFoundError(f"no execution '{execution_id}' for tenant '{tenant}'")
    return await execution_view(service.store, execution)


@router.post(
    "/v1/tenants/{tenant}/executions/{execution_id}/cancel",
    response_model=ExecutionView,
    dependencies=[Requires("actions:write")],
    tags=["executions"],
    responses={409: {"description": "The execution already ended"}},
)
async def cancel(
    tenant: str, execution_id: str, request: Request, service: ServiceDep
) -> ExecutionView:
    """Cancel: at once if no worker holds it, else before its next step (`cancel_requested`).

    Steps already done stay done; nothing more is sent to the CRM.
    """
    entry = audit_entry(request, "execution.cancelled", tenant)
    async with _refusals_audited(service, entry, execution_id):
        execution = await cancel_execution(service.store, tenant, execution_id, audit=entry)
    if not execution.is_final and service.executor is not None:
        execution = await service.executor.wait_for(execution.id, 5) or execution
    return await execution_view(service.store, execution)


@router.post(
    "/v1/tenants/{tenant}/executions/{execution_id}/replay",
    response_model=ExecutionView,
    status_code=202,
    dependencies=[Requires("actions:write")],
    tags=["executions"],
    responses={409: {"description": "Only failed, dead or cancelled executions replay"}},
)
async def replay(
    tenant: str,
    execution_id: str,
    request: Request,
    response: Response,
    service: ServiceDep,
    body: ReplayRequest | None = None,
) -> ExecutionView:
    """Run a failed, dead or cancelled execution again, as a new execution with the same input.

    Steps that succeeded are kept (not sent again) unless `from_step` says where to restart.
    """
    replay_request = body or ReplayRequest()
    entry = audit_entry(request, "execution.replayed", tenant)
    async with _refusals_audited(service, entry, execution_id):
        execution = await replay_execution(
            service.store,
            tenant,
            execution_id,
            from_step=replay_request.from_step,
            current_metadata=replay_request.metadata_version == "current",
            audit=entry,
        )
    if service.executor is not None:
        service.executor.wake()
    response.headers["Location"] = f"/v1/tenants/{tenant}/executions/{execution.id}"
    return await execution_view(service.store, execution)


@router.get(
    "/v1/tenants/{tenant}/executions",
    response_model=ExecutionPage,
    dependencies=[Requires("executions:read")],
    tags=["executions"],
)
async def list_executions(
    tenant: str,
    service: ServiceDep,
    status: ExecutionStatus | None = None,
    workflow: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=_UUID.pattern)] = None,
) -> ExecutionPage:
    """Executions of a tenant, newest first; follow `next_cursor` for the next page."""
    await tenant_metadata(service.store, tenant)
    page, next_cursor = await service.store.list_executions(
        tenant=tenant, status=status, workflow=workflow, limit=limit, cursor=cursor
    )
    return ExecutionPage(items=[execution_summary(e) for e in page], next_cursor=next_cursor)


@router.get(
    "/v1/tenants/{tenant}/workflows",
    response_model=list[WorkflowView],
    dependencies=[Requires("executions:read")],
    tags=["actions"],
)
async def list_workflows(tenant: str, service: ServiceDep) -> list[WorkflowView]:
    """The workflows a tenant can run, with the input each one expects."""
    version, bundle = await tenant_metadata(service.store, tenant)
    return [
        WorkflowView(
            name=wf.name,
            description=wf.description,
            workflow_version=version,
            input_schema=wf.input_schema,
            steps=[s.id for s in wf.steps],
        )
        for (t, _), wf in sorted(bundle.workflows.items())
        if t == tenant
    ]


@router.get(
    "/v1/tenants/{tenant}/connections",
    response_model=list[ConnectionView],
    dependencies=[Requires("executions:read")],
    tags=["connections"],
)
async def list_connections(tenant: str, service: ServiceDep) -> list[ConnectionView]:
    """A tenant's CRM connections (never their secrets), with OAuth token state."""
    _, bundle = await tenant_metadata(service.store, tenant)
    states = {row.key.split(":", 1)[0]: row for row in await service.store.tokens.all()}
    views = []
    for conn in sorted(bundle.connections.values(), key=lambda c: c.name):
        if conn.tenant != tenant:
            continue
        row = states.get(conn.name)
        views.append(
            ConnectionView(
                name=conn.name,
                connector=conn.connector,
                base_url=conn.base_url,
                auth_type=conn.auth.type,
                state=row.state if row else "ok",
                reason=row.reason if row else None,
            )
        )
    return views


@router.post(
    "/v1/tenants/{tenant}/connections/{name}/test",
    response_model=ConnectionTest,
    dependencies=[Requires("metadata:write")],
    tags=["connections"],
)
async def test_connection(tenant: str, name: str, service: ServiceDep) -> ConnectionTest:
    """Authenticate, make one cheap call, and report latency, rate budget and any problem."""
    await tenant_metadata(service.store, tenant)
    version, connection = await find_connection(service.store, name, tenant)
    executor = service.executor
    if executor is None:
        executor = make_executor(service.settings, service.store, service.sandbox_base)
        try:
            return ConnectionTest(**await executor.probe(version, connection))
        finally:
            await executor.runtime.close()
    return ConnectionTest(**await executor.probe(version, connection))


@router.get(
    "/v1/tenants/{tenant}/connections/{name}/describe",
    response_model=ObjectDescriptionView,
    dependencies=[Requires("metadata:write")],
    tags=["connections"],
)
async def describe_connection(
    tenant: str,
    name: str,
    service: ServiceDep,
    object_: Annotated[
        str, Query(alias="object", max_length=63, description="Canonical object, e.g. case")
    ] = "case",
) -> ObjectDescriptionView:
    """The object's live field metadata, read from the CRM: names (native and canonical),
    types, required and read-only flags, picklist values. Only reads are sent."""
    await tenant_metadata(service.store, tenant)
    version, connection = await find_connection(service.store, name, tenant)
    bundle = await service.store.metadata(version)
    assert bundle is not None
    spec = bundle.connectors.get(connection.connector)
    if spec is not None and object_ not in spec.objects:
        # The caller asked for something that does not exist: a 404, not a server error.
        raise ProblemError(
            404,
            "unknown-object",
            "Unknown object",
            f"connector '{spec.id}' has no object '{object_}' "
            f"(known: {', '.join(sorted(spec.objects))})",
        )
    if service.executor is not None:
        executor = service.executor
        target = await executor.targets.resolve(version, bundle, connection)
        description = await describe_object(executor.runtime, target, object_)
    else:
        executor = make_executor(service.settings, service.store, service.sandbox_base)
        try:
            target = await executor.targets.resolve(version, bundle, connection)
            description = await describe_object(executor.runtime, target, object_)
        finally:
            await executor.runtime.close()
    return ObjectDescriptionView(**description.to_json())
