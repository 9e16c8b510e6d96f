"""Admit a request to a connection, or say how long to wait; learn from each answer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog

from uwf.connectors import LimitsSpec, RateLimitHeadersSpec
from uwf.governor._headers import reported_budget
from uwf.governor._state import Budget, State

__all__ = ["Admission", "Governor"]

log = structlog.get_logger("uwf.governor")

# When the CRM reports at most this share of its budget left, spread the rest until the reset.
PACE_BELOW = 0.10
# ... or, when it does not say how large its budget is, at most this many requests left.
PACE_BELOW_COUNT = 10
# A request refused because every concurrency slot is taken asks again this soon: slots are
# given back when requests finish, long before their leases would expire.
CONCURRENCY_RETRY = 0.5


@dataclass(frozen=True, slots=True)
class Admission:
    """`wait` is 0 when the request may go now; otherwise seconds to wait, and why.

    An admitted request to a connection with `max_concurrency` holds `lease` (one of the
    connection's slots, shared by every worker) until `Governor.slot` gives it back.
    """

    wait: float = 0.0
    reason: str | None = None
    lease: str | None = field(default=None, compare=False)


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False  # half open: one probe is out, the others wait for its answer


class Governor:
    """Keeps each connection within its budget, together with every other worker's governor.

    `clock` gives Unix time (tests inject their own); `lease_seconds` is how long a
    concurrency slot stays taken if its holder dies (a live holder renews it).

    Example:
        governor = Governor(LocalState())
        admission = await governor.admit("acme-zendesk", limits)
        if admission.wait == 0:
            async with governor.slot("acme-zendesk", limits, admission):
                ...  # the request
    """

    def __init__(
        self,
        state: State,
        *,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = 30.0,
    ) -> None:
        self._state = state
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._breakers: dict[str, _Breaker] = {}
        self._tokens = map(f"{uuid.uuid4().hex[:12]}-{{}}".format, itertools.count())
        self._held: dict[str, set[str]] = {}
        self._renewer: asyncio.Task[None] | None = None

    async def admit(self, key: str, limits: LimitsSpec) -> Admission:
        """Count the request against the connection's budgets if it may go now."""
        now = self._clock()
        breaker = self._breakers.get(key)
        probe = False
        if breaker is not None and breaker.failures >= limits.breaker_failures:
            if now < breaker.open_until:
                why = (
                    "circuit breaker half open: waiting for the probe's answer"
                    if breaker.probing
                    else f"circuit breaker open after {breaker.failures} failures in a row"
                )
                return Admission(breaker.open_until - now, why)
            probe = True  # half open: this request is the probe
        budget = Budget.of(
            limits.requests,
            limits.window_seconds,
            limits.daily,
            limits.max_concurrency,
            now,
            self._lease_seconds,
        )
        grant = await self._state.acquire(key, now, budget, next(self._tokens))
        if not grant.admitted:
            wait = max(grant.wait, 0.001)
            if grant.limit == "paused":
                return Admission(wait, grant.reason or "connection paused")
            if grant.limit == "concurrency":
                why = f"all {limits.max_concurrency} concurrent requests in flight"
                return Admission(min(wait, CONCURRENCY_RETRY), why)
            if grant.limit == "daily":
                return Admission(wait, f"daily quota of {limits.daily} used")
            return Admission(
                wait, f"budget of {limits.requests} requests per {limits.window_seconds:g} s used"
            )
        if probe and breaker is not None:
            # Should the probe never answer (its worker died), another goes after a while.
            breaker.probing, breaker.open_until = True, now + limits.breaker_open_seconds
        return Admission(lease=grant.lease)

    @asynccontextmanager
    async def slot(self, key: str, limits: LimitsSpec, admission: Admission) -> AsyncIterator[None]:
        """Hold the admission's concurrency slot while the request runs; give it back after."""
        lease = admission.lease
        if lease is None:
            yield
            return
        self._held.setdefault(key, set()).add(lease)
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_leases(), name="uwf-governor-leases")
        try:
            yield
        finally:
            held = self._held.get(key, set())
            held.discard(lease)
            if not held:
                self._held.pop(key, None)
            if not self._held and self._renewer is not None:
                self._renewer.cancel()
                self._renewer = None
            try:
                await self._state.release(key, lease)
            except Exception as exc:  # the lease expires by itself; the answer matters more
                log.warning("could not release a concurrency slot", connection=key, error=str(exc))

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            until = self._clock() + self._lease_seconds
            for key, leases in list(self._held.items()):
                with contextlib.suppress(Exception):  # retried at the next turn
                    await self._state.renew(key, sorted(leases), until)

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
        now = self._clock()
        reported = reported_budget(headers_spec, headers, now)
        reset_in = reported.reset_in if reported and reported.reset_in else None
        horizon = reset_in or self._default_horizon(limits, now)
        if status == 429:
            wait = retry_after if retry_after is not None else horizon
            await self._state.pause(key, now + wait, f"the CRM answered 429; retry in {wait:g} s")
        elif reported is not None and reported.remaining <= 0:
            await self._state.pause(key, now + horizon, "the CRM reports its budget used up")
        elif reported is not None:
            size = reported.limit or limits.requests
            low = size * PACE_BELOW if size else PACE_BELOW_COUNT
            if reported.remaining <= low:
                left = math.floor(reported.remaining)
                await self._state.pace(
                    key,
                    now,
                    horizon / max(left, 1),
                    f"pacing: the CRM reports {left} requests left for {horizon:g} s",
                )
        breaker = self._breakers.setdefault(key, _Breaker())
        if status is None or status >= 500:
            breaker.failures += 1
            if breaker.failures >= limits.breaker_failures:
                breaker.open_until, breaker.probing = now + limits.breaker_open_seconds, False
                # Every other worker stops calling this CRM too: the open breaker is a pause in
                # the shared state (extend-only, so a longer 429 pause is kept).
                await self._state.pause(
                    key,
                    breaker.open_until,
                    f"circuit breaker open after {breaker.failures} failures in a row",
                )
        else:
            breaker.failures, breaker.open_until, breaker.probing = 0, 0.0, False

    @staticmethod
    def _default_horizon(limits: LimitsSpec, now: float) -> float:
        """When the CRM does not say when its budget resets: our window, else the UTC day."""
        if limits.requests is None and limits.daily is not None:
            return math.floor(now / 86_400) * 86_400 + 86_400 - now
        return limits.window_seconds

    async def close(self) -> None:
        """Stop renewing leases and close the state's connections."""
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        await self._state.close()
