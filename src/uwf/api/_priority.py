"""The API goes before the in-process worker while it accepts an action.

`uwf serve` runs the API and the worker on one event loop and (with SQLite) one database
connection. Under a stream of actions the worker's claims, ledger writes and CRM calls would
queue every `202` behind execution work; with this middleware the worker holds back (claims
nothing, starts no execution, pauses running ones before their next write or CRM call, for at
most `uwf.engine._executor.API_PRIORITY_SECONDS` each time) while
an action is being accepted. The route releases its ticket once the execution is stored, so a
caller waiting for the result (`?wait=`) does not hold the worker back.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AcceptPriorityMiddleware"]

_ACCEPT_PATH = re.compile(r"^/v1/tenants/[^/]+/actions/?$")


class AcceptPriorityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = getattr(scope["app"].state, "service", None) if "app" in scope else None
        executor = service.executor if service is not None else None
        if (
            executor is None
            or scope["type"] != "http"
            or scope["method"] != "POST"
            or not _ACCEPT_PATH.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        ticket = executor.accepting()
        scope.setdefault("state", {})["accept_ticket"] = ticket
        try:
            await self.app(scope, receive, send)
        finally:
            ticket.release()
