"""The harness around every CRM sandbox: `_control`, faults, stats and the account limit.

Layers, outermost first::

    SandboxApp (pure ASGI)          `_control`, stats, latency, account rate limit,
      │                             injected faults, rate-limit headers, drop-after-write
      └── CRM router (Starlette)    auth, routes, validation, the CRM's own error bodies
            └── SandboxStore        SQLite file under ``home/sandboxes``, one lock, WAL

A CRM plugs in through `SandboxProfile` (its limits, headers and canned error responses).
Handlers call `mark_write` after committing, which is what lets the harness decide to drop
the connection *after* the write, the failure mode that makes retries create duplicates.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uwf.sandboxes._common import Json
from uwf.sandboxes._limits import (
    FixedWindowLimiter,
    KeyedLimit,
    LimitDecision,
    SlidingWindowLimiter,
)
from uwf.sandboxes._store import SandboxStore

__all__ = ["ControlError", "SandboxApp", "SandboxControl", "SandboxProfile", "mark_write"]

_CONTEXT_KEY = "uwf.sandbox"

# --------------------------------------------------------------------------- the plug-in


class SandboxProfile(Protocol):
    """What a CRM tells the shared harness: its limits, headers and canned failures."""

    @property
    def crm(self) -> str:
        """Registry id, e.g. ``zendesk``."""

    @property
    def rate_limit_per_minute(self) -> int:
        """Default account-wide limit."""

    @property
    def keyed_limits(self) -> Mapping[str, KeyedLimit]:
        """Extra limits by `_control` key, e.g. ``ticket_update_limit``."""

    @property
    def injectable_statuses(self) -> frozenset[int]:
        """Statuses `_control` may inject."""

    def rate_limit_headers(self, decision: LimitDecision) -> list[tuple[str, str]]:
        """Headers the CRM puts on every API response."""

    def rate_limited(self, decision: LimitDecision) -> Response:
        """The CRM's response when the account limit is exhausted."""

    def injected_error(self, status: int) -> Response:
        """The CRM's real body and headers for an injected ``status``."""


# --------------------------------------------------------------------------- control


class ControlError(ValueError):
    """A `_control` body the sandbox refuses; ``key`` names the offending field."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _rate(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ControlError(key, f"{key} must be a number between 0 and 1")
    return float(value)


def _count(key: str, value: Any, *, minimum: int, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or null" if nullable else ""
        raise ControlError(key, f"{key} must be an integer >= {minimum}{extra}")
    return value


@dataclass(slots=True)
class _Stats:
    requests_total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)  # "GET /api/v2/…": what was asked
    injected: Counter[str] = field(default_factory=Counter)
    writes: int = 0
    dropped_after_write: int = 0
    max_requests_1s: int = 0
    max_requests_60s: int = 0
    last_1s: deque[float] = field(default_factory=deque)
    last_60s: deque[float] = field(default_factory=deque)

    def arrival(self, now: float) -> None:
        self.requests_total += 1
        for window, span in ((self.last_1s, 1.0), (self.last_60s, 60.0)):
            window.append(now)
            while window[0] <= now - span:
                window.popleft()
        self.max_requests_1s = max(self.max_requests_1s, len(self.last_1s))
        self.max_requests_60s = max(self.max_requests_60s, len(self.last_60s))

    def snapshot(self) -> Json:
        return {
            "requests_total": self.requests_total,
            "by_status": dict(sorted(self.by_status.items())),
            "by_route": dict(sorted(self.by_route.items())),
            "injected": dict(sorted(self.injected.items())),
            "writes": self.writes,
            "dropped_after_write": self.dropped_after_write,
            "max_requests_1s": self.max_requests_1s,
            "max_requests_60s": self.max_requests_60s,
        }


class SandboxControl:
    """Fault settings, limiters and stats behind ``{prefix}/_control``."""

    def __init__(
        self, profile: SandboxProfile, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.account = FixedWindowLimiter(profile.rate_limit_per_minute, 60.0, clock)
        self._keyed = {
            name: SlidingWindowLimiter(spec.window_s, clock)
            for name, spec in profile.keyed_limits.items()
        }
        self.reset()

    def reset(self) -> None:
        """Back to the profile's defaults; stats and limiter windows cleared."""
        self.latency_ms = 0
        self.error_rates: dict[str, float] = {}
        self.drop_after_write_rate = 0.0
        self.seed: int | None = None
        self.keyed = {name: spec.default for name, spec in self.profile.keyed_limits.items()}
        self.account.limit = self.profile.rate_limit_per_minute
        self.account.reset()
        for limiter in self._keyed.values():
            limiter.reset()
        self.rng = random.Random()
        self.stats = _Stats()

    def settings(self) -> Json:
        """Current settings, in the shape `update` accepts."""
        return {
            "latency_ms": self.latency_ms,
            "error_rates": dict(self.error_rates),
            "drop_after_write_rate": self.drop_after_write_rate,
            "rate_limit_per_minute": self.account.limit,
            **self.keyed,
            "seed": self.seed,
        }

    def snapshot(self) -> Json:
        """What ``GET _control`` returns."""
        return {
            "crm": self.profile.crm,
            "settings": self.settings(),
            "stats": self.stats.snapshot(),
        }

    def update(self, body: Any) -> None:
        """Apply a partial settings object; validates everything before changing anything."""
        if not isinstance(body, dict):
            raise ControlError("body", "the body must be a JSON object")
        known = {"latency_ms", "error_rates", "drop_after_write_rate", "rate_limit_per_minute"}
        known |= {"seed", *self.keyed}
        staged = self.settings()
        for key, value in body.items():
            if key not in known:
                raise ControlError(key, f"unknown key {key!r}; known keys: {sorted(known)}")
            if key == "latency_ms":
                staged[key] = _count(key, value, minimum=0)
            elif key == "error_rates":
                staged[key] = self._error_rates(value)
            elif key == "drop_after_write_rate":
                staged[key] = _rate(key, value)
            elif key == "rate_limit_per_minute":
                staged[key] = _count(key, value, minimum=1)
            elif key == "seed":
                staged[key] = _count(key, value, minimum=0, nullable=True)
            else:
                staged[key] = _count(key, value, minimum=0, nullable=True)
        self.latency_ms = staged["latency_ms"]
        self.error_rates = staged["error_rates"]
        self.drop_after_write_rate = staged["drop_after_write_rate"]
        self.account.limit = staged["rate_limit_per_minute"]
        self.keyed = {name: staged[name] for name in self.keyed}
        if "seed" in body:
            self.seed = staged["seed"]
            self.rng = random.Random(self.seed)

    def _error_rates(self, value: Any) -> dict[str, float]:
        allowed = {str(s) for s in self.profile.injectable_statuses}
        if not isinstance(value, dict):
            raise ControlError("error_rates", "error_rates must be an object {status: rate}")
        rates = {}
        for status, rate in value.items():
            if status not in allowed:
                raise ControlError(
                    "error_rates", f"error_rates: status {status!r} not in {sorted(allowed)}"
                )
            rates[status] = _rate(f"error_rates.{status}", rate)
        if sum(rates.values()) > 1:
            raise ControlError("error_rates", "error_rates must add up to at most 1")
        return rates

    def pick_injected_status(self) -> int | None:
        """Draw whether this request fails, and with which status."""
        if not self.error_rates:
            return None
        draw, cumulative = self.rng.random(), 0.0
        for status, rate in sorted(self.error_rates.items()):
            cumulative += rate
            if draw < cumulative:
                return int(status)
        return None

    def should_drop(self) -> bool:
        """Draw whether to cut the connection after a committed write."""
        return self.drop_after_write_rate > 0 and self.rng.random() < self.drop_after_write_rate

    def check_keyed(self, name: str, key: Hashable) -> LimitDecision:
        """Count one event against a CRM-declared keyed limit (always allowed if disabled)."""
        limit = self.keyed[name]
        if not limit:
            return LimitDecision(True, 0, 0, 1)
        return self._keyed[name].acquire(key, limit)


