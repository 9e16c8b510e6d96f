"""Accepting an action: resolve tenant and workflow, validate the input, persist it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import jsonschema

from uwf.auth import Vault, has_sensitive, redact, seal_sensitive, sensitive_values
from uwf.errors import ConflictError, InputValidationError, NotFoundError
from uwf.metadata import ConnectionSpec, MetadataBundle, WorkflowSpec, key_root
from uwf.store import AuditEntry, Execution, Store

__all__ = [
    "accept_action",
    "cancel_execution",
    "find_connection",
    "replay_execution",
    "tenant_metadata",
    "validate_action",
]

_validators: dict[tuple[int, str, str], Any] = {}


async def tenant_metadata(
    store: Store, tenant: str, active: tuple[int, MetadataBundle] | None = None
) -> tuple[int, MetadataBundle]:
    """The active metadata, which must know `tenant`.

    `active`: what this request already read (its route's access check does), so one
    request reads the active version once.
    """
    if active is None:
        active = await store.active_metadata()
    if active is None:
        raise NotFoundError("no metadata has been applied yet (uwf metadata apply DIR)")
    version, bundle = active
    if tenant not in bundle.tenants:
        raise NotFoundError(f"unknown tenant '{tenant}'")
    return version, bundle


async def accept_action(
    store: Store,
    tenant: str,
    workflow_name: str,
    data: dict[str, Any],
    idempotency_key: str | None = None,
    *,
    audit: AuditEntry | None = None,
    vault: Vault | None = None,
    active: tuple[int, MetadataBundle] | None = None,
) -> tuple[Execution, bool]:
    """Validate an action against the active metadata and persist it as a queued execution.

    Returns the execution and whether it was created now (False: an idempotent repeat).
    `audit` is recorded with the execution, in its transaction (a repeat records nothing).

    Raises:
        NotFoundError: unknown tenant.
        InputValidationError: unknown workflow, or input that breaks its schema.
        ConflictError: the idempotency key was used with a different request.

    Input properties the workflow marks sensitive are stored encrypted under `vault`.
    `active`: the active metadata as this request already read it (see `tenant_metadata`).
    """
    version, _, workflow = await validate_action(store, tenant, workflow_name, data, active)
    request_hash = None
    if idempotency_key is not None:
        canonical = json.dumps(
            {"workflow": workflow_name, "input": data}, sort_keys=True, separators=(",", ":")
        )
        request_hash = hashlib.sha256(canonical.encode()).hexdigest()
    if has_sensitive(workflow.input_schema):
        if vault is None:
            raise InputValidationError(
                f"workflow '{workflow_name}' has sensitive input and this process has no "
                "secret key to store it with"
            )
        data = seal_sensitive(data, workflow.input_schema, vault, tenant)
    return await store.create_execution(
        tenant=tenant,
        workflow=workflow_name,
        metadata_version=version,
        input=data,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        audit=audit,
    )


async def validate_action(
    store: Store,
    tenant: str,
    workflow_name: str,
    data: dict[str, Any],
    active: tuple[int, MetadataBundle] | None = None,
) -> tuple[int, MetadataBundle, WorkflowSpec]:
    """Check an action against the active metadata without persisting anything.

    Raises:
        NotFoundError: unknown tenant.
        InputValidationError: unknown workflow, or input that breaks its schema.
    """
    version, bundle = await tenant_metadata(store, tenant, active)
    workflow = bundle.workflow(tenant, workflow_name)
    if workflow is None:
        known = ", ".join(bundle.workflow_names(tenant)) or "none"
        raise InputValidationError(
            f"unknown workflow '{workflow_name}' for tenant '{tenant}' (known: {known})",
            errors=[{"path": "/workflow", "message": "unknown workflow"}],
        )
    _validate_input(version, tenant, workflow, data)
    return version, bundle, workflow


def _validate_input(version: int, tenant: str, workflow: WorkflowSpec, data: Any) -> None:
    key = (version, tenant, workflow.name)
    validator = _validators.get(key)
    if validator is None:
        cls = jsonschema.validators.validator_for(workflow.input_schema)
        validator = cls(workflow.input_schema, format_checker=cls.FORMAT_CHECKER)
        _validators[key] = validator
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        # jsonschema quotes the offending value; a sensitive one must not come back.
        hidden = sensitive_values(data, workflow.input_schema)
        listed = [
            {
                "path": "/input" + "".join(f"/{p}" for p in e.absolute_path),
                "message": redact(e.message, hidden),
            }
            for e in errors
        ]
        detail = "; ".join(f"{e['path']}: {e['message']}" for e in listed)
        raise InputValidationError(
            f"input does not match workflow '{workflow.name}': {detail}", errors=listed
        )


async def find_connection(
    store: Store, name: str, tenant: str | None = None
) -> tuple[int, ConnectionSpec]:
    active = await store.active_metadata()
    if active is None:
        raise NotFoundError("no metadata has been applied yet")
    version, bundle = active
    connection = bundle.connections.get(name)
    if connection is None or (tenant is not None and connection.tenant != tenant):
        known = sorted(
            c.name for c in bundle.connections.values() if tenant is None or c.tenant == tenant
        )
        raise NotFoundError(f"no connection '{name}' (known: {', '.join(known) or 'none'})")
    return version, connection


async def cancel_execution(
    store: Store, tenant: str, execution_id: str, *, audit: AuditEntry | None = None
) -> Execution:
    """Cancel an execution (at once, or before its next step if a worker is running it).

    `audit` is recorded once the cancellation (or the request for it) is stored.

    Raises:
        NotFoundError: no such execution for this tenant.
        ConflictError: it already ended.
    """
    current = await store.get_execution(execution_id, tenant=tenant)
    if current is None:
        raise NotFoundError(f"no execution '{execution_id}' for tenant '{tenant}'")
    if current.is_final:
        raise ConflictError(
            f"execution {execution_id} already ended ({current.status}); nothing to cancel"
        )
    cancelled = await store.cancel(execution_id, tenant, "cancelled on request")
    assert cancelled is not None
    if audit is not None:
        await store.audit.write(
            replace(audit, target=execution_id, details={"status": cancelled.status})
        )
    return cancelled


async def replay_execution(
    store: Store,
    tenant: str,
    execution_id: str,
    *,
    from_step: str | None = None,
    current_metadata: bool = False,
    audit: AuditEntry | None = None,
) -> Execution:
    """A new execution with the same input, keeping the steps that already succeeded.

    Without `from_step` it resumes: steps that succeeded (or were skipped) are not run again
    (their outputs are copied), the rest run. With `from_step`, that step and every later one
    run again. The metadata is the original version unless `current_metadata`. `audit` is
    recorded with the new execution (its target), in its transaction.

    Raises:
        NotFoundError: no such execution for this tenant.
        ConflictError: it has not ended, or it succeeded (replaying could write twice).
        InputValidationError: `from_step` is not a step of the workflow, or a step before it
            did not succeed.
    """
    original = await store.get_execution(execution_id, tenant=tenant)
    if original is None:
        raise NotFoundError(f"no execution '{execution_id}' for tenant '{tenant}'")
    if not original.is_final or original.status == "succeeded":
        raise ConflictError(
            f"execution {execution_id} is {original.status}; only failed, dead or cancelled "
            "executions can be replayed"
        )
    if current_metadata:
        version, bundle = await tenant_metadata(store, tenant)
    else:
        version = original.metadata_version
        found = await store.metadata(version)
        if found is None:
            raise NotFoundError(f"metadata version {version} no longer exists")
        bundle = found
    workflow = bundle.workflow(tenant, original.workflow)
    if workflow is None:
        raise InputValidationError(
            f"workflow '{original.workflow}' is not in metadata version {version}"
        )
    step_ids = [s.id for s in workflow.steps]
    if from_step is not None and from_step not in step_ids:
        raise InputValidationError(
            f"'{from_step}' is not a step of '{workflow.name}' (steps: {', '.join(step_ids)})",
            errors=[{"path": "/from_step", "message": "unknown step"}],
        )
    recorded = await store.step_runs(execution_id)
    done = {r.step_id: r for r in recorded if r.status in ("succeeded", "skipped")}
    keep = step_ids[: step_ids.index(from_step)] if from_step else step_ids
    if from_step is not None:
        missing = [s for s in keep if s not in done]
        if missing:
            raise InputValidationError(
                f"step '{missing[0]}' before '{from_step}' did not succeed; replay from "
                f"'{missing[0]}' or earlier",
                errors=[{"path": "/from_step", "message": "earlier step not done"}],
            )
    ledger = [replace(done[s], position=step_ids.index(s)) for s in keep if s in done]
    # Inside a kept step (switch case, loop round, called workflow) what succeeded is kept too,
    # with the decision that led there (a `running` entry), so no round is sent twice.
    # Compensation (`on_failure…`) is not kept: a new failure compensates anew.
    ledger += [
        replace(r, position=len(step_ids) + n)
        for n, r in enumerate(recorded)
        if r.step_id != key_root(r.step_id)
        and key_root(r.step_id) in keep
        and r.status in ("succeeded", "skipped", "running")
    ]
    ledger += [
        replace(r, position=len(step_ids) + len(recorded) + n)
        for n, r in enumerate(recorded)
        if r.step_id in keep and r.status == "running"
    ]
    created, _ = await store.create_execution(
        tenant=tenant,
        workflow=original.workflow,
        metadata_version=version,
        input=original.input,
        replay_of=original.id,
        ledger=ledger,
        audit=None if audit is None else replace(audit, details={"replay_of": original.id}),
    )
    return created
