"""`uwf run`: one action, now, in this process, with the sandboxes on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from uwf.api import accept_action, execution_view, find_connection
from uwf.sandboxes import SANDBOXES, create_sandbox_app
from uwf.service import Service, make_executor
from uwf.settings import Settings
from uwf.store import Execution, Store

__all__ = [
    "check_connection",
    "execution_document",
    "local_sandboxes",
    "run_action",
]


async def execution_document(store: Store, execution: Execution) -> dict[str, Any]:
    view = await execution_view(store, execution)
    document: dict[str, Any] = view.model_dump(mode="json")
    return document


@contextlib.asynccontextmanager
async def local_sandboxes(settings: Settings) -> AsyncIterator[str]:
    """Serve the built-in sandboxes on a loopback port for this command; yields their base."""
    sandboxes = Starlette(
        routes=[
            Mount(f"/sandbox/{crm}", create_sandbox_app(crm, settings.home)) for crm in SANDBOXES
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(sandboxes, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn offers a `started` flag, no event to wait on.
    while not server.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/sandbox"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        sock.close()


async def run_action(
    settings: Settings, tenant: str, workflow: str, data: dict[str, Any], seconds: float
) -> dict[str, Any]:
    service = await Service.start(settings, worker=False)
    try:
        async with local_sandboxes(settings) as sandbox_base:
            executor = make_executor(settings, service.store, sandbox_base)
            try:
                execution, _ = await accept_action(
                    service.store, tenant, workflow, data, vault=service.vault
                )
                await executor.start()
                final = await executor.wait_for(execution.id, seconds) or execution
                return await execution_document(service.store, final)
            finally:
                await executor.stop()
    finally:
        await service.stop()


async def check_connection(settings: Settings, name: str) -> dict[str, Any]:
    service = await Service.start(settings, worker=False)
    try:
        version, connection = await find_connection(service.store, name)
        async with local_sandboxes(settings) as sandbox_base:
            executor = make_executor(settings, service.store, sandbox_base)
            try:
                return await executor.probe(version, connection)
            finally:
                await executor.runtime.close()
    finally:
        await service.stop()
