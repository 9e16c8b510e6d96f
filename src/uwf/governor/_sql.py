"""Governor state in PostgreSQL, shared by every worker that uses the same Pipe DB.

Rows (the data is ephemeral; the tables come from migration 0004):

- `governor_pauses[key]`: the connection's pause (after a 429, a used-up budget, or pacing).
- `governor_pauses[key#rate]`: the GCRA's theoretical arrival time, in `until`.
- `governor_pauses[key#slot<i>]`, i < max_concurrency: a concurrency slot, leased until
  `until` by the holder named in `reason`. A killed worker's slot frees itself at expiry.
- `governor_counters[key, day start]`: requests counted against the daily quota.

An admission is one statement: the pause is read, a free slot is locked with SKIP LOCKED (so
workers never queue behind each other's slots), then the daily counter and the GCRA row are
updated by `INSERT … ON CONFLICT DO UPDATE … WHERE`. PostgreSQL re-checks that `WHERE` on the
newest row version under the row lock, so two workers can never both take the last unit of a
budget. The GCRA row is the only row every admission to one connection writes; it is locked
for the statement only (tens of microseconds), not for a transaction.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from uwf.governor._state import Budget, Grant
from uwf.store import governor_counters, governor_pauses

__all__ = ["SqlState"]

# The statement's parts. `@x` stands for the float parameter `:x`; `FROM_SOURCE` for the part
# before (a part runs only for the row the one before it let through).
_PAUSED = "paused AS (SELECT until, reason FROM governor_pauses WHERE key = :key AND until > @now)"
_NOT_PAUSED = "(SELECT 1) AS go WHERE NOT EXISTS (SELECT 1 FROM paused)"
_SLOT = (
    "free AS (SELECT key FROM governor_pauses WHERE key = ANY(:slots) AND until <= @now "
    "AND NOT EXISTS (SELECT 1 FROM paused) ORDER BY until LIMIT 1 FOR UPDATE SKIP LOCKED), "
    "leased AS (UPDATE governor_pauses AS s SET until = @now + @lease_seconds, reason = :token "
    "FROM free WHERE s.key = free.key RETURNING s.key)"
)
_DAY = (
    "day AS (INSERT INTO governor_counters AS c (key, window_start, count) "
    "SELECT :key, @day, 1 FROM_SOURCE "
    "ON CONFLICT (key, window_start) DO UPDATE SET count = c.count + 1 "
    "WHERE c.count < :daily RETURNING count)"
)
_RATE = (
    "rate AS (INSERT INTO governor_pauses AS r (key, until, reason) "
    "SELECT :rate_key, @now + @interval, 'rate' FROM_SOURCE "
    "ON CONFLICT (key) DO UPDATE SET until = greatest(r.until, @now) + @interval "
    "WHERE r.until <= @now + @tolerance RETURNING until)"
)
_SLOT_COLUMNS = (
    "EXISTS (SELECT 1 FROM leased) AS leased, "
    "(SELECT min(until) FROM governor_pauses WHERE key = ANY(:slots)) AS slot_free_at"
)
_RATE_COLUMNS = "(SELECT until FROM governor_pauses WHERE key = :rate_key) AS tat"
# The state is ephemeral: its commits need not wait for the WAL to reach the disk (a crash of
# PostgreSQL itself may forget the last few milliseconds of admissions). This transaction
# only, set inside the one statement, so it costs no round trip.
_NO_FLUSH_WAIT = "set_config('synchronous_commit', 'off', true) AS no_flush_wait"


def _admission_sql(budget: Budget) -> sa.TextClause:
    """The one statement that admits a request (its parts depend on which limits are set)."""
    ctes, columns, source = [_PAUSED], [], _NOT_PAUSED
    for wanted, cte, name, extra in (
        (budget.concurrency is not None, _SLOT, "leased", _SLOT_COLUMNS),
        (budget.daily is not None, _DAY, "day", "EXISTS (SELECT 1 FROM day) AS counted"),
        (budget.interval is not None, _RATE, "rate", _RATE_COLUMNS),
    ):
        if wanted:
            ctes.append(cte.replace("FROM_SOURCE", "FROM " + source))
            columns.append(extra)
            source = name
    columns += [
        _NO_FLUSH_WAIT,
        "(SELECT until FROM paused) AS paused_until",
        "(SELECT reason FROM paused) AS paused_reason",
        "EXISTS (SELECT 1 FROM SOURCE) AS admitted".replace("SOURCE", source),
    ]
    sql = "WITH " + ", ".join(ctes) + " SELECT " + ", ".join(columns)
    sql = re.sub(r"@(\w+)", r"CAST(:\1 AS double precision)", sql)
    statement = sa.text(sql)
    if budget.concurrency is not None:
        statement = statement.bindparams(sa.bindparam("slots", type_=ARRAY(sa.String)))
    return statement


class SqlState:
    """State in PostgreSQL: one statement per admission, shared by every worker."""

    def __init__(self, engine: AsyncEngine) -> None:
        # Every write here is one statement: run it in autocommit, so it costs one round trip
        # (no BEGIN and COMMIT of its own).
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._statements: dict[tuple[bool, bool, bool], sa.TextClause] = {}
        self._slots: dict[tuple[str, int], list[str]] = {}
        self._slot_keys_of: dict[str, list[str]] = {}  # every slot row this process made

    async def acquire(self, key: str, now: float, budget: Budget, token: str) -> Grant:
        shape = (
            budget.concurrency is not None,
            budget.daily is not None,
            budget.interval is not None,
        )
        statement = self._statements.get(shape)
        if statement is None:
            statement = self._statements[shape] = _admission_sql(budget)
        params: dict[str, Any] = {"key": key, "now": now}
        slots: list[str] = []
        if budget.concurrency is not None:
            slots = await self._slot_keys(key, budget.concurrency)
            params |= {"slots": slots, "lease_seconds": budget.lease_seconds, "token": token}
        if budget.daily is not None:
            params |= {"day": budget.day_start, "daily": budget.daily}
        if budget.interval is not None:
            params |= {
                "rate_key": f"{key}#rate",
                "interval": budget.interval,
                "tolerance": budget.tolerance,
            }
        async with self._engine.connect() as conn:
            row = (await conn.execute(statement, params)).one()
        if row.admitted:
            return Grant(True, lease=token if budget.concurrency is not None else None)
        # Refused: give back what the statement took before the budget that refused.
        grant = self._refusal(row, now, budget)
        if budget.concurrency is not None and row.leased:
            await self.release(key, token)
        if budget.daily is not None and row.counted:
            async with self._engine.connect() as conn:
                await conn.execute(
                    sa.update(governor_counters)
                    .where(
                        governor_counters.c.key == key,
                        governor_counters.c.window_start == budget.day_start,
                    )
                    .values(count=governor_counters.c.count - 1)
                )
        return grant

    @staticmethod
    def _refusal(row: Any, now: float, budget: Budget) -> Grant:
        if row.paused_until is not None:
            return Grant(False, float(row.paused_until) - now, "paused", row.paused_reason)
        if budget.concurrency is not None and not row.leased:
            free_at = float(row.slot_free_at) if row.slot_free_at is not None else now
            return Grant(False, max(free_at - now, 0.0), "concurrency")
        if budget.daily is not None and not row.counted:
            return Grant(False, budget.day_start + 86_400 - now, "daily")
        tat = float(row.tat) if row.tat is not None else now
        return Grant(False, max(tat - budget.tolerance - now, 0.0), "rate")

    async def _slot_keys(self, key: str, concurrency: int) -> list[str]:
        """The connection's slot rows, created the first time this process needs them."""
        slots = self._slots.get((key, concurrency))
        if slots is None:
            slots = [f"{key}#slot{i}" for i in range(concurrency)]
            async with self._engine.connect() as conn:
                await conn.execute(
                    pg_insert(governor_pauses)
                    .values([{"key": s, "until": 0.0, "reason": None} for s in slots])
                    .on_conflict_do_nothing(index_elements=["key"])
                )
            self._slots[(key, concurrency)] = slots
            known = self._slot_keys_of.setdefault(key, [])
            known.extend(s for s in slots if s not in known)
        return slots

    async def release(self, key: str, lease: str) -> None:
        # Only the holder's own lease: after expiry the slot may belong to someone else.
        async with self._engine.connect() as conn:
            await conn.execute(
                sa.update(governor_pauses)
                .where(
                    governor_pauses.c.key.in_(self._slot_keys_of.get(key, [])),
                    governor_pauses.c.reason == lease,
                )
                .values(until=0.0, reason=None)
            )

    async def renew(self, key: str, leases: list[str], until: float) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(
                sa.update(governor_pauses)
                .where(
                    governor_pauses.c.key.in_(self._slot_keys_of.get(key, [])),
                    governor_pauses.c.reason.in_(leases),
                )
                .values(until=until)
            )

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
        async with self._engine.connect() as conn:
            await conn.execute(statement)

    async def pace(self, key: str, now: float, interval: float, reason: str) -> None:
        row = governor_pauses.c
        excluded = pg_insert(governor_pauses).excluded
        statement = (
            pg_insert(governor_pauses)
            .values(key=key, until=now + interval, reason=reason)
            .on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "until": sa.func.greatest(row.until, now) + interval,
                    # A longer pause keeps its own reason (a 429 says more than pacing).
                    "reason": sa.case((row.until > now, row.reason), else_=excluded.reason),
                },
            )
        )
        async with self._engine.connect() as conn:
            await conn.execute(statement)

    async def close(self) -> None:
        return None
