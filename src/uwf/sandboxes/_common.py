"""Machinery every CRM sandbox shares; a new CRM brings only routes, bodies and seed data.

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
import base64
import binascii
import functools
import hashlib
import json
import math
import random
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ControlError",
    "IdempotencyLedger",
    "IdempotencyResult",
    "KeyedLimit",
    "LimitDecision",
    "SandboxApp",
    "SandboxControl",
    "SandboxProfile",
    "SandboxStore",
    "StoredResponse",
    "UnknownSandboxError",
    "decode_cursor",
    "encode_cursor",
    "fingerprint",
    "get_meta",
    "mark_write",
    "next_id",
    "public_base_url",
    "set_meta",
    "utc_iso",
]

T = TypeVar("T")
Json = dict[str, Any]

_CONTEXT_KEY = "uwf.sandbox"


class UnknownSandboxError(LookupError):
    """Raised for a CRM id that has no sandbox; the message lists the known ids."""


def utc_iso(ts: float | None = None) -> str:
    """Format a UNIX time (default: now) the way CRMs do: ISO-8601, seconds, ``Z``."""
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def public_base_url(request: Request) -> str:
    """Scheme, host and mount prefix of the sandbox, as the client reached it.

    ``request.base_url`` is the *top-level* app's root, so under a `Mount` it misses the
    prefix; the mount's own ``root_path`` is what real record URLs must carry.
    """
    root = str(request.scope.get("root_path", ""))
    return f"{request.url.scheme}://{request.url.netloc}{root}".rstrip("/")


def encode_cursor(data: Mapping[str, Any]) -> str:
    """Opaque, URL-safe pagination cursor (clients must not parse it, as with real CRMs)."""
    raw = json.dumps(dict(data), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Json | None:
    """Inverse of `encode_cursor`; None when the cursor was not made by us."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fingerprint(body: Any) -> str:
    """Stable hash of a parsed JSON body, so key order and whitespace do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------- persistence

_COMMON_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sandbox_sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sandbox_idempotency (
    scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL, body TEXT NOT NULL, headers TEXT NOT NULL,
    created_at REAL NOT NULL, PRIMARY KEY (scope, key)
);
"""


class SandboxStore:
    """One SQLite file per sandbox, so records survive restarts as a real CRM's would.

    All access goes through `transact` (a thread-safe unit of work) or its async twin `run`,
    which hops to the threadpool so the event loop never waits on disk.

    Args:
        path: The SQLite file; parent directories are created.
        schema: The CRM's ``CREATE TABLE IF NOT EXISTS`` statements.
        seed: Fills a brand-new database; runs once, in the same transaction that marks
            the file as seeded, so a crash mid-seed leaves nothing half-done.
        make_credentials: Builds the dev credentials on first start; they are stored and
            returned unchanged on every later start.
    """

    def __init__(
        self,
        path: Path,
        *,
        schema: str,
        seed: Callable[[sqlite3.Connection], None],
        make_credentials: Callable[[], dict[str, str]],
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # One shared connection guarded by a lock: simpler than a pool and fast enough
        # for a dev sandbox; check_same_thread is off because the threadpool rotates.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_COMMON_SCHEMA + schema)
        self.credentials: dict[str, str] = self.transact(
            functools.partial(self._bootstrap, seed, make_credentials)
        )

    @staticmethod
    def _bootstrap(
        seed: Callable[[sqlite3.Connection], None],
        make_credentials: Callable[[], dict[str, str]],
        conn: sqlite3.Connection,
    ) -> dict[str, str]:
        creds = get_meta(conn, "credentials")
        if creds is None:
            creds = make_credentials()
            set_meta(conn, "credentials", creds)
        if get_meta(conn, "seeded") is None:
            seed(conn)
            set_meta(conn, "seeded", utc_iso())
        return {str(k): str(v) for k, v in creds.items()}

    def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction; roll back if it raises."""
        with self._lock:
            # IMMEDIATE takes the write lock up front, so two processes sharing the file
            # (e.g. a test restarting the server) serialise instead of failing mid-way.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """``transact(lambda conn: fn(conn, *args))`` from async code, in the threadpool."""
        return await run_in_threadpool(self.transact, lambda conn: fn(conn, *args))

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()


def get_meta(conn: sqlite3.Connection, key: str) -> Any:
    """A JSON value from the sandbox's key/value table, or None."""
    row = conn.execute("SELECT value FROM sandbox_meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
    """Store a JSON value in the sandbox's key/value table."""
    conn.execute(
        "INSERT INTO sandbox_meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, json.dumps(value)),
    )


def next_id(conn: sqlite3.Connection, name: str, start: int) -> int:
    """Next value of a named sequence; the first call returns ``start``.

    CRMs draw ids for different record kinds from different ranges; separate sequences
    keep a ticket id from ever being mistaken for a user id in tests.
    """
    row = conn.execute("SELECT value FROM sandbox_sequences WHERE name = ?", (name,)).fetchone()
    value = start if row is None else int(row[0]) + 1
    conn.execute(
        "INSERT INTO sandbox_sequences (name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, value),
    )
    return value


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response kept for replay under an idempotency key."""

    status: int
    body: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class IdempotencyResult:
    """Outcome of a lookup: ``miss``, ``hit`` (with the stored response) or ``mismatch``."""

    outcome: str
    response: StoredResponse | None = None


class IdempotencyLedger:
    """Idempotency keys kept in the store, so a retry after a restart still replays.

    Args:
        ttl_s: How long a key is remembered (Zendesk: 2 h).
        clock: Wall clock; keys must expire across restarts, so not monotonic.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._clock = clock

    def lookup(
        self, conn: sqlite3.Connection, scope: str, key: str, body_fingerprint: str
    ) -> IdempotencyResult:
        """Find ``key``; expired keys are purged first so they read as a miss."""
        conn.execute(
            "DELETE FROM sandbox_idempotency WHERE created_at < ?", (self._clock() - self.ttl_s,)
        )
        row = conn.execute(
            "SELECT fingerprint, status, body, headers FROM sandbox_idempotency "
            "WHERE scope = ? AND key = ?",
            (scope, key),
        ).fetchone()
        if row is None:
            return IdempotencyResult("miss")
        if row["fingerprint"] != body_fingerprint:
            return IdempotencyResult("mismatch")
        stored = StoredResponse(row["status"], row["body"], json.loads(row["headers"]))
        return IdempotencyResult("hit", stored)

    def remember(
        self,
        conn: sqlite3.Connection,
        scope: str,
        key: str,
        body_fingerprint: str,
        response: StoredResponse,
    ) -> None:
        """Record the response of a successful first request under ``key``."""
        conn.execute(
            "INSERT OR REPLACE INTO sandbox_idempotency VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                scope,
                key,
                body_fingerprint,
                response.status,
                response.body,
                json.dumps(response.headers),
                self._clock(),
            ),
        )


# --------------------------------------------------------------------------- rate limits


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """What a limiter said about one request; ``reset_s`` is whole seconds, at least 1."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int


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


@dataclass(frozen=True, slots=True)
class KeyedLimit:
    """A per-key limit a CRM declares (settable through ``_control``; None disables)."""

    default: int | None
    window_s: float


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
