"""The FastAPI application: API Data Access, and the built-in sandboxes beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import uwf
from uwf.api._admin_routes import admin_router
from uwf.api._limits import LimitsMiddleware
from uwf.api._oidc import OidcVerifier
from uwf.api._priority import AcceptPriorityMiddleware
from uwf.api._problems import install_problem_handlers
from uwf.api._routes import router
from uwf.api._security import RateLimiter
from uwf.sandboxes import SANDBOXES, create_sandbox_app
from uwf.service import Service
from uwf.settings import Settings

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    admin_key: str,
    worker: bool = True,
    sandboxes: bool = True,
    settle_heap: bool = False,
) -> FastAPI:
    """The app `uwf serve` runs. Its lifespan opens the Pipe DB and starts the worker.

    With `sandboxes`, every built-in CRM sandbox is mounted at `/sandbox/<crm>/` and the
    example connections (`${sandbox:<crm>}`) reach them through this same server.
    `settle_heap`: the process serves only this app (`Service.settle_heap` once started).
    """
    sandbox_base = f"{settings.base_url}/sandbox" if sandboxes else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await Service.start(settings, worker=worker, sandbox_base=sandbox_base)
        app.state.service = service
        if settle_heap:
            Service.settle_heap()
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
    app.state.limiter = RateLimiter(settings.api_rate_limit, settings.api_rate_burst)
    app.state.key_touches = {}
    app.state.oidc = (
        OidcVerifier(
            settings.oidc_issuer,
            settings.oidc_audience,
            settings.oidc_jwks_url,
            tenants_claim=settings.oidc_tenants_claim,
            scope_claim=settings.oidc_scope_claim,
        )
        if settings.oidc_issuer and settings.oidc_audience
        else None
    )
    app.add_middleware(
        LimitsMiddleware,
        max_body_bytes=settings.api_max_body_bytes,
        max_json_depth=settings.api_max_json_depth,
    )
    # Added last, so it runs first: the ticket covers reading the body and the access check.
    app.add_middleware(AcceptPriorityMiddleware)
    install_problem_handlers(app)
    app.include_router(router)
    # Imported here: the triggers package builds on this one (accept_action, ProblemError).
    from uwf.triggers import webhook_router

    app.include_router(webhook_router)
    app.include_router(admin_router)
    if sandboxes:
        for crm in SANDBOXES:
            app.mount(f"/sandbox/{crm}", create_sandbox_app(crm, settings.home))
    return app
