"""Replayed webhook events through the Pipe DB: however often and in whatever order an event
arrives, it has one execution. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ACME_EXAMPLES
from uwf.api import accept_action
from uwf.metadata import load_directory
from uwf.store import Store
from uwf.triggers import idempotency_key

# Deliveries: event ids drawn from a small pool, so repeats are the rule, not the exception.
deliveries = st.lists(st.sampled_from(["1", "2", "3", "evt-" + "x" * 300]), min_size=1, max_size=12)


@settings(
    max_examples=15,
    deadline=None,
    # One database for all examples; each example uses ids of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=deliveries)
async def test_each_event_id_starts_exactly_one_execution(
    database_url: str, events: list[str]
) -> None:
    store = await Store.open(database_url)
    try:
        if await store.active_metadata() is None:
            await store.apply_metadata(load_directory(ACME_EXAMPLES), "test")
        before = await _count(store)
        run = uuid.uuid4().hex[:8]
        first_seen: dict[str, str] = {}
        for event in events:
            key = idempotency_key("acme-zendesk", f"{run}-{event}")
            execution, created = await accept_action(
                store, "acme", "escalate_case", {"case_id": 123, "priority": "P1"}, key
            )
            assert created == (event not in first_seen)
            assert first_seen.setdefault(event, execution.id) == execution.id
        assert await _count(store) - before == len(set(events))
    finally:
        await store.close()


async def _count(store: Store) -> int:
    total, cursor = 0, None
    while True:
        page, cursor = await store.list_executions(tenant="acme", limit=200, cursor=cursor)
        total += len(page)
        if cursor is None:
            return total
