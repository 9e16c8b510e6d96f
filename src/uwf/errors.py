"""The one error tree of UWF, branched by what the caller should do.

```
UwfError
├── MetadataError            invalid metadata: fix the YAML, never retried
├── InputValidationError     a caller's request is wrong: answer 4xx, store nothing
├── NotFoundError            a tenant, workflow or execution that does not exist (for this caller)
├── ConflictError            the request contradicts the current state (cancel a finished run)
│   └── IdempotencyKeyReusedError   an Idempotency-Key reused with another body
├── ExpressionError          an expression failed or exceeded its limits at run time
└── ConnectorError           talking to a CRM went wrong
    ├── RetryableError       try again later (429, 503, connection refused); `retry_after` seconds
    ├── FatalError           the CRM said no (4xx); retrying cannot help
    └── OutcomeUnknownError  the request left but no answer came back: never re-send blindly
```

Errors carry context (tenant, connection, request id), never secrets. Only the API layer turns
them into HTTP responses.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConflictError",
    "ConnectorError",
    "ExpressionError",
    "FatalError",
    "IdempotencyKeyReusedError",
    "InputValidationError",
    "MetadataError",
    "NotFoundError",
    "OutcomeUnknownError",
    "RetryableError",
    "UwfError",
]


class UwfError(Exception):
    """Base of every error UWF raises on purpose."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        return self.message


class MetadataError(UwfError):
    """Metadata is invalid. `problems` lists every problem found, not only the first."""

    def __init__(self, message: str, problems: list[Any] | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.problems = problems or []


class InputValidationError(UwfError):
    """A caller's input is invalid; `errors` holds one entry per problem with its JSON path."""

    def __init__(
        self, message: str, errors: list[dict[str, Any]] | None = None, **context: Any
    ) -> None:
        super().__init__(message, **context)
        self.errors = errors or []


class NotFoundError(UwfError):
    """The thing asked for does not exist, or the caller may not see it."""


class ConflictError(UwfError):
    """The request contradicts the current state, e.g. cancelling a finished execution."""


class IdempotencyKeyReusedError(ConflictError):
    """An Idempotency-Key was used before with a different request."""


class ExpressionError(UwfError):
    """An expression could not be evaluated, or exceeded its size or time limits."""


class ConnectorError(UwfError):
    """A CRM call failed. `status` is the HTTP status when there was one.

    `request` and `response` are the redacted records the step ledger keeps.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request: dict[str, Any] | None = None,
        response: dict[str, Any] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.status = status
        self.request = request
        self.response = response


class RetryableError(ConnectorError):
    """Worth retrying; `retry_after` is the CRM's own hint in seconds, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class FatalError(ConnectorError):
    """The CRM rejected the request; sending it again cannot succeed."""


class OutcomeUnknownError(ConnectorError):
    """The request was sent but no response arrived: the CRM may or may not have applied it."""
