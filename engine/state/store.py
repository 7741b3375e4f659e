"""The state store: an SQLAlchemy async engine on the configured URL, its schema brought
up to date by Alembic when it opens (on every start-up; replicas starting together take
turns on PostgreSQL under an advisory lock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant shared by every replica: the key of the advisory lock migrations hold.
_MIGRATION_LOCK = 0x66617368696F6E  # "fashion"


class StateStoreError(RuntimeError):
    """The state store cannot be opened or migrated; the message says which URL (without
    its password) and why."""


def async_url(url: str, base_dir: Path) -> URL:
    """The configured URL with an asyncio driver; a relative SQLite path resolves against
    `base_dir` (the config file's folder), like every other path setting."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not Path(database).is_absolute():
            database = str((base_dir / database).resolve())
        return parsed.set(drivername="sqlite+aiosqlite", database=database)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise StateStoreError(f"state.url: unsupported database {backend!r} (sqlite, postgresql)")


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # WAL: readers (a report) never block the bot's writes; NORMAL is durable in WAL mode
    # except for the last commits before a power cut, which analytics can lose.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class StateStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    async def open(cls, url: str, base_dir: Path, migrate: bool = True) -> StateStore:
        """Connect and (unless `migrate` is false) apply every migration not yet applied."""
        target = async_url(url, base_dir)
        if target.get_backend_name() == "sqlite" and target.database not in (None, "", ":memory:"):
            Path(target.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            target,
            pool_pre_ping=target.get_backend_name() != "sqlite",
            hide_parameters=True,  # a failed insert's log line carries no recorded values
        )
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        if migrate:
            try:
                async with engine.begin() as connection:
                    await connection.run_sync(_upgrade)
            except Exception as exc:
                await engine.dispose()
                where = target.render_as_string(hide_password=True)
                raise StateStoreError(f"state store {where}: {exc}") from exc
        return store

    async def close(self) -> None:
        await self.engine.dispose()
