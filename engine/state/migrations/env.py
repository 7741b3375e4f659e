"""Alembic's environment: StateStore hands it an open connection (config.attributes), so
migrations run on the store's own engine, SQLite or PostgreSQL alike."""

from __future__ import annotations

from alembic import context

from engine.state.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
