"""Accepting an action: resolve tenant and workflow, validate the input, persist it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jsonschema

from uwf.errors import InputValidationError, NotFoundError
from uwf.metadata import ConnectionSpec, MetadataBundle, WorkflowSpec
from uwf.store import Execution, Store

__all__ = ["accept_action", "find_connection", "tenant_metadata"]

_validators: dict[tuple[int, str, str], Any] = {}


async def tenant_metadata(store: Store, tenant: str) -> tuple[int, MetadataBundle]:
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
) -> tuple[Execution, bool]:
    """Validate an action against the active metadata and persist it as a queued execution.

    Returns the execution and whether it was created now (False: an idempotent repeat).

    Raises:
        NotFoundError: unknown tenant.
        InputValidationError: unknown workflow, or input that breaks its schema.
        ConflictError: the idempotency key was used with a different request.
    """
    version, bundle = await tenant_metadata(store, tenant)
    workflow = bundle.workflow(tenant, workflow_name)
    if workflow is None:
        known = ", ".join(bundle.workflow_names(tenant)) or "none"
        raise InputValidationError(
            f"unknown workflow '{workflow_name}' for tenant '{tenant}' (known: {known})",
            errors=[{"path": "/workflow", "message": "unknown workflow"}],
        )
    _validate_input(version, tenant, workflow, data)
    request_hash = None
    if idempotency_key is not None:
        canonical = json.dumps(
            {"workflow": workflow_name, "input": data}, sort_keys=True, separators=(",", ":")
        )
        request_hash = hashlib.sha256(canonical.encode()).hexdigest()
    return await store.create_execution(
        tenant=tenant,
        workflow=workflow_name,
        metadata_version=version,
        input=data,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


def _validate_input(version: int, tenant: str, workflow: WorkflowSpec, data: Any) -> None:
    key = (version, tenant, workflow.name)
    validator = _validators.get(key)
    if validator is None:
        cls = jsonschema.validators.validator_for(workflow.input_schema)
        validator = cls(workflow.input_schema, format_checker=cls.FORMAT_CHECKER)
        _validators[key] = validator
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        listed = [
            {"path": "/input" + "".join(f"/{p}" for p in e.absolute_path), "message": e.message}
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
