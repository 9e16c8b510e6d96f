"""The Pipe DB on SQLite and PostgreSQL: versions, the queue, leases and the ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import ACME_EXAMPLES as EXAMPLES
from uwf.errors import ConflictError
from uwf.metadata import load_directory
from uwf.store import LeaseLostError, StepRun, Store, create_engine


async def _store_with_metadata(url: str) -> tuple[Store, int]:
    store = await Store.open(url)
    version, _ = await store.apply_metadata(load_directory(EXAMPLES), "test")
    return store, version


async def test_metadata_versions_are_immutable_and_deduplicated(
    database_url: str, tmp_path: Path
) -> None:
    store, v1 = await _store_with_metadata(database_url)
    try:
        again, created = await store.apply_metadata(load_directory(EXAMPLES), "again")
        changed_dir = tmp_path / "meta"
        changed_dir.mkdir()
        for file in EXAMPLES.iterdir():
            text = file.read_text().replace("Acme Corporation", "Acme Corp.")
            (changed_dir / file.name).write_text(text)
        v2, created2 = await store.apply_metadata(load_directory(changed_dir), "changed")

        assert (again, created) == (v1, False)
        assert created2
        assert v2 == v1 + 1
        old = await store.metadata(v1)
        assert old is not None
        assert old.tenants["acme"].display_name == "Acme Corporation"
        active = await store.active_metadata()
        assert active is not None
        assert active[0] == v2
        assert active[1].tenants["acme"].display_name == "Acme Corp."
    finally:
        await store.close()


async def test_idempotency_key_under_concurrency_creates_one_execution(
    database_url: str,
) -> None:
    store, version = await _store_with_metadata(database_url)
    try:
        results = await asyncio.gather(
            *(
                store.create_execution(
                    tenant="acme",
                    workflow="escalate_case",
                    metadata_version=version,
                    input={"case_id": 1, "priority": "P1"},
                    idempotency_key="same",
                    request_hash="h1",
                )
                for _ in range(8)
            )
        )
        ids = {execution.id for execution, _ in results}
        assert len(ids) == 1
        assert sum(created for _, created in results) == 1
        assert await store.count_executions() == 1
        with pytest.raises(ConflictError, match="different request"):
            await store.create_execution(
                tenant="acme",
                workflow="escalate_case",
                metadata_version=version,
                input={"case_id": 2, "priority": "P1"},
                idempotency_key="same",
                request_hash="h2",
            )
        # Keys are per tenant: another tenant may use the same key.
        _, created = await store.create_execution(
            tenant="other",
            workflow="escalate_case",
            metadata_version=version,
            input={},
            idempotency_key="same",
            request_hash="h2",
        )
        assert created
    finally:
        await store.close()


async def test_concurrent_workers_never_claim_the_same_execution(database_url: str) -> None:
    store, version = await _store_with_metadata(database_url)
    # A second engine is a second worker process as far as the database can tell.
    other = await Store.open(database_url, migrate=False)
    try:
        for i in range(60):
            await store.create_execution(
                tenant="acme",
                workflow="escalate_case",
                metadata_version=version,
                input={"case_id": i, "priority": "P3"},
            )

        async def drain(s: Store, owner: str) -> list[str]:
            got: list[str] = []
            while batch := await s.claim(owner, 7, lease_seconds=60):
                got.extend(e.id for e in batch)
            return got

        a, b, c = await asyncio.gather(drain(store, "a"), drain(other, "b"), drain(store, "c"))
        assert len(a) + len(b) + len(c) == 60
        assert len(set(a) | set(b) | set(c)) == 60
    finally:
        await other.close()
        await store.close()


async def test_expired_lease_is_reclaimed_and_the_old_owner_is_fenced(
    database_url: str,
) -> None:
    store, version = await _store_with_metadata(database_url)
    try:
        execution, _ = await store.create_execution(
            tenant="acme",
            workflow="escalate_case",
            metadata_version=version,
            input={"case_id": 1, "priority": "P1"},
        )
        [claimed] = await store.claim("worker-a", 10, lease_seconds=0.2)
        assert claimed.id == execution.id
        assert await store.claim("worker-b", 10, lease_seconds=30) == []
        await asyncio.sleep(0.3)

        [reclaimed] = await store.claim("worker-b", 10, lease_seconds=30)

        assert reclaimed.id == execution.id
        assert reclaimed.claims == 2
        with pytest.raises(LeaseLostError):
            await store.save_step(execution.id, "worker-a", StepRun("owner", 0, "sending"))
        await store.save_step(execution.id, "worker-b", StepRun("owner", 0, "succeeded"))
        assert [r.status for r in await store.step_runs(execution.id)] == ["succeeded"]
        assert await store.extend_leases("worker-a", [execution.id], 30) == set()
        assert await store.extend_leases("worker-b", [execution.id], 30) == {execution.id}
    finally:
        await store.close()


async def test_executions_list_newest_first_with_cursor(database_url: str) -> None:
    store, version = await _store_with_metadata(database_url)
    try:
        made = []
        for i in range(5):
            execution, _ = await store.create_execution(
                tenant="acme",
                workflow="escalate_case",
                metadata_version=version,
                input={"case_id": i, "priority": "P2"},
            )
            made.append(execution.id)
        page1, cursor = await store.list_executions(tenant="acme", limit=3)
        page2, end = await store.list_executions(tenant="acme", limit=3, cursor=cursor)
        assert [e.id for e in page1 + page2] == list(reversed(made))
        assert end is None
        assert (await store.list_executions(tenant="nobody"))[0] == []
    finally:
        await store.close()


def test_ids_sort_in_creation_order_even_within_a_millisecond() -> None:
    import uuid

    from uwf.store import new_id

    ids = [new_id() for _ in range(5000)]  # many share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


async def test_a_database_host_that_never_answers_fails_fast_not_after_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that accepts the connection and then says nothing (a hung host, a black hole)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    monkeypatch.setenv("UWF_DB_CONNECT_TIMEOUT", "0.5")
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/silent")

    async def connect() -> None:
        async with engine.connect():
            pass

    attempt = asyncio.create_task(connect())
    try:
        # Not a timing assertion: a bound so that a regression (asyncpg's own 60 s) fails the
        # test instead of hanging it.
        done, _ = await asyncio.wait({attempt}, timeout=30)
        assert done, "still connecting to a silent server after 30 s"
        with pytest.raises(TimeoutError):  # an OSError: the API answers it 503
            attempt.result()
    finally:
        attempt.cancel()
        await engine.dispose()
        listener.close()
