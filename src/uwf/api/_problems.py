"""RFC 9457 problem details: the only shape an error leaves the API in."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from uwf.errors import (
    ConflictError,
    IdempotencyKeyReusedError,
    InputValidationError,
    MetadataError,
    NotFoundError,
    UwfError,
)

__all__ = ["ProblemError", "install_problem_handlers", "problem"]

log = structlog.get_logger("uwf.api")
MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    """Raise from a route to answer with a specific problem."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers
        self.extensions = extensions


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        reason = first.get("ctx", {}).get("error", "invalid JSON")
        return problem(
            400,
            "malformed-json",
            "Malformed JSON",
            f"the request body is not valid JSON: {reason}",
            instance=request.url.path,
        )
    listed = [{"location": "/".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in errors]
    where = {str(e["loc"][0]) for e in errors if e.get("loc")}
    status = 422 if where <= {"body"} else 400
    detail = "; ".join(f"{e['location']}: {e['message']}" for e in listed)
    return problem(
        status,
        "invalid-request",
        "Invalid request",
        detail,
        instance=request.url.path,
        errors=listed,
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem(
            exc.status,
            exc.slug,
            exc.title,
            exc.detail,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_problem(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed"}
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such route: {request.method} {request.url.path}"
        return problem(
            exc.status_code,
            slug,
            titles.get(exc.status_code, "HTTP error"),
            detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(UwfError)
    async def _uwf(request: Request, exc: UwfError) -> JSONResponse:
        path = request.url.path
        if isinstance(exc, InputValidationError):
            return problem(
                422, "invalid-input", "Invalid input", exc.message, instance=path, errors=exc.errors
            )
        if isinstance(exc, NotFoundError):
            return problem(404, "not-found", "Not found", exc.message, instance=path)
        if isinstance(exc, IdempotencyKeyReusedError):
            return problem(
                422, "idempotency-key-reused", "Idempotency-Key reused", exc.message, instance=path
            )
        if isinstance(exc, ConflictError):
            return problem(409, "conflict", "Conflict", exc.message, instance=path)
        if isinstance(exc, MetadataError):
            return problem(
                422,
                "invalid-metadata",
                "Invalid metadata",
                exc.message,
                instance=path,
                problems=[str(p) for p in exc.problems],
            )
        log.error("unexpected error", error=exc.message, path=path)
        return problem(500, "internal", "Internal error", exc.message, instance=path)

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeoutError)
    @app.exception_handler(OSError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # The Pipe DB is unreachable: say so, and never claim an action was accepted.
        log.error("database unavailable", error=type(exc).__name__)
        return problem(
            503,
            "database-unavailable",
            "Service unavailable",
            "the Pipe DB is unreachable; nothing was stored, try again",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return problem(
            500,
            "internal",
            "Internal error",
            "an unexpected error occurred; it has been logged",
            instance=request.url.path,
        )
