"""Repository over the Pipe DB: metadata versions, executions (the queue) and the step ledger."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from uwf.errors import IdempotencyKeyReusedError
from uwf.metadata import MetadataBundle
from uwf.store._audit import AuditEntry, AuditRepo
from uwf.store._db import create_engine, new_id, upgrade, utcnow
from uwf.store._gate import GatedEngine
from uwf.store._keys import KeyRepo
from uwf.store._secrets import SecretRepo
from uwf.store._tables import (
    FINAL_STATUSES,
    executions,
    idempotency_keys,
    metadata_versions,
    step_runs,
)
from uwf.store._tokens import TokenRepo

__all__ = ["Execution", "LeaseLostError", "StepRun", "Store"]


# Built once: constructing SQLAlchemy statements per call costs more than running them.
# A ledger entry is one upsert on (execution_id, step_id), in each dialect's own syntax.
def _step_upsert(insert: Any) -> Any:
    statement = insert(step_runs)
    return statement.on_conflict_do_update(
        index_elements=["execution_id", "step_id"],
        set_={
            c.name: statement.excluded[c.name]
            for c in step_runs.c
            if c.name not in ("execution_id", "step_id")
        },
    )


_UPSERT_STEP = {"sqlite": _step_upsert(sqlite_insert), "postgresql": _step_upsert(pg_insert)}

_LATEST_VERSION = sa.select(sa.func.max(metadata_versions.c.version))
# Every column is given, so the new row is known without reading it back (no RETURNING).
_INSERT_EXECUTION = sa.insert(executions)
_INSERT_KEY = sa.insert(idempotency_keys)
_GET_EXECUTION = sa.select(executions).where(executions.c.id == sa.bindparam("b_id"))
_GET_TENANT_EXECUTION = _GET_EXECUTION.where(executions.c.tenant == sa.bindparam("b_tenant"))
# Lease fences: they match only while `b_owner` holds the running execution.
_HELD = (
    executions.c.id == sa.bindparam("b_id"),
    executions.c.lease_owner == sa.bindparam("b_owner"),
    executions.c.status == "running",
)
_FENCE = (
    sa.update(executions)
    .where(*_HELD)
    .values(updated_at=sa.bindparam("b_now"))
    .returning(executions.c.cancel_requested)
)
_FINISH = (
    sa.update(executions)
    .where(*_HELD)
    .values(
        status=sa.bindparam("b_status"),
        output=sa.bindparam("b_output"),
        error=sa.bindparam("b_error"),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=sa.bindparam("b_now"),
        finished_at=sa.bindparam("b_now"),
    )
    .returning(*executions.c)
)


def _claim_statement(limit: int) -> Any:
    due = (
        sa.select(executions.c.id)
        .where(
            executions.c.status.in_(("queued", "running")),
            executions.c.due_at <= sa.bindparam("b_now"),
            sa.or_(
                executions.c.lease_expires_at.is_(None),
                executions.c.lease_expires_at < sa.bindparam("b_now"),
            ),
        )
        .order_by(executions.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        sa.update(executions)
        .where(executions.c.id.in_(due.scalar_subquery()))
        .values(
            status="running",
            lease_owner=sa.bindparam("b_owner"),
            lease_expires_at=sa.bindparam("b_expires"),
            claims=executions.c.claims + 1,
            started_at=sa.func.coalesce(executions.c.started_at, sa.bindparam("b_now")),
            updated_at=sa.bindparam("b_now"),
        )
        .returning(*executions.c)
    )


_CLAIM = {limit: _claim_statement(limit) for limit in range(1, 65)}


class LeaseLostError(Exception):
    """This worker no longer holds the execution's lease; another one may be running it."""


