"""The governor's shared counters and pauses

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "governor_counters",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_governor_counters")),
    )
    op.create_table(
        "governor_pauses",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("until", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_governor_pauses")),
    )


def downgrade() -> None:
    op.drop_table("governor_pauses")
    op.drop_table("governor_counters")
