"""State that outlives a process and is shared by replicas (click analytics today): an
SQL database through SQLAlchemy's asyncio API, SQLite by default, PostgreSQL for several
replicas, one schema for both, migrated by Alembic on start-up.

It lives in engine/ because both the bots and `index_builder.py report` read it, and it
imports neither torch nor a chat library, so a report never loads a model
(tests/test_layering.py holds it to that).
"""
