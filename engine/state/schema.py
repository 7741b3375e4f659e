"""The state store's tables, the same on SQLite and PostgreSQL. Times are whole seconds
since the epoch (a BigInteger), so `at / 86400` is the day on both engines. The Alembic
migrations (engine/state/migrations) create exactly these; a test compares them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
)

metadata = MetaData()

# Search ids are random 63-bit numbers made by the bot, so a link can carry its search's
# id before the (batched) row is written, and replicas never collide.
searches = Table(
    "searches",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("at", BigInteger, nullable=False),
    Column("platform", String(16), nullable=False),
    Column("kind", String(16), nullable=False),  # photo, text, garment, page
    Column("user_hash", String(32)),  # a keyed hash of the platform's user id, never the id
    Column("results", SmallInteger, nullable=False),
    Index("ix_searches_at", "at"),
)

shown_results = Table(
    "shown_results",
    metadata,
    Column(
        "search_id",
        BigInteger,
        ForeignKey("searches.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("rank", SmallInteger, primary_key=True, autoincrement=False),  # 1 = first shown
    Column("product_id", String(200), nullable=False),
    Column("category", String(200), nullable=False),
    Column("score", Float, nullable=False),
)

# No foreign key to searches: a click may outlive its search's row (retention), and a
# replica may count a click before another replica's batch with the search is written.
clicks = Table(
    "clicks",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", BigInteger, nullable=False),
    Column("search_id", BigInteger, nullable=False),
    Column("rank", SmallInteger, nullable=False),
    Column("product_id", String(200), nullable=False),
    Column("platform", String(16), nullable=False),
    Index("ix_clicks_at", "at"),
    Index("ix_clicks_search", "search_id", "rank"),
)
