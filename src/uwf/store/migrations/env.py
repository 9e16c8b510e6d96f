"""Alembic environment: runs on the connection `uwf.store.upgrade` hands over."""

from __future__ import annotations

from alembic import context

from uwf.store._tables import meta

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=meta, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
