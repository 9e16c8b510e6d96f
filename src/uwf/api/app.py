"""The FastAPI application: API Data Access, and the built-in sandboxes beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import uwf
from uwf.api._problems import install_problem_handlers
from uwf.api._routes import router
from uwf.sandboxes import SANDBOXES, create_sandbox_app
from uwf.service import Service
from uwf.settings import Settings

__all__ = ["create_app"]


def create_app(
    settings: Settings, *, admin_key: str, worker: bool = True, sandboxes: bool = True
) -> FastAPI:
    """The app `uwf serve` runs. Its lifespan opens the Pipe DB and starts the worker.

    With `sandboxes`, every built-in CRM sandbox is mounted at `/sandbox/<crm>/` and the
    example connections (`${sandbox:<crm>}`) reach them through this same server.
    """
    sandbox_base = f"{settings.base_url}/sandbox" if sandboxes else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await Service.start(settings, worker=worker, sandbox_base=sandbox_base)
        app.state.service = service
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="UWF",
        version=uwf.__version__,
        summary="Carry out business actions in customers' CRMs, driven by metadata.",
        lifespan=lifespan,
    )
    app.state.admin_key = admin_key
    install_problem_handlers(app)
    app.include_router(router)
    # Imported here: the triggers package builds on this one (accept_action, ProblemError).
    from uwf.triggers import webhook_router

    app.include_router(webhook_router)
    if sandboxes:
        for crm in SANDBOXES:
            app.mount(f"/sandbox/{crm}", create_sandbox_app(crm, settings.home))
    return app
