"""The SQLite record store under every sandbox, with sequences and idempotency keys.

One file per sandbox (``home/sandboxes/{crm}.sqlite3``), so records survive restarts as a
real CRM's would. A CRM brings its own ``CREATE TABLE`` statements, seed function and
credential maker; the store adds the tables every CRM needs: key/value metadata, named id
sequences and remembered responses for idempotency keys.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from uwf.sandboxes._common import utc_iso

__all__ = [
    "IdempotencyLedger",
    "IdempotencyResult",
    "SandboxStore",
    "StoredResponse",
    "fingerprint",
    "get_meta",
    "next_id",
    "set_meta",
]

T = TypeVar("T")

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
        # Survives a killed process (what the crash tests do), not a power cut: enough for a
        # sandbox, and no fsync per request.
        self._conn.execute("PRAGMA synchronous=NORMAL")
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


# --------------------------------------------------------------------------- idempotency


def fingerprint(body: Any) -> str:
    """Stable hash of a parsed JSON body, so key order and whitespace do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
