"""Engine creation (SQLite WAL or PostgreSQL) and schema migrations with Alembic."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["create_engine", "new_id", "upgrade", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


_last_ms = 0
_sequence = 0


def new_id() -> str:
    """A UUIDv7: time-ordered, so ids sort oldest first and make good cursors.

    Within one millisecond a 12-bit counter keeps them ordered in this process (RFC 9562,
    method 1), so "newest first" holds even for executions created together.
    """
    global _last_ms, _sequence
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        _sequence += 1
        if _sequence > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
            _last_ms, _sequence = _last_ms + 1, 0
        ms = _last_ms
    else:
        _last_ms, _sequence = ms, 0
    rand = int.from_bytes(secrets.token_bytes(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | _sequence << 64 | 0x2 << 62 | rand
    return str(uuid.UUID(int=value))


def create_engine(url: str) -> AsyncEngine:
    """An async engine for the Pipe DB.

    SQLite runs in WAL mode with one pooled connection: the embedded default is one process,
    SQLite has one writer anyway, and serialising here avoids `database is locked` upgrades.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=15000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # A database host that does not answer must not hold a caller for asyncpg's default 60 s:
    # connecting gives up after UWF_DB_CONNECT_TIMEOUT (default 5 s), and the API answers 503.
    timeout = float(os.environ.get("UWF_DB_CONNECT_TIMEOUT", "5"))
    return create_async_engine(
        url,
        pool_size=int(os.environ.get("UWF_DB_POOL_SIZE", "10")),
        pool_pre_ping=True,
        pool_timeout=max(timeout, 10.0),
        connect_args={"timeout": timeout} if url.startswith("postgresql+asyncpg") else {},
    )


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("uwf.store") / "migrations"))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (idempotent; safe to call on every start)."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), revision))
