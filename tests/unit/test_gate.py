"""The embedded default's one SQLite connection goes to the API's requests first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from uwf.store import api_first
from uwf.store._gate import GatedEngine, _PriorityLock


async def _queue_behind_holder(lock: _PriorityLock, names: list[tuple[str, int]]) -> list[str]:
    """`names` wait (in this order) while the lock is held; returns the order they got it."""
    await lock.acquire(1)
    served: list[str] = []

    async def take(name: str, priority: int) -> None:
        await lock.acquire(priority)
        served.append(name)
        lock.release()

    tasks = []
    for name, priority in names:
        tasks.append(asyncio.create_task(take(name, priority)))
        await asyncio.sleep(0)  # queued in this order
    lock.release()
    await asyncio.gather(*tasks)
    return served


async def test_the_api_is_served_before_waiting_worker_requests_then_in_arrival_order() -> None:
    served = await _queue_behind_holder(
        _PriorityLock(), [("worker-1", 1), ("worker-2", 1), ("api-1", 0), ("api-2", 0)]
    )
    assert served == ["api-1", "api-2", "worker-1", "worker-2"]


async def test_a_cancelled_waiter_does_not_keep_the_lock_from_the_next() -> None:
    lock = _PriorityLock()
    await lock.acquire(1)
    gone = asyncio.create_task(lock.acquire(0))
    after = asyncio.create_task(lock.acquire(1))
    await asyncio.sleep(0)
    gone.cancel()
    lock.release()
    await asyncio.wait_for(after, 5)  # a bound, not a timing assertion: it must get the lock
    with pytest.raises(asyncio.CancelledError):
        await gone
    lock.release()
    await asyncio.wait_for(lock.acquire(1), 5)  # free again


async def test_a_waiter_cancelled_as_it_is_handed_the_lock_passes_it_on() -> None:
    lock = _PriorityLock()
    await lock.acquire(1)
    first = asyncio.create_task(lock.acquire(0))
    second = asyncio.create_task(lock.acquire(1))
    await asyncio.sleep(0)
    lock.release()  # hands it to `first` ...
    first.cancel()  # ... which is cancelled before it runs
    await asyncio.wait_for(second, 5)
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_requests_inside_api_first_jump_the_queue_of_a_real_sqlite_engine(
    tmp_path: Path,
) -> None:
    from uwf.store import create_engine

    engine = GatedEngine(create_engine(f"sqlite+aiosqlite:///{tmp_path}/gate.db"))
    order: list[str] = []
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x TEXT)")

        async def write(name: str) -> None:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("INSERT INTO t VALUES (?)", (name,))
                order.append(name)

        async def api_write() -> None:
            with api_first():
                await write("api")

        async with engine.connect():  # held: everyone below waits
            tasks = [asyncio.create_task(write(f"worker-{i}")) for i in range(3)]
            await asyncio.sleep(0.01)
            tasks.append(asyncio.create_task(api_write()))
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
    finally:
        await engine.dispose()
    assert order == ["api", "worker-0", "worker-1", "worker-2"]
