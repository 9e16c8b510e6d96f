"""The governor: per-connection budgets, pauses after 429s, and circuit breakers.

DESIGN: budgets hold across every worker process. The state — each connection's request
schedule, daily count, concurrency leases and pauses — lives in Redis when
`UWF_GOVERNOR_URL` names one, else in the Pipe DB when it is PostgreSQL (every worker sees
it); the embedded default (SQLite, one process) keeps it in memory. In any interval as long
as a connection's window, no more than its budget of requests is admitted. Circuit breakers
count failures per process; an open breaker pauses the connection for every worker.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from uwf.governor._governor import Admission, Governor
from uwf.governor._redis import RedisState
from uwf.governor._sql import SqlState
from uwf.governor._state import Budget, Grant, LocalState, State

__all__ = [
    "Admission",
    "Budget",
    "Governor",
    "Grant",
    "LocalState",
    "RedisState",
    "SqlState",
    "State",
    "open_state",
]


def open_state(governor_url: str | None, engine: AsyncEngine) -> State:
    """The state for this deployment: Redis if named, the Pipe DB if PostgreSQL, else memory."""
    if governor_url:
        return RedisState.from_url(governor_url)
    if engine.dialect.name == "postgresql":
        return SqlState(engine)
    return LocalState()
