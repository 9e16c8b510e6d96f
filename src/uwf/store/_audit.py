"""The audit log: append-only rows saying who did what, when, to which tenant, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from uwf.store._db import new_id, utcnow
from uwf.store._tables import audit_log

__all__ = ["AUDIT_ACTIONS", "AuditEntry", "AuditRecord", "AuditRepo"]

# Every action the log knows; a typo in a caller fails loudly instead of writing a new kind.
AUDIT_ACTIONS = frozenset(
    {
        "metadata.applied",
        "key.created",
        "key.revoked",
        "credentials.changed",
        "action.accepted",
        "execution.cancelled",
        "execution.replayed",
    }
)


# Built once: constructing SQLAlchemy statements per call costs more than running them.
_INSERT = sa.insert(audit_log)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What to record. `actor` is a key id and name, an OIDC subject, or `cli:<os user>`.

    `details` must never hold a secret; callers put ids and names there, nothing else.
    """

    actor: str
    actor_type: str
    action: str
    tenant: str | None = None
    target: str | None = None
    outcome: str = "succeeded"
    request_id: str | None = None
    details: dict[str, Any] | None = None

    def values(self) -> dict[str, Any]:
        if self.action not in AUDIT_ACTIONS:
            raise ValueError(f"unknown audit action '{self.action}'")
        return {
            "id": new_id(),
            "at": utcnow(),
            "actor": self.actor[:200],
            "actor_type": self.actor_type,
            "tenant": self.tenant,
            "action": self.action,
            "target": None if self.target is None else self.target[:200],
            "outcome": self.outcome,
            "request_id": self.request_id,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: str
    at: datetime
    actor: str
    actor_type: str
    tenant: str | None
    action: str
    target: str | None
    outcome: str
    request_id: str | None
    details: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> AuditRecord:
        m = row._mapping
        return cls(**{name: m[name] for name in cls.__slots__})

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}
        data["at"] = self.at.isoformat()
        return data


class AuditRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, entry: AuditEntry) -> None:
        """Record `entry` in a transaction of its own."""
        async with self._engine.begin() as conn:
            await self.write_in(conn, entry)

    @staticmethod
    async def write_in(conn: AsyncConnection, entry: AuditEntry) -> None:
        """Record `entry` inside the caller's transaction: it exists only if the change does."""
        await conn.execute(_INSERT, entry.values())

    async def list(
        self,
        *,
        tenants: list[str] | None = None,
        tenant_rows_only: bool = False,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[AuditRecord], str | None]:
        """Newest first; `tenants` restricts to rows of those tenants (None: every row), and
        `tenant_rows_only` leaves out rows of no tenant (keys for all tenants, metadata).

        Returns a page and the cursor of the next page (None at the end).
        """
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit + 1)
        if tenants is not None:
            query = query.where(audit_log.c.tenant.in_(tenants))
        if tenant_rows_only:
            query = query.where(audit_log.c.tenant.is_not(None))
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        if cursor is not None:
            query = query.where(audit_log.c.id < cursor)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        page = [AuditRecord.from_row(r) for r in rows[:limit]]
        return page, (page[-1].id if len(rows) > limit else None)
