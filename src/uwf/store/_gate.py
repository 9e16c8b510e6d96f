"""Who gets the embedded default's one SQLite connection next: the API before the worker.

SQLite has one writer, and the embedded default gives the Pipe DB one pooled connection, so
every transaction of `uwf serve` — the API's and the in-process worker's — queues for it. The
pool's queue is first come, first served: under a stream of actions a `202` waited behind every
ledger write and finish the worker had queued before it. Here the transaction that stores an
accepted action (marked by `api_first`) is served before any waiting worker request; it still
waits for the one transaction in flight, and the worker is never starved, since it runs between
accepts. Only that transaction: marking the whole request (its key and metadata reads, its
wait for the result) held executions up to 0.6 s at 16 concurrent callers in the benchmark.

PostgreSQL has a pool of connections and row locks, and gets no gate.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["GatedEngine", "api_first"]

# 0: the API accepting an action; 1: everything else (the worker, the CLI).
_priority: contextvars.ContextVar[int] = contextvars.ContextVar("uwf_db_priority", default=1)


@contextmanager
def api_first() -> Iterator[None]:
    """Database requests made inside (by this task and tasks it starts) go first."""
    token = _priority.set(0)
    try:
        yield
    finally:
        _priority.reset(token)


class _PriorityLock:
    """An asyncio lock whose waiters are served lowest priority first, then in arrival order."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: int) -> None:
        if not self._held and not self._waiters:
            self._held = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), waiter))
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed the lock just as it was cancelled: pass it on
            else:
                self._waiters = [w for w in self._waiters if w[2] is not waiter]
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)  # the lock passes to it, still held
                return
        self._held = False


class GatedEngine:
    """An `AsyncEngine` whose `begin()` and `connect()` take turns by priority (SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._lock = _PriorityLock()

    @asynccontextmanager
    async def _turn(self, opened: Any) -> AsyncIterator[AsyncConnection]:
        await self._lock.acquire(_priority.get())
        try:
            async with opened as conn:
                yield conn
        finally:
            self._lock.release()

    def begin(self) -> Any:
        return self._turn(self._engine.begin())

    def connect(self) -> Any:
        return self._turn(self._engine.connect())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)
