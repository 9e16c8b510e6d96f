"""Request limits applied before any route runs: body size and JSON nesting depth.

A pure ASGI middleware, so an oversized body is refused while it is read (never buffered
past the limit) and a deeply nested document never reaches a JSON parser. It also gives each
request an id (`X-Request-Id`, the caller's if it sent a sane one), which the audit log keeps.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uwf.api._problems import problem

__all__ = ["LimitsMiddleware", "json_depth"]

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings do not count)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        path = scope.get("path", "")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(path)(scope, receive, send_with_id)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; let the app see the disconnect
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await self._too_large(path)(scope, receive, send_with_id)
                return
        if body and "json" in headers.get("content-type", ""):
            depth = json_depth(body)
            if depth > self.max_json_depth:
                response = problem(
                    400,
                    "json-too-deep",
                    "JSON nested too deeply",
                    f"the request body nests {depth} levels deep; at most "
                    f"{self.max_json_depth} are accepted",
                    instance=path,
                )
                await response(scope, receive, send_with_id)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)

    def _too_large(self, path: str) -> Any:
        return problem(
            413,
            "body-too-large",
            "Request body too large",
            f"the request body is over the limit of {self.max_body_bytes} bytes",
            instance=path,
        )
