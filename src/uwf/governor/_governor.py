"""Admit a request to a connection, or say how long to wait; learn from each answer."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from uwf.connectors import LimitsSpec, RateLimitHeadersSpec
from uwf.governor._state import State

__all__ = ["Admission", "Governor"]


@dataclass(frozen=True, slots=True)
class Admission:
    """`wait` is 0 when the request may go now; otherwise seconds to wait, and why."""

    wait: float = 0.0
    reason: str | None = None


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0


class Governor:
    """Keeps each connection within its budget. One per worker process."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._breakers: dict[str, _Breaker] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def admit(self, key: str, limits: LimitsSpec) -> Admission:
        """Count the request against the budget if it may go now."""
        now = time.time()
        until, why = await self._state.paused_until(key)
        if until > now:
            return Admission(until - now, why or "connection paused")
        breaker = self._breakers.get(key)
        if breaker is not None and breaker.open_until > now:
            return Admission(
                breaker.open_until - now,
                f"circuit breaker open after {breaker.failures} failures in a row",
            )
        if limits.requests is not None:
            start = math.floor(now / limits.window_seconds) * limits.window_seconds
            if await self._state.count(key, start) > limits.requests:
                return Admission(
                    start + limits.window_seconds - now,
                    f"budget of {limits.requests} requests per {limits.window_seconds:g} s used",
                )
        if limits.daily is not None:
            day = math.floor(now / 86_400) * 86_400
            if await self._state.count(f"{key}#day", day) > limits.daily:
                return Admission(day + 86_400 - now, f"daily quota of {limits.daily} used")
        return Admission()

    @asynccontextmanager
    async def slot(self, key: str, limits: LimitsSpec) -> AsyncIterator[None]:
        """Hold one of the connection's concurrent-request slots (per process)."""
        if limits.max_concurrency is None:
            yield
            return
        semaphore = self._slots.setdefault(key, asyncio.Semaphore(limits.max_concurrency))
        async with semaphore:
            yield

    async def observe(
        self,
        key: str,
        limits: LimitsSpec,
        headers_spec: RateLimitHeadersSpec,
        status: int | None,
        headers: Mapping[str, str],
        retry_after: float | None = None,
    ) -> None:
        """Learn from an answer: the CRM's remaining budget, a 429, a run of failures."""
        now = time.time()
        lowered = {k.lower(): v for k, v in headers.items()}
        if status == 429:
            wait = retry_after if retry_after is not None else limits.window_seconds
            await self._state.pause(key, now + wait, f"the CRM answered 429; retry in {wait:g} s")
        remaining = _number(
            lowered.get(headers_spec.remaining.lower()) if headers_spec.remaining else None
        )
        if remaining is not None and remaining <= 0:
            reset = _number(lowered.get(headers_spec.reset.lower()) if headers_spec.reset else None)
            if reset is not None and headers_spec.reset_format == "unix":
                reset -= now
            wait = reset if reset is not None and reset > 0 else limits.window_seconds
            await self._state.pause(key, now + wait, "the CRM reports its budget used up")
        breaker = self._breakers.setdefault(key, _Breaker())
        if status is None or status >= 500:
            breaker.failures += 1
            if breaker.failures >= limits.breaker_failures:
                breaker.open_until = now + limits.breaker_open_seconds
        else:
            breaker.failures = 0
            breaker.open_until = 0.0


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.split(";")[0].split(",")[0].strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
