"""CRM secrets stored in the Pipe DB, encrypted; this module only ever sees ciphertexts."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from uwf.store._db import utcnow
from uwf.store._tables import auth_tokens, executions, stored_secrets

__all__ = ["SecretRepo", "StoredSecret"]


@dataclass(frozen=True, slots=True)
class StoredSecret:
    tenant: str
    name: str
    ciphertext: str
    key_id: str
    created_at: datetime
    updated_at: datetime

    def __repr__(self) -> str:  # the ciphertext is no secret, but it is noise in any log
        return f"StoredSecret({self.tenant}/{self.name}, key {self.key_id})"

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> StoredSecret:
        m = row._mapping
        return cls(**{name: m[name] for name in cls.__slots__})


class SecretRepo:
    """Encrypted secrets per tenant, and the re-encryption that key rotation needs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(self, tenant: str, name: str, ciphertext: str, key_id: str) -> bool:
        """Store (or replace) a secret; returns True when it is new."""
        now = utcnow()
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                sa.update(stored_secrets)
                .where(stored_secrets.c.tenant == tenant, stored_secrets.c.name == name)
                .values(ciphertext=ciphertext, key_id=key_id, updated_at=now)
            )
            if updated.rowcount:
                return False
            await conn.execute(
                sa.insert(stored_secrets).values(
                    tenant=tenant,
                    name=name,
                    ciphertext=ciphertext,
                    key_id=key_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            return True

    async def get(self, tenant: str, name: str) -> StoredSecret | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(stored_secrets).where(
                        stored_secrets.c.tenant == tenant, stored_secrets.c.name == name
                    )
                )
            ).first()
        return None if row is None else StoredSecret.from_row(row)

    async def list(self, tenant: str | None = None) -> list[StoredSecret]:
        query = sa.select(stored_secrets).order_by(stored_secrets.c.tenant, stored_secrets.c.name)
        if tenant is not None:
            query = query.where(stored_secrets.c.tenant == tenant)
        async with self._engine.connect() as conn:
            return [StoredSecret.from_row(r) for r in await conn.execute(query)]

    async def delete(self, tenant: str, name: str) -> bool:
        async with self._engine.begin() as conn:
            deleted = await conn.execute(
                sa.delete(stored_secrets).where(
                    stored_secrets.c.tenant == tenant, stored_secrets.c.name == name
                )
            )
        return bool(deleted.rowcount)

    async def replace(
        self, tenant: str, name: str, old_ciphertext: str, ciphertext: str, key_id: str
    ) -> bool:
        """Re-encrypted: swap the ciphertext, unless someone set a new value meanwhile."""
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                sa.update(stored_secrets)
                .where(
                    stored_secrets.c.tenant == tenant,
                    stored_secrets.c.name == name,
                    stored_secrets.c.ciphertext == old_ciphertext,
                )
                .values(ciphertext=ciphertext, key_id=key_id)
            )
        return bool(updated.rowcount)

    async def replace_token(self, key: str, old_ciphertext: str, ciphertext: str) -> bool:
        """Re-encrypted OAuth token: swap it, unless a worker refreshed the token meanwhile."""
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                sa.update(auth_tokens)
                .where(auth_tokens.c.key == key, auth_tokens.c.ciphertext == old_ciphertext)
                .values(ciphertext=ciphertext)
            )
        return bool(updated.rowcount)

    async def sealed_inputs(self) -> builtins.list[tuple[str, str, Any]]:
        """(id, tenant, input) of every execution whose input holds sealed sensitive values."""
        query = sa.select(executions.c.id, executions.c.tenant, executions.c.input).where(
            sa.cast(executions.c.input, sa.Text).like("%uwf-sealed:%")
        )
        async with self._engine.connect() as conn:
            return [(r.id, r.tenant, r.input) for r in await conn.execute(query)]

    async def replace_input(self, execution_id: str, data: Any) -> None:
        """An execution's input with its sealed values re-encrypted (nothing else changes)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(executions).where(executions.c.id == execution_id).values(input=data)
            )
