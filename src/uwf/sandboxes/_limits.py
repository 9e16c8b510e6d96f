"""Rate limiters the sandbox harness and CRM routes share.

Two shapes cover the CRMs UWF drives: an account-wide fixed window (requests per minute)
and per-key sliding windows (e.g. Zendesk's updates per user per ticket). A CRM declares
its keyed limits as `KeyedLimit` values; `_harness.SandboxControl` owns the limiters.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["FixedWindowLimiter", "KeyedLimit", "LimitDecision", "SlidingWindowLimiter"]


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """What a limiter said about one request; ``reset_s`` is whole seconds, at least 1."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int


@dataclass(frozen=True, slots=True)
class KeyedLimit:
    """A per-key limit a CRM declares (settable through ``_control``; None disables)."""

    default: int | None
    window_s: float


class FixedWindowLimiter:
    """N requests per window; the window opens at its first request.

    Anchoring on the first request (not the wall-clock minute) keeps tests from flaking
    when a minute boundary falls between two calls.
    """

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._start = 0.0
        self._count = 0

    def acquire(self) -> LimitDecision:
        """Count one request if the window has room."""
        now = self._clock()
        if now - self._start >= self.window_s:
            self._start, self._count = now, 0
        reset = max(1, math.ceil(self._start + self.window_s - now))
        if self._count >= self.limit:
            return LimitDecision(False, self.limit, 0, reset)
        self._count += 1
        return LimitDecision(True, self.limit, max(0, self.limit - self._count), reset)

    def reset(self) -> None:
        """Forget the current window."""
        self._start, self._count = 0.0, 0


class SlidingWindowLimiter:
    """N events per key within the trailing window (e.g. updates per user per ticket)."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._events: dict[Hashable, deque[float]] = {}

    def acquire(self, key: Hashable, limit: int) -> LimitDecision:
        """Count one event for ``key`` if fewer than ``limit`` happened in the window."""
        now = self._clock()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if len(events) >= limit:
            reset = max(1, math.ceil(events[0] + self.window_s - now))
            return LimitDecision(False, limit, 0, reset)
        events.append(now)
        return LimitDecision(True, limit, limit - len(events), math.ceil(self.window_s))

    def reset(self) -> None:
        """Forget every key."""
        self._events.clear()
