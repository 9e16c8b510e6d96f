"""Callers' API keys: created with a secret shown once, stored as a hash, revoked by id."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from uwf.store._audit import AuditEntry, AuditRepo
from uwf.store._db import new_id, utcnow
from uwf.store._tables import api_keys

__all__ = ["KEY_PREFIX", "SCOPES", "ApiKey", "KeyRepo", "hash_key"]

SCOPES = ("actions:write", "executions:read", "metadata:write", "admin")
KEY_PREFIX = "uwf_"
_VISIBLE = 12  # characters of the key kept in clear to recognise it: "uwf_" + 8 random


def hash_key(key: str) -> str:
    """SHA-256 of the key. The key carries 256 random bits, so a fast hash is safe here."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A caller's key as stored (never the secret). `tenants` None: every tenant."""

    id: str
    name: str
    prefix: str
    tenants: tuple[str, ...] | None
    scopes: tuple[str, ...]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> ApiKey:
        m = row._mapping
        values = {name: m[name] for name in cls.__slots__}
        values["tenants"] = None if m["tenants"] is None else tuple(m["tenants"])
        values["scopes"] = tuple(m["scopes"])
        return cls(**values)

    def status(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        """A listing row: everything but the hash, with its status."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "tenants": None if self.tenants is None else list(self.tenants),
            "scopes": list(self.scopes),
            "status": self.status(),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


class KeyRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self,
        *,
        name: str,
        tenants: list[str] | None,
        scopes: list[str],
        created_by: str,
        expires_at: datetime | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key and return it with its secret, which is not kept anywhere.

        The audit entry (its target set to the new key's id) is written in the same
        transaction. Raises ValueError on an unknown scope or an empty tenant list.
        """
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(
                f"unknown scope(s) {', '.join(unknown) or '(none given)'}; "
                f"known: {', '.join(SCOPES)}"
            )
        if tenants is not None and not tenants:
            raise ValueError("a key needs at least one tenant, or all tenants")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = new_id()
        values = {
            "id": key_id,
            "name": name,
            "prefix": secret[:_VISIBLE],
            "key_hash": hash_key(secret),
            "tenants": None if tenants is None else sorted(set(tenants)),
            "scopes": [s for s in SCOPES if s in scopes],
            "created_by": created_by,
            "created_at": utcnow(),
            "expires_at": expires_at,
        }
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(sa.insert(api_keys).values(values).returning(*api_keys.c))
            ).one()
            if audit is not None:
                await AuditRepo.write_in(conn, _with_target(audit, key_id, name))
        return ApiKey.from_row(row), secret

    async def list(self) -> list[ApiKey]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(api_keys).order_by(api_keys.c.id))
            return [ApiKey.from_row(r) for r in rows]

    async def get(self, key_id: str) -> ApiKey | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        return None if row is None else ApiKey.from_row(row)

    async def by_secret(self, secret: str) -> ApiKey | None:
        """The key whose hash matches `secret` (whatever its status), or None."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(api_keys).where(api_keys.c.key_hash == hash_key(secret))
                )
            ).first()
        return None if row is None else ApiKey.from_row(row)

    async def revoke(self, key_id: str, audit: AuditEntry | None = None) -> ApiKey | None:
        """Revoke a key at once (None if there is no such key). Revoking twice is harmless;
        only the first revocation is audited."""
        async with self._engine.begin() as conn:
            changed = await conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
            if row is None:
                return None
            if changed.rowcount and audit is not None:
                await AuditRepo.write_in(conn, _with_target(audit, key_id, row.name))
        return ApiKey.from_row(row)

    async def touch(self, key_id: str) -> None:
        """Note that the key was used (callers throttle this; it is a write)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=utcnow())
            )


def _with_target(entry: AuditEntry, key_id: str, name: str) -> AuditEntry:
    return replace(entry, target=key_id, details={**(entry.details or {}), "name": name})
