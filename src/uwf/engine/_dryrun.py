"""Dry run: evaluate a workflow against the live CRM without writing anything to it.

The workflow runs through the same interpreter as a real execution, so conditions, lookups,
value maps and step outputs behave exactly as they would. Two things differ:

* the connector runtime is a `DryRunRuntime`: reads (GET) are sent, every other request is
  built, recorded (secrets redacted) and *not* sent; for an update or an assignment the record's
  current values are read first, so the plan shows each field as `current → new`;
* the ledger is a scratch Pipe DB (SQLite in a temporary directory) that is thrown away
  afterwards, so a dry run never appears among the executions and is never queued.

What a later step reads from a write that was not sent is predicted: the current record with
the written fields set (or the written fields alone, for a create).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uwf.auth import redact
from uwf.connectors import NetworkPolicy, ObjectSpec, OperationSpec
from uwf.connectors.runtime import CallResult, ConnectorRuntime, Target
from uwf.engine._interpreter import Interpreter
from uwf.engine._targets import TargetResolver
from uwf.errors import ConnectorError
from uwf.governor import Governor, LocalState
from uwf.mapping import ValueMap
from uwf.metadata import MetadataBundle
from uwf.store import Store

__all__ = ["DryRunRuntime", "dry_run"]

_OWNER = "dry-run"


class DryRunRuntime(ConnectorRuntime):
    """Sends reads, records writes instead of sending them.

    `requests` lists every request in order: `sent: true` for the reads that went out (with
    their status), `sent: false` for the writes that would have.
    """

    def __init__(self, policy: NetworkPolicy | None = None) -> None:
        super().__init__(policy)
        self.requests: list[dict[str, Any]] = []

    async def call(
        self,
        target: Target,
        operation: OperationSpec,
        context: dict[str, Any],
        value_maps: Mapping[str, ValueMap] | None = None,
    ) -> CallResult:
        if operation.method == "GET":
            return await self._read(target, operation, context, value_maps)
        path, query, headers, body = self.build(target, operation, context, value_maps)
        url = target.base_url.rstrip("/") + "/" + path.lstrip("/")
        auth_headers = await target.auth.headers()
        request = redact(
            {
                "method": operation.method,
                "url": url,
                "query": query,
                "headers": {**target.spec.default_headers, **headers, **auth_headers},
                "body": body,
            },
            target.auth.secrets,
        )
        found = _object_of(target, operation)
        diff: list[dict[str, Any]] = []
        predicted: Any = context.get("fields") if isinstance(context.get("fields"), dict) else {}
        if found is not None:
            name, obj = found
            changes = _changes(obj, name, context)
            current = await self._current(target, obj, context) if changes is not None else None
            if changes is not None:
                diff = _diff(obj, current, changes)
                predicted = {**(current if isinstance(current, dict) else {}), **changes}
            if name == "add_comment":
                predicted = {"body": context.get("body"), "public": context.get("public")}
        # After the read of the current values, so the list is in the order things happen.
        self.requests.append({"sent": False, **request})
        response = {"dry_run": True, "sent": False, "status": None, "diff": diff}
        return CallResult({"dry_run": True, **request}, response, predicted)

    async def _read(
        self,
        target: Target,
        operation: OperationSpec,
        context: dict[str, Any],
        value_maps: Mapping[str, ValueMap] | None,
    ) -> CallResult:
        try:
            result = await super().call(target, operation, context, value_maps)
        except ConnectorError as exc:
            self.requests.append({"sent": True, **(exc.request or {}), "status": exc.status})
            raise
        self.requests.append(
            {"sent": True, **result.request, "status": result.response.get("status")}
        )
        return result

    async def _current(self, target: Target, obj: ObjectSpec, context: dict[str, Any]) -> Any:
        """The record as it is now (a GET), or None when the object cannot be read."""
        get = obj.operations.get("get")
        if get is None or context.get("record_id") in (None, ""):
            return None
        read_context = {"record_id": context["record_id"], "now": context.get("now")}
        return (await self._read(target, get, read_context, None)).result


def _object_of(target: Target, operation: OperationSpec) -> tuple[str, ObjectSpec] | None:
    """The operation's name and object in the spec (the interpreter hands over the spec's own)."""
    for obj in target.spec.objects.values():
        for name, candidate in obj.operations.items():
            if candidate is operation:
                return name, obj
    return None


def _changes(obj: ObjectSpec, name: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """Native field → new value, for the operations that change an existing record."""
    if name == "update" and isinstance(context.get("fields"), dict):
        return dict(context["fields"])
    if name == "assign":
        owner = obj.field_specs.get("owner_id")
        return {owner.native if owner else "owner_id": context.get("owner_id")}
    return None


def _diff(obj: ObjectSpec, current: Any, changes: dict[str, Any]) -> list[dict[str, Any]]:
    canonical_of = {spec.native: canonical for canonical, spec in obj.field_specs.items()}
    view = obj.to_canonical(current) if isinstance(current, dict) else {}
    entries = []
    for native, new in changes.items():
        canonical = canonical_of.get(native)
        before = _current_value(obj, view, current, native, canonical)
        entries.append(
            {
                "field": canonical or native,
                "native": native,
                "current": before,
                "new": new,
                "changed": not _same(before, new),
            }
        )
    return entries


def _current_value(
    obj: ObjectSpec, view: Any, record: Any, native: str, canonical: str | None
) -> Any:
    """A field's current value: the canonical view's, else the native record's (top level or
    one level down, where CRMs such as HubSpot nest the fields)."""
    if canonical and isinstance(view, dict) and canonical in view:
        # An enum's canonical view is translated; the CRM's own value is compared with the write.
        return view.get(f"{canonical}_native", view.get(canonical))
    if not isinstance(record, dict):
        return None
    key = native.split("@", 1)[0]
    if key in record:
        return record[key]
    for value in record.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


def _same(before: Any, after: Any) -> bool:
    if before == after:
        return True
    return before is not None and after is not None and str(before) == str(after)


async def dry_run(
    *,
    bundle: MetadataBundle,
    version: int,
    tenant: str,
    workflow: str,
    data: dict[str, Any],
    targets: TargetResolver,
    seconds: float = 60.0,
    policy: NetworkPolicy | None = None,
) -> dict[str, Any]:
    """Evaluate `workflow` for `data` without writing to the CRM; returns the plan.

    The input must already be validated. `targets` must be a resolver of its own (its cache is
    keyed by metadata version, and the scratch Pipe DB numbers its versions afresh). Retries of
    failed reads follow the connection's policy, within `seconds`. `policy`: the outbound
    network guard's allowlist, as the deployment's own runtime has it.
    """
    with tempfile.TemporaryDirectory(prefix="uwf-dry-run-") as scratch:
        store = await Store.open(f"sqlite+aiosqlite:///{Path(scratch) / 'dry-run.sqlite3'}")
        runtime = DryRunRuntime(policy)
        try:
            scratch_version, _ = await store.apply_metadata(bundle, f"dry run of version {version}")
            execution, _ = await store.create_execution(
                tenant=tenant, workflow=workflow, metadata_version=scratch_version, input=data
            )
            interpreter = Interpreter(store, runtime, targets, Governor(LocalState()))
            deadline = time.monotonic() + seconds
            final = execution
            while time.monotonic() < deadline:
                claimed = await store.claim(_OWNER, 1, max(seconds, 30.0))
                if claimed:
                    await interpreter.run(claimed[0], _OWNER)
                latest = await store.get_execution(execution.id)
                if latest is not None:
                    final = latest
                    if latest.is_final:
                        break
                if not claimed:
                    await asyncio.sleep(0.05)
            runs = await store.step_runs(execution.id)
        finally:
            await runtime.close()
            await store.close()
    wf = bundle.workflow(tenant, workflow)
    kinds = {step.id: step.type for step in (wf.steps if wf else [])}
    steps = []
    for run in sorted(runs, key=lambda r: r.position):
        response = run.response or {}
        entry: dict[str, Any] = {
            "id": run.step_id,
            "status": run.status,
            "type": kinds.get(run.step_id),
            "request": run.request,
            "sent": not response.get("dry_run", False) if run.request else False,
            "output": run.output,
            "error": run.error,
        }
        if response.get("dry_run"):
            entry["diff"] = response.get("diff") or []
        steps.append(entry)
    status = final.status if final.is_final else "incomplete"
    error = final.error
    if not final.is_final:
        error = {"type": "timeout", "message": f"not finished within {seconds:g} s"}
    return {
        "dry_run": True,
        "tenant": tenant,
        "workflow": workflow,
        "metadata_version": version,
        "status": status,
        "input": data,
        "output": final.output,
        "error": error,
        "steps": steps,
        "requests": runtime.requests,
    }
