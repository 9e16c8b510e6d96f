"""OAuth token rows: read freely, refreshed only under the row's lock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from uwf.store._db import utcnow
from uwf.store._tables import auth_tokens

__all__ = ["LockedToken", "TokenRepo", "TokenRow"]


@dataclass(frozen=True, slots=True)
class TokenRow:
    key: str
    ciphertext: str | None
    token_hash: str | None
    expires_at: datetime | None
    state: str
    reason: str | None
    refreshes: int

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> TokenRow:
        m = row._mapping
        return cls(**{name: m[name] for name in cls.__slots__})


class LockedToken:
    """The token row while this process holds its lock (inside one transaction)."""

    def __init__(self, conn: AsyncConnection, row: TokenRow) -> None:
        self._conn = conn
        self.row = row

    async def save(self, ciphertext: str, token_hash: str, expires_at: datetime) -> None:
        await self._conn.execute(
            sa.update(auth_tokens)
            .where(auth_tokens.c.key == self.row.key)
            .values(
                ciphertext=ciphertext,
                token_hash=token_hash,
                expires_at=expires_at,
                state="ok",
                reason=None,
                refreshes=auth_tokens.c.refreshes + 1,
                updated_at=utcnow(),
            )
        )

    async def needs_reauth(self, reason: str) -> None:
        await self._conn.execute(
            sa.update(auth_tokens)
            .where(auth_tokens.c.key == self.row.key)
            .values(state="needs_reauth", reason=reason, updated_at=utcnow())
        )


class TokenRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, key: str) -> TokenRow | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(auth_tokens).where(auth_tokens.c.key == key))
            ).first()
        return None if row is None else TokenRow.from_row(row)

    async def all(self) -> list[TokenRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(auth_tokens).order_by(auth_tokens.c.key))
            return [TokenRow.from_row(r) for r in rows]

    @asynccontextmanager
    async def locked(self, key: str) -> AsyncIterator[LockedToken]:
        """Hold the row's lock for the body: PostgreSQL `FOR UPDATE`; SQLite's write lock.

        Whoever waits here sees, once it gets the lock, what the holder wrote, so a token
        refreshed by another worker is used instead of being refreshed again.
        """
        async with self._engine.begin() as conn:
            exists = await conn.execute(
                sa.select(auth_tokens.c.key).where(auth_tokens.c.key == key)
            )
            if exists.first() is None:
                # Start with a write, so that on SQLite the transaction holds the write lock
                # from here on; a concurrent insert of the same key loses on the primary key.
                await conn.execute(
                    sa.insert(auth_tokens)
                    .values(key=key, state="ok", refreshes=0, updated_at=utcnow())
                    .prefix_with("OR IGNORE", dialect="sqlite")
                    if self._engine.dialect.name == "sqlite"
                    else _pg_insert_ignore(key)
                )
            else:
                await conn.execute(
                    sa.update(auth_tokens)
                    .where(auth_tokens.c.key == key)
                    .values(updated_at=auth_tokens.c.updated_at)
                )
            row = (
                await conn.execute(
                    sa.select(auth_tokens).where(auth_tokens.c.key == key).with_for_update()
                )
            ).one()
            yield LockedToken(conn, TokenRow.from_row(row))

    async def expire(self, key: str, token_hash: str) -> None:
        """After a 401: mark the token expired, unless another worker already replaced it."""
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(auth_tokens)
                .where(auth_tokens.c.key == key, auth_tokens.c.token_hash == token_hash)
                .values(expires_at=utcnow(), updated_at=utcnow())
            )

    async def reset(self, key: str) -> None:
        """Forget the token and any `needs_reauth` mark (after credentials were fixed)."""
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(auth_tokens).where(auth_tokens.c.key == key))


def _pg_insert_ignore(key: str) -> Any:
    from sqlalchemy.dialects.postgresql import insert

    return (
        insert(auth_tokens)
        .values(key=key, state="ok", refreshes=0, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key"])
    )
