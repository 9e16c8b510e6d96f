"""What an admission asks of the shared state, and the in-memory state (one process).

The rate budget is a GCRA (generic cell rate algorithm) sized so that no interval of the
window's length ever holds more than the budget: with a budget of N per W and a burst of B,
requests are spaced `T = W / (N - B + 1)` apart on average and may run `tau = (B - 1) T`
ahead of that schedule. Any N + 1 admitted requests then span at least `N T - tau = W`, so a
sliding window of length W sees at most N. Long-run throughput is `(N - B + 1) / N` of the
budget (95% with the default burst of 5%). The whole state per connection is one number —
the theoretical arrival time — so every back end updates it in one atomic step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["BURST_FRACTION", "Budget", "Grant", "LocalState", "State"]

# Share of the budget that may go at once from idle; the rest is spread evenly.
BURST_FRACTION = 0.05
# Float timestamps near 1.7e9 s are exact to ~0.25 µs; a microsecond per emission keeps
# rounding from ever shortening the spacing below what the bound needs.
_MARGIN = 1e-6


@dataclass(frozen=True, slots=True)
class Budget:
    """One connection's limits, in the form the state applies them.

    `interval`/`tolerance` are the GCRA's `T` and `tau` (no rate budget when `interval` is
    None); `daily` counts per UTC day starting at `day_start`; `concurrency` leases expire
    after `lease_seconds` unless renewed.
    """

    interval: float | None = None
    tolerance: float = 0.0
    daily: int | None = None
    day_start: float = 0.0
    concurrency: int | None = None
    lease_seconds: float = 30.0

    @classmethod
    def of(
        cls,
        requests: int | None,
        window: float,
        daily: int | None,
        concurrency: int | None,
        now: float,
        lease_seconds: float,
    ) -> Budget:
        interval = tolerance = None
        if requests is not None:
            burst = max(1, math.floor(requests * BURST_FRACTION))
            interval = window / (requests - burst + 1) + _MARGIN
            tolerance = (burst - 1) * interval
        return cls(
            interval=interval,
            tolerance=tolerance or 0.0,
            daily=daily,
            day_start=math.floor(now / 86_400) * 86_400,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """The state's answer: admitted (holding `lease` if concurrency is limited) or not.

    When refused, `limit` says which budget refused ("paused", "concurrency", "rate",
    "daily") and `wait` how long until it may have room; `reason` is a paused connection's
    recorded reason.
    """

    admitted: bool
    wait: float = 0.0
    limit: str | None = None
    reason: str | None = None
    lease: str | None = field(default=None, compare=False)


class State(Protocol):
    """Where budgets live. Every method is one atomic step (one round trip when shared)."""

    async def acquire(self, key: str, now: float, budget: Budget, token: str) -> Grant:
        """Admit one request if no budget refuses it; count it against all of them."""

    async def release(self, key: str, lease: str) -> None:
        """Give back a concurrency slot taken by `acquire`."""

    async def renew(self, key: str, leases: list[str], until: float) -> None:
        """Extend leases still held (a long request must not lose its slot)."""

    async def paused_until(self, key: str) -> tuple[float, str | None]:
        """Until when (Unix time) the connection is paused, and why."""

    async def pause(self, key: str, until: float, reason: str) -> None:
        """Pause the connection until `until`, unless it is already paused for longer."""

    async def pace(self, key: str, now: float, interval: float, reason: str) -> None:
        """Push the connection's next request `interval` past the later of now and its pause."""

    async def close(self) -> None:
        """Let go of connections."""


@dataclass
class _Connection:
    tat: float = 0.0
    day: float = 0.0
    day_count: int = 0
    leases: dict[str, float] = field(default_factory=dict)
    paused_until: float = 0.0
    reason: str | None = None


class LocalState:
    """In-memory state: right for one process (the embedded default)."""

    def __init__(self) -> None:
        self._connections: dict[str, _Connection] = {}

    def _get(self, key: str) -> _Connection:
        found = self._connections.get(key)
        if found is None:
            found = self._connections[key] = _Connection()
        return found

    async def acquire(self, key: str, now: float, budget: Budget, token: str) -> Grant:
        c = self._get(key)
        if c.paused_until > now:
            return Grant(False, c.paused_until - now, "paused", c.reason)
        if budget.concurrency is not None:
            c.leases = {k: v for k, v in c.leases.items() if v > now}
            if len(c.leases) >= budget.concurrency:
                return Grant(False, min(c.leases.values()) - now, "concurrency")
        if budget.daily is not None:
            if c.day != budget.day_start:
                c.day, c.day_count = budget.day_start, 0
            if c.day_count >= budget.daily:
                return Grant(False, budget.day_start + 86_400 - now, "daily")
        if budget.interval is not None:
            tat = max(c.tat, now)
            if tat > now + budget.tolerance:
                return Grant(False, tat - budget.tolerance - now, "rate")
            c.tat = tat + budget.interval
        if budget.daily is not None:
            c.day_count += 1
        lease = None
        if budget.concurrency is not None:
            lease = token
            c.leases[token] = now + budget.lease_seconds
        return Grant(True, lease=lease)

    async def release(self, key: str, lease: str) -> None:
        self._get(key).leases.pop(lease, None)

    async def renew(self, key: str, leases: list[str], until: float) -> None:
        held = self._get(key).leases
        for lease in leases:
            if lease in held:
                held[lease] = until

    async def paused_until(self, key: str) -> tuple[float, str | None]:
        c = self._get(key)
        return c.paused_until, c.reason

    async def pause(self, key: str, until: float, reason: str) -> None:
        c = self._get(key)
        if until > c.paused_until:
            c.paused_until, c.reason = until, reason

    async def pace(self, key: str, now: float, interval: float, reason: str) -> None:
        c = self._get(key)
        if c.paused_until <= now:
            c.reason = reason
        c.paused_until = max(c.paused_until, now) + interval

    async def close(self) -> None:
        return None