# --------------------------------------------------------------------------- the harness


@dataclass(slots=True)
class _RequestContext:
    wrote: bool = False


def mark_write(request: Request) -> None:
    """Tell the harness this request committed a write (drop-after-write may now fire)."""
    context = request.scope.get(_CONTEXT_KEY)
    if isinstance(context, _RequestContext):
        context.wrote = True


def _route_path(scope: Scope) -> str:
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


class SandboxApp:
    """The ASGI app UWF mounts: the shared harness around one CRM's router.

    Args:
        router: The CRM's Starlette app (routes, auth, error bodies).
        store: Its persistent store; `close` closes it.
        control: Settings and stats, shared with the router for keyed limits.
    """

    def __init__(self, router: ASGIApp, store: SandboxStore, control: SandboxControl) -> None:
        self.router = router
        self.store = store
        self.control = control
        self.profile = control.profile

    @property
    def credentials(self) -> dict[str, str]:
        """The dev credentials stored with the sandbox's records."""
        return dict(self.store.credentials)

    def close(self) -> None:
        """Release the SQLite connection."""
        self.store.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] != "http":
            return  # websockets: no CRM here speaks them
        elif _route_path(scope) == "/_control":
            response = await self._control(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self._api(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Only reached when served at the root; a parent's Mount does not forward lifespan.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _control(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.control.reset()
        elif request.method == "POST":
            try:
                self.control.update(json.loads(await request.body() or b"{}"))
            except ValueError as exc:  # ControlError and JSONDecodeError alike
                key = exc.key if isinstance(exc, ControlError) else "body"
                message = str(exc) if isinstance(exc, ControlError) else "body is not valid JSON"
                return JSONResponse({"error": message, "key": key}, status_code=400)
        elif request.method != "GET":
            return JSONResponse({"error": "use GET, POST or DELETE"}, status_code=405)
        return JSONResponse(self.control.snapshot())

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        control, stats = self.control, self.control.stats
        stats.arrival(control.clock())
        stats.by_route[f"{scope['method']} {_route_path(scope)}"] += 1
        if control.latency_ms:
            await asyncio.sleep(control.latency_ms / 1000)
        decision = control.account.acquire()
        limit_headers = [
            (k.lower().encode(), v.encode()) for k, v in self.profile.rate_limit_headers(decision)
        ]
        context = _RequestContext()
        scope[_CONTEXT_KEY] = context
        dropped = False

        async def send_wrapper(message: Message) -> None:
            nonlocal dropped
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *limit_headers]}
                stats.by_status[str(message["status"])] += 1
                if context.wrote:
                    stats.writes += 1
                    if control.should_drop():
                        # Headers go out, the body never does: the client sees the
                        # connection die after the CRM already committed the write.
                        dropped = True
                        stats.dropped_after_write += 1
            elif dropped:
                return
            await send(message)

        if not decision.allowed:
            await self.profile.rate_limited(decision)(scope, receive, send_wrapper)
            return
        injected = control.pick_injected_status()
        if injected is not None:
            stats.injected[str(injected)] += 1
            await self.profile.injected_error(injected)(scope, receive, send_wrapper)
            return
        await self.router(scope, receive, send_wrapper)
        # When dropped, returning without the final body makes the server close the
        # socket (uvicorn logs "returned without completing response").
