"""Where the governor's counters and pauses live: memory, or the Pipe DB."""

from __future__ import annotations

import time
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from uwf.store import governor_counters, governor_pauses

__all__ = ["LocalState", "SqlState", "State"]


class State(Protocol):
    async def count(self, key: str, window_start: float) -> int:
        """Count one request in the window starting at `window_start`; the count after it."""

    async def paused_until(self, key: str) -> tuple[float, str | None]:
        """Until when (Unix time) the connection is paused, and why."""

    async def pause(self, key: str, until: float, reason: str) -> None:
        """Pause the connection until `until`, unless it is already paused for longer."""


class LocalState:
    """In-memory state: right for one process (the embedded default)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, float], int] = {}
        self._pauses: dict[str, tuple[float, str]] = {}

    async def count(self, key: str, window_start: float) -> int:
        if len(self._counts) > 10_000:  # forget finished windows
            now = time.time()
            self._counts = {k: v for k, v in self._counts.items() if k[1] > now - 86_400}
        slot = (key, window_start)
        self._counts[slot] = self._counts.get(slot, 0) + 1
        return self._counts[slot]

    async def paused_until(self, key: str) -> tuple[float, str | None]:
        until, reason = self._pauses.get(key, (0.0, None))
        return until, reason

    async def pause(self, key: str, until: float, reason: str) -> None:
        if until > self._pauses.get(key, (0.0, ""))[0]:
            self._pauses[key] = (until, reason)


class SqlState:
    """State in PostgreSQL, shared by every worker: one upsert per counted request."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def count(self, key: str, window_start: float) -> int:
        statement = (
            pg_insert(governor_counters)
            .values(key=key, window_start=window_start, count=1)
            .on_conflict_do_update(
                index_elements=["key", "window_start"],
                set_={"count": governor_counters.c.count + 1},
            )
            .returning(governor_counters.c.count)
        )
        async with self._engine.begin() as conn:
            count = int((await conn.execute(statement)).scalar_one())
            if count == 1:  # a new window: forget those long past
                await conn.execute(
                    sa.delete(governor_counters).where(
                        governor_counters.c.key == key,
                        governor_counters.c.window_start < window_start - 2 * 86_400,
                    )
                )
            return count

    async def paused_until(self, key: str) -> tuple[float, str | None]:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(governor_pauses.c.until, governor_pauses.c.reason).where(
                        governor_pauses.c.key == key
                    )
                )
            ).first()
        return (float(row.until), row.reason) if row else (0.0, None)

    async def pause(self, key: str, until: float, reason: str) -> None:
        statement = (
            pg_insert(governor_pauses)
            .values(key=key, until=until, reason=reason)
            .on_conflict_do_update(
                index_elements=["key"],
                set_={"until": until, "reason": reason},
                where=governor_pauses.c.until < until,
            )
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)
