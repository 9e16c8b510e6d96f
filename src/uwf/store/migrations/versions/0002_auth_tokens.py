"""OAuth tokens of connections, encrypted

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import uwf.store._tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_tokens",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("expires_at", uwf.store._tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="ok", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("refreshes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", uwf.store._tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_auth_tokens")),
    )


def downgrade() -> None:
    op.drop_table("auth_tokens")
