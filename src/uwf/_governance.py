"""Mapping governance from the command line: describe, check against the CRM, dry run.

Each function opens the Pipe DB, serves the built-in sandboxes on a loopback port for the
command (as `uwf run` does, so the example connections work without `uwf serve`), and reads
from the CRMs; none of them writes to a CRM.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from uwf._oneoff import local_sandboxes
from uwf.api import find_connection, validate_action
from uwf.connectors import ObjectDescription, describe_object
from uwf.engine import Executor, Finding, check_against_crm, document_lines, dry_run
from uwf.errors import NotFoundError
from uwf.metadata import ConnectionSpec, MetadataBundle
from uwf.service import Service, make_executor
from uwf.settings import Settings

__all__ = ["check_metadata", "describe_connection", "dry_run_action"]


@contextlib.asynccontextmanager
async def _crm_access(settings: Settings) -> AsyncIterator[tuple[Service, Executor]]:
    service = await Service.start(settings, worker=False)
    try:
        async with local_sandboxes(settings) as sandbox_base:
            executor = make_executor(settings, service.store, sandbox_base)
            try:
                yield service, executor
            finally:
                await executor.runtime.close()
    finally:
        await service.stop()


async def describe_connection(settings: Settings, name: str, obj: str) -> ObjectDescription:
    """`uwf connections describe`: the live fields of one object of a stored connection."""
    async with _crm_access(settings) as (service, executor):
        version, connection = await find_connection(service.store, name)
        bundle = await service.store.metadata(version)
        assert bundle is not None
        target = await executor.targets.resolve(version, bundle, connection)
        return await describe_object(executor.runtime, target, obj)


async def check_metadata(
    settings: Settings, directory: Path | None, bundle: MetadataBundle | None, tenant: str | None
) -> list[Finding]:
    """`uwf metadata check --against-crm`: `bundle` (from `directory`), or the active metadata."""
    async with _crm_access(settings) as (service, executor):
        version = -1  # a directory's metadata has no stored version; keep its targets apart
        if bundle is None:
            active = await service.store.active_metadata()
            if active is None:
                raise NotFoundError("no metadata has been applied yet (uwf metadata apply DIR)")
            version, bundle = active
        if tenant is not None and tenant not in bundle.tenants:
            known = ", ".join(sorted(bundle.tenants)) or "none"
            raise NotFoundError(f"unknown tenant '{tenant}' (known: {known})")
        checked = bundle
        targets = executor.targets.fresh()

        async def describe(connection: ConnectionSpec, obj: str) -> ObjectDescription:
            target = await targets.resolve(version, checked, connection)
            return await describe_object(executor.runtime, target, obj)

        locate = document_lines(directory) if directory is not None else None
        return await check_against_crm(checked, describe, tenant=tenant, locate=locate)


async def dry_run_action(
    settings: Settings, tenant: str, workflow: str, data: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """`uwf run --dry-run`: the plan of an action against the active metadata."""
    async with _crm_access(settings) as (service, executor):
        version, bundle, _ = await validate_action(service.store, tenant, workflow, data)
        return await dry_run(
            bundle=bundle,
            version=version,
            tenant=tenant,
            workflow=workflow,
            data=data,
            targets=executor.targets.fresh(),
            seconds=seconds,
            policy=executor.runtime.policy,
        )
