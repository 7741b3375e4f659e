"""Alembic migrations of the state store (run by engine.state.store.StateStore.open)."""
