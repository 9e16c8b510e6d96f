"""API keys and the audit log in the Pipe DB, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import DBAPIError

from tests.conftest import ACME_EXAMPLES
from uwf.metadata import load_directory
from uwf.store import AuditEntry, Store, hash_key, utcnow
from uwf.store._tables import api_keys, audit_log, meta


def _entry(action: str, tenant: str | None = "acme") -> AuditEntry:
    return AuditEntry(actor="cli:tester", actor_type="cli", action=action, tenant=tenant)


async def test_migration_creates_the_tables_the_code_uses(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        async with store.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), meta)
            )
        assert diff == []
    finally:
        await store.close()


async def test_key_is_stored_as_a_hash_and_found_by_its_secret(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        key, secret = await store.keys.create(
            name="crm-bridge",
            tenants=["acme"],
            scopes=["executions:read", "actions:write"],
            created_by="cli:tester",
            audit=_entry("key.created"),
        )
        async with store.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(sa.select(api_keys))]
        assert secret.startswith("uwf_")
        assert len(secret) > 40
        assert len(rows) == 1
        assert secret not in repr(rows)
        assert rows[0]["key_hash"] == hash_key(secret)
        assert key.prefix == secret[:12]
        assert key.scopes == ("actions:write", "executions:read")
        assert key.tenants == ("acme",)
        found = await store.keys.by_secret(secret)
        assert found is not None
        assert found.id == key.id
        assert await store.keys.by_secret(secret + "x") is None
        page, _ = await store.audit.list()
        assert [(r.action, r.target, r.details) for r in page] == [
            ("key.created", key.id, {"name": "crm-bridge"})
        ]
    finally:
        await store.close()


async def test_revoked_and_expired_keys_report_their_status(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        key, _ = await store.keys.create(
            name="svc", tenants=None, scopes=["admin"], created_by="cli:tester"
        )
        old, _ = await store.keys.create(
            name="old",
            tenants=["acme"],
            scopes=["executions:read"],
            created_by="cli:tester",
            expires_at=utcnow() - timedelta(seconds=1),
        )
        revoked = await store.keys.revoke(key.id, audit=_entry("key.revoked", None))
        again = await store.keys.revoke(key.id, audit=_entry("key.revoked", None))

        assert revoked is not None
        assert revoked.status() == "revoked"
        assert again is not None
        assert again.revoked_at == revoked.revoked_at
        assert old.status() == "expired"
        assert await store.keys.revoke("no-such-key") is None
        page, _ = await store.audit.list(action="key.revoked")
        assert len(page) == 1  # revoking twice is audited once
        with pytest.raises(ValueError, match="unknown scope"):
            await store.keys.create(
                name="x", tenants=None, scopes=["root"], created_by="cli:tester"
            )
    finally:
        await store.close()


async def test_audit_log_is_append_only_and_pages_newest_first(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        for i in range(5):
            await store.audit.write(_entry("metadata.applied", "acme" if i % 2 else "globex"))
        first, cursor = await store.audit.list(limit=3)
        second, end = await store.audit.list(limit=3, cursor=cursor)
        acme, _ = await store.audit.list(tenants=["acme"])

        assert [r.id for r in first] == sorted((r.id for r in first), reverse=True)
        assert len(first) == 3
        assert len(second) == 2
        assert end is None
        assert {r.tenant for r in acme} == {"acme"}
        assert len(acme) == 2
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(sa.update(audit_log).values(outcome="denied"))
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(sa.delete(audit_log))
        assert len((await store.audit.list())[0]) == 5
    finally:
        await store.close()


async def test_accepted_action_and_its_audit_row_are_one_transaction(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        version, _ = await store.apply_metadata(load_directory(ACME_EXAMPLES), "test")
        entry = _entry("action.accepted")
        execution, _ = await store.create_execution(
            tenant="acme",
            workflow="escalate_case",
            metadata_version=version,
            input={"case_id": 1, "priority": "P1"},
            idempotency_key="k1",
            request_hash="h",
            audit=entry,
        )
        repeat, created = await store.create_execution(
            tenant="acme",
            workflow="escalate_case",
            metadata_version=version,
            input={"case_id": 1, "priority": "P1"},
            idempotency_key="k1",
            request_hash="h",
            audit=entry,
        )
        with pytest.raises(DBAPIError):  # no such metadata version: nothing stored
            await store.create_execution(
                tenant="acme",
                workflow="escalate_case",
                metadata_version=version + 99,
                input={},
                audit=entry,
            )
        page, _ = await store.audit.list(action="action.accepted")
        assert repeat.id == execution.id
        assert not created
        assert [r.target for r in page] == [execution.id]
    finally:
        await store.close()
