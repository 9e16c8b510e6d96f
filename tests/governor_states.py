"""The governor's three state back ends for tests, and a clock the test moves by hand.

`states` (a fixture factory: import it into a test module) yields a `Backend` per kind —
memory, PostgreSQL (a fresh database) and Redis (a unique key prefix) — whose `state()` makes
another state on the same shared storage, as another worker process would.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from tests.conftest import fresh_pg_database, require_service
from uwf.governor import LocalState, RedisState, SqlState, State
from uwf.store import Store

REDIS_URL = os.environ.get("UWF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    """Unix time that moves only when the test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    kind: str
    make: Callable[[], State]
    made: list[State] = field(default_factory=list)

    def state(self) -> State:
        """Another handle on the same shared state (another worker's view)."""
        made = self.make()
        self.made.append(made)
        return made


@pytest.fixture(scope="session")
def redis_server() -> str:
    from redis import Redis

    def probe() -> None:
        client = Redis.from_url(REDIS_URL, socket_timeout=3)
        client.ping()
        client.close()

    return require_service("Redis", REDIS_URL, "UWF_TEST_REDIS_URL", probe)


@pytest.fixture(params=["memory", "postgres", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """Each governor test runs on every state back end."""
    if request.param == "memory":
        shared = LocalState()
        yield Backend("memory", lambda: shared)
        return
    if request.param == "redis":
        url = request.getfixturevalue("redis_server")
        prefix = f"uwf-test:{secrets.token_hex(6)}:"
        found = Backend("redis", lambda: RedisState.from_url(url, prefix))
        try:
            yield found
        finally:
            await _close(found)
            await _forget(url, prefix)
        return
    pg = request.getfixturevalue("pg_server")
    async with fresh_pg_database(pg) as db_url:
        # Two stores, each with its own connection pool, like two worker processes.
        stores = [await Store.open(db_url), await Store.open(db_url)]
        engines = itertools.cycle([s.engine for s in stores])
        found = Backend("postgres", lambda: SqlState(next(engines)))
        try:
            yield found
        finally:
            await _close(found)
            for store in stores:
                await store.close()


async def _close(backend: Backend) -> None:
    for state in backend.made:
        await state.close()


async def _forget(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
