"""API Data Access: the HTTP API (FastAPI), with RFC 9457 problem details for every error."""

from uwf.api._accept import (
    accept_action,
    cancel_execution,
    find_connection,
    replay_execution,
    tenant_metadata,
    validate_action,
)
from uwf.api._problems import ProblemError
from uwf.api._views import execution_summary, execution_view
from uwf.api.app import create_app

__all__ = [
    "ProblemError",
    "accept_action",
    "cancel_execution",
    "create_app",
    "execution_summary",
    "execution_view",
    "find_connection",
    "replay_execution",
    "tenant_metadata",
    "validate_action",
]
