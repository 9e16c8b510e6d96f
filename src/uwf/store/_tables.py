"""The Pipe DB schema (SQLAlchemy Core). Alembic migrations under `migrations/` create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "AUDIT_OUTCOMES",
    "EXECUTION_STATUSES",
    "FINAL_STATUSES",
    "STEP_STATUSES",
    "UtcDateTime",
    "api_keys",
    "audit_log",
    "auth_tokens",
    "executions",
    "governor_counters",
    "governor_pauses",
    "idempotency_keys",
    "meta",
    "metadata_versions",
    "step_runs",
    "stored_secrets",
]

EXECUTION_STATUSES = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "dead", "cancelled"})
# `sending`: the request may have left; a step found in this state after a crash is checked
# before it is sent again. `outcome_unknown`: no way to check; never re-sent blindly.
# `running`: a switch, for_each, call_workflow or compensation under way, with its decision.
STEP_STATUSES = (
    "sending",
    "succeeded",
    "skipped",
    "failed",
    "retrying",
    "outcome_unknown",
    "running",
)
AUDIT_OUTCOMES = ("succeeded", "denied", "failed")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the Pipe DB")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

meta = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

metadata_versions = sa.Table(
    "metadata_versions",
    meta,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("document", JSONType, nullable=False),
    sa.Column("source", sa.String(1000), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

executions = sa.Table(
    "executions",
    meta,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("workflow", sa.String(63), nullable=False),
    sa.Column(
        "metadata_version",
        sa.Integer,
        sa.ForeignKey("metadata_versions.version"),
        nullable=False,
    ),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input", JSONType, nullable=False),
    sa.Column("output", JSONType),
    sa.Column("error", JSONType),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("due_at", UtcDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_expires_at", UtcDateTime),
    sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("replay_of", sa.String(36)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("started_at", UtcDateTime),
    sa.Column("finished_at", UtcDateTime),
    sa.CheckConstraint(
        "status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')",
        name="status",
    ),
    sa.Index(None, "status", "due_at"),
    sa.Index(None, "tenant", "id"),
)

step_runs = sa.Table(
    "step_runs",
    meta,
    sa.Column(
        "execution_id",
        sa.String(36),
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("step_id", sa.String(63), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("request", JSONType),
    sa.Column("response", JSONType),
    sa.Column("output", JSONType),
    sa.Column("error", JSONType),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    meta,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column(
        "execution_id",
        sa.String(36),
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# OAuth tokens of connections, encrypted (uwf.auth.Vault); one row per connection key. The row
# is also the lock that makes exactly one refresh happen across all workers.
auth_tokens = sa.Table(
    "auth_tokens",
    meta,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("ciphertext", sa.Text),
    sa.Column("token_hash", sa.String(64)),
    sa.Column("expires_at", UtcDateTime),
    sa.Column("state", sa.String(16), nullable=False, server_default="ok"),
    sa.Column("reason", sa.Text),
    sa.Column("refreshes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# The governor's shared state (PostgreSQL deployments): request counts per connection and
# window, and pauses (after a 429, or when the CRM reports its budget used up).
governor_counters = sa.Table(
    "governor_counters",
    meta,
    sa.Column("key", sa.String(160), primary_key=True),
    sa.Column("window_start", sa.Float, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

governor_pauses = sa.Table(
    "governor_pauses",
    meta,
    sa.Column("key", sa.String(160), primary_key=True),
    sa.Column("until", sa.Float, nullable=False),
    sa.Column("reason", sa.Text),
)

# Callers' API keys. Only a SHA-256 of the key is kept (the key is 32 random bytes, so no salt
# or slow hash is needed), with a short visible prefix to recognise it in listings.
# `tenants` NULL means every tenant (a service key); else the list of tenants it may act on.
api_keys = sa.Table(
    "api_keys",
    meta,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("tenants", JSONType),
    sa.Column("scopes", JSONType, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime),
    sa.Column("revoked_at", UtcDateTime),
    sa.Column("last_used_at", UtcDateTime),
)

# Who did what, when, to which tenant, with which outcome. Append-only: triggers made by the
# migration refuse UPDATE and DELETE. Ids are UUIDv7, so they order rows and serve as cursors.
audit_log = sa.Table(
    "audit_log",
    meta,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("actor_type", sa.String(16), nullable=False),
    sa.Column("tenant", sa.String(63)),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("request_id", sa.String(64)),
    sa.Column("details", JSONType),
    sa.Index(None, "tenant", "id"),
    sa.Index(None, "action", "id"),
)

# CRM secrets kept by UWF itself (`uwf secrets set`), per tenant, AES-256-GCM encrypted
# (uwf.auth.Vault). `key_id` repeats the id inside the ciphertext so listings and rotation
# can tell which key made it without decrypting.
stored_secrets = sa.Table(
    "stored_secrets",
    meta,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)
