"""`connections test`: authenticate, make one cheap call, report what a human needs to know."""

from __future__ import annotations

import time
from typing import Any

from uwf.connectors import OutboundRefusedError
from uwf.connectors.runtime import ConnectorRuntime
from uwf.engine._targets import TargetResolver
from uwf.errors import ConnectorError, FatalError, RetryableError, UwfError
from uwf.metadata import ConnectionSpec, MetadataBundle

__all__ = ["probe_connection"]


async def probe_connection(
    runtime: ConnectorRuntime,
    targets: TargetResolver,
    version: int,
    bundle: MetadataBundle,
    connection: ConnectionSpec,
) -> dict[str, Any]:
    """Call the connector's `health` operation and describe the outcome in plain words."""
    report: dict[str, Any] = {
        "connection": connection.name,
        "tenant": connection.tenant,
        "connector": connection.connector,
        "ok": False,
        "latency_ms": None,
        "status": None,
        "rate_limit": None,
        "problem": None,
    }
    started = time.perf_counter()
    try:
        target = await targets.resolve(version, bundle, connection)
        report["base_url"] = target.base_url
        health = target.spec.health
        if health is None:
            raise FatalError(f"connector '{target.spec.id}' declares no health check")
        result = await runtime.call(target, health, {"step_key": "connections-test"})
    except UwfError as exc:
        report["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        report["problem"] = _plain(exc)
        if isinstance(exc, ConnectorError):
            report["status"] = exc.status
            if exc.response:
                report["rate_limit"] = _budget(bundle, connection, exc.response)
        return report
    report["ok"] = True
    report["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    report["status"] = result.response.get("status")
    report["rate_limit"] = _budget(bundle, connection, result.response)
    return report


def _budget(
    bundle: MetadataBundle, connection: ConnectionSpec, response: dict[str, Any]
) -> dict[str, str | None] | None:
    connector = bundle.connectors.get(connection.connector)
    if connector is None:
        return None
    spec = connector.rate_limit
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}

    def read(name: str | None) -> str | None:
        return headers.get(name.lower()) if name else None

    return {"limit": read(spec.limit), "remaining": read(spec.remaining), "reset": read(spec.reset)}


def _plain(exc: UwfError) -> str:
    if isinstance(exc, OutboundRefusedError):
        return f"UWF will not connect there (outbound network guard): {exc.message}"
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return f"the CRM refused the credentials ({status}): {exc.message}"
    if status == 429:
        return f"the CRM's rate limit is exhausted right now: {exc.message}"
    if isinstance(exc, RetryableError) and status is None:
        return f"the CRM could not be reached: {exc.message}"
    return exc.message