@dataclass(frozen=True, slots=True)
class Execution:
    id: str
    tenant: str
    workflow: str
    metadata_version: int
    status: str
    input: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    idempotency_key: str | None
    due_at: datetime
    lease_owner: str | None
    claims: int
    cancel_requested: bool
    replay_of: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Execution:
        m = row._mapping
        return cls(**{name: m[name] for name in cls.__slots__})

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Execution:
        """The execution as just inserted with every column in `values`."""
        return cls(**{name: values[name] for name in cls.__slots__})

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(slots=True)
class StepRun:
    """One step's entry in the ledger. Written before a request leaves and after it returns."""

    step_id: str
    position: int
    status: str
    attempts: int = 0
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> StepRun:
        m = row._mapping
        return cls(**{name: m[name] for name in cls.__slots__})

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Store:
    """The Pipe DB. Every method is one short transaction; none is held across a CRM call."""

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name == "sqlite":
            # One connection for API and worker: the API's requests go first (see _gate).
            engine = cast(AsyncEngine, GatedEngine(engine))
        self.engine = engine
        self.tokens = TokenRepo(engine)
        self.keys = KeyRepo(engine)
        self.audit = AuditRepo(engine)
        self.secrets = SecretRepo(engine)
        self._bundles: dict[int, MetadataBundle] = {}

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Store:
        engine = create_engine(url)
        if migrate:
            await upgrade(engine)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # -- metadata ---------------------------------------------------------------------------

    async def apply_metadata(
        self, bundle: MetadataBundle, source: str, *, audit: AuditEntry | None = None
    ) -> tuple[int, bool]:
        """Store `bundle` as a new immutable version, unless it equals an existing one.

        Returns the version and whether it was created now. Re-applying an older version's
        content makes a new version with that content, so "latest" is always what was applied.
        `audit` is recorded (target: the version) in the same transaction, only if created.
        """
        document = bundle.to_document()
        async with self.engine.begin() as conn:
            latest = (
                await conn.execute(
                    sa.select(metadata_versions.c.version, metadata_versions.c.digest)
                    .order_by(metadata_versions.c.version.desc())
                    .limit(1)
                )
            ).first()
            if latest is not None and latest.digest == bundle.digest:
                return int(latest.version), False
            result = await conn.execute(
                sa.insert(metadata_versions)
                .values(digest=bundle.digest, document=document, source=source, created_at=utcnow())
                .returning(metadata_versions.c.version)
            )
            version = int(result.scalar_one())
            if audit is not None:
                await AuditRepo.write_in(conn, replace(audit, target=str(version)))
        self._bundles[version] = bundle
        return version, True

    async def active_metadata(self) -> tuple[int, MetadataBundle] | None:
        async with self.engine.connect() as conn:
            version = (await conn.execute(_LATEST_VERSION)).scalar()
        if version is None:
            return None
        bundle = await self.metadata(int(version))
        assert bundle is not None
        return int(version), bundle

    async def metadata(self, version: int) -> MetadataBundle | None:
        """The bundle of one version; versions are immutable, so they are cached."""
        if version in self._bundles:
            return self._bundles[version]
        async with self.engine.connect() as conn:
            document = (
                await conn.execute(
                    sa.select(metadata_versions.c.document).where(
                        metadata_versions.c.version == version
                    )
                )
            ).scalar()
        if document is None:
            return None
        bundle = MetadataBundle.from_document(document)
        self._bundles[version] = bundle
        return bundle

    async def metadata_versions(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    metadata_versions.c.version,
                    metadata_versions.c.digest,
                    metadata_versions.c.source,
                    metadata_versions.c.created_at,
                ).order_by(metadata_versions.c.version)
            )
            return [dict(r._mapping) for r in rows]

    # -- executions -------------------------------------------------------------------------

    async def create_execution(
        self,
        *,
        tenant: str,
        workflow: str,
        metadata_version: int,
        input: dict[str, Any],
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        replay_of: str | None = None,
        ledger: list[StepRun] | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[Execution, bool]:
        """Persist a queued execution. With an idempotency key, a repeat returns the first one.

        `audit` is recorded (its target: the new execution's id) in the same transaction, so
        the log never claims an execution that was not stored; a repeat records nothing.

        Raises:
            ConflictError: the key was used before with a different request.
        """
        now = utcnow()
        execution_id = new_id()
        values: dict[str, Any] = {
            "id": execution_id,
            "tenant": tenant,
            "workflow": workflow,
            "metadata_version": metadata_version,
            "status": "queued",
            "input": input,
            "idempotency_key": idempotency_key,
            "output": None,
            "error": None,
            "due_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "claims": 0,
            "cancel_requested": False,
            "replay_of": replay_of,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
        }
        if idempotency_key is not None:
            existing = await self._by_idempotency_key(tenant, idempotency_key, request_hash)
            if existing is not None:
                return existing, False
        try:
            async with self.engine.begin() as conn:
                await conn.execute(_INSERT_EXECUTION, values)
                for run in ledger or []:
                    await conn.execute(
                        sa.insert(step_runs).values(execution_id=execution_id, **run.values())
                    )
                if audit is not None:
                    await AuditRepo.write_in(conn, replace(audit, target=execution_id))
                if idempotency_key is not None:
                    await conn.execute(
                        _INSERT_KEY,
                        {
                            "tenant": tenant,
                            "key": idempotency_key,
                            "request_hash": request_hash or "",
                            "execution_id": execution_id,
                            "created_at": now,
                        },
                    )
        except IntegrityError:
            # Two requests with the same key raced; the other one won.
            if idempotency_key is None:
                raise
            existing = await self._by_idempotency_key(tenant, idempotency_key, request_hash)
            if existing is None:
                raise
            return existing, False
        return Execution.from_values(values), True

    async def _by_idempotency_key(
        self, tenant: str, key: str, request_hash: str | None
    ) -> Execution | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(idempotency_keys).where(
                        idempotency_keys.c.tenant == tenant, idempotency_keys.c.key == key
                    )
                )
            ).first()
        if row is None:
            return None
        if row.request_hash != (request_hash or ""):
            raise IdempotencyKeyReusedError(
                f"Idempotency-Key '{key}' was already used with a different request "
                f"(execution {row.execution_id}); use a new key for a new request",
                execution_id=row.execution_id,
            )
        return await self.get_execution(str(row.execution_id))

    async def get_execution(self, execution_id: str, tenant: str | None = None) -> Execution | None:
        async with self.engine.connect() as conn:
            if tenant is None:
                result = await conn.execute(_GET_EXECUTION, {"b_id": execution_id})
            else:
                result = await conn.execute(
                    _GET_TENANT_EXECUTION, {"b_id": execution_id, "b_tenant": tenant}
                )
            row = result.first()
        return None if row is None else Execution.from_row(row)

    async def list_executions(
        self,
        *,
        tenant: str | None = None,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Execution], str | None]:
        """Newest first. Returns a page and the cursor of the next page (None at the end)."""
        query = sa.select(executions).order_by(executions.c.id.desc()).limit(limit + 1)
        if tenant is not None:
            query = query.where(executions.c.tenant == tenant)
        if status is not None:
            query = query.where(executions.c.status == status)
        if workflow is not None:
            query = query.where(executions.c.workflow == workflow)
        if cursor is not None:
            query = query.where(executions.c.id < cursor)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        page = [Execution.from_row(r) for r in rows[:limit]]
        return page, (page[-1].id if len(rows) > limit else None)

    async def count_executions(self) -> int:
        async with self.engine.connect() as conn:
            return int(
                (
                    await conn.execute(sa.select(sa.func.count()).select_from(executions))
                ).scalar_one()
            )

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Execution]:
        """Take up to `limit` due executions whose lease is free or expired.

        One statement: on PostgreSQL the inner SELECT locks with SKIP LOCKED, so concurrent
        workers never claim the same row; SQLite serialises writers anyway.
        """
        now = utcnow()
        stmt = _CLAIM[limit] if limit in _CLAIM else _claim_statement(limit)
        params = {
            "b_now": now,
            "b_owner": owner,
            "b_expires": now + timedelta(seconds=lease_seconds),
        }
        async with self.engine.begin() as conn:
            rows = (await conn.execute(stmt, params)).all()
        return sorted((Execution.from_row(r) for r in rows), key=lambda e: e.due_at)

    async def extend_leases(self, owner: str, ids: list[str], lease_seconds: float) -> set[str]:
        """Heartbeat: push the leases forward; returns the ids this owner still holds."""
        if not ids:
            return set()
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                sa.update(executions)
                .where(executions.c.id.in_(ids), executions.c.lease_owner == owner)
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
                .returning(executions.c.id)
            )
            return {r.id for r in rows}

    async def release(self, owner: str, ids: list[str]) -> None:
        """Give up the leases on `ids` (a worker shutting down): due again at once."""
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(executions)
                .where(
                    executions.c.id.in_(ids),
                    executions.c.lease_owner == owner,
                    executions.c.status == "running",
                )
                .values(lease_owner=None, lease_expires_at=None, due_at=now, updated_at=now)
            )

    async def step_runs(self, execution_id: str) -> list[StepRun]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(step_runs)
                .where(step_runs.c.execution_id == execution_id)
                .order_by(step_runs.c.position)
            )
            return [StepRun.from_row(r) for r in rows]

    async def save_step(self, execution_id: str, owner: str, *runs: StepRun) -> bool:
        """Write ledger entries in one transaction, fenced by the lease.

        A worker that lost the lease writes nothing. Returns whether someone asked for the
        execution to be cancelled.
        """
        async with self.engine.begin() as conn:
            cancel = await self._fence(conn, execution_id, owner)
            await self._write_runs(conn, execution_id, runs)
        return cancel

    @staticmethod
    async def _write_runs(
        conn: AsyncConnection, execution_id: str, runs: tuple[StepRun, ...] | list[StepRun]
    ) -> None:
        if runs:
            await conn.execute(
                _UPSERT_STEP[conn.dialect.name],
                [{"execution_id": execution_id, **run.values()} for run in runs],
            )

    async def reschedule(
        self,
        execution_id: str,
        owner: str,
        due_at: datetime,
        error: dict[str, Any] | None,
        runs: list[StepRun] | None = None,
    ) -> None:
        """Give the lease back until `due_at` (a retry later), keeping status `running`."""
        async with self.engine.begin() as conn:
            await self._fence(conn, execution_id, owner)
            await self._write_runs(conn, execution_id, runs or [])
            await conn.execute(
                sa.update(executions)
                .where(executions.c.id == execution_id)
                .values(
                    due_at=due_at,
                    lease_owner=None,
                    lease_expires_at=None,
                    error=error,
                    updated_at=utcnow(),
                )
            )

    async def finish(
        self,
        execution_id: str,
        owner: str,
        status: str,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
        runs: list[StepRun] | None = None,
    ) -> Execution:
        """End the execution with its last ledger entries; returns it as stored."""
        assert status in FINAL_STATUSES
        now = utcnow()
        async with self.engine.begin() as conn:
            # The update is its own fence: it only matches while this worker holds the lease.
            done = await conn.execute(
                _FINISH,
                {
                    "b_id": execution_id,
                    "b_owner": owner,
                    "b_status": status,
                    "b_output": output,
                    "b_error": error,
                    "b_now": now,
                },
            )
            row = done.first()
            if row is None:
                raise LeaseLostError(
                    f"lease on execution {execution_id} is no longer held by {owner}"
                )
            await self._write_runs(conn, execution_id, runs or [])
        return Execution.from_row(row)

    async def cancel(self, execution_id: str, tenant: str, reason: str) -> Execution | None:
        """Cancel now if nobody is running it, else ask its worker to stop before the next step.

        Returns the execution afterwards (None if it does not exist for this tenant). A final
        execution is returned unchanged.
        """
        now = utcnow()
        error = {"type": "cancelled", "message": reason}
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(executions)
                .where(
                    executions.c.id == execution_id,
                    executions.c.tenant == tenant,
                    sa.or_(
                        executions.c.status == "queued",
                        sa.and_(
                            executions.c.status == "running",
                            sa.or_(
                                executions.c.lease_owner.is_(None),
                                executions.c.lease_expires_at < now,
                            ),
                        ),
                    ),
                )
                .values(
                    status="cancelled",
                    error=error,
                    finished_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            await conn.execute(
                sa.update(executions)
                .where(
                    executions.c.id == execution_id,
                    executions.c.tenant == tenant,
                    executions.c.status == "running",
                )
                .values(cancel_requested=True, updated_at=now)
            )
        return await self.get_execution(execution_id, tenant=tenant)

    @staticmethod
    async def _fence(conn: AsyncConnection, execution_id: str, owner: str) -> bool:
        held = await conn.execute(
            _FENCE, {"b_id": execution_id, "b_owner": owner, "b_now": utcnow()}
        )
        row = held.first()
        if row is None:
            raise LeaseLostError(f"lease on execution {execution_id} is no longer held by {owner}")
        return bool(row.cancel_requested)
