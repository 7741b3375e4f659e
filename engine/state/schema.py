"""The state store's tables, the same on SQLite and PostgreSQL. Times are whole seconds
since the epoch (a BigInteger), so `at / 86400` is the day on both engines. The Alembic
migrations (engine/state/migrations) create exactly these; a test compares them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    false,
    true,
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

# ---- saved products and alerts (issue 18) ------------------------------------------------
# A shopper who saved something: unlike analytics (a keyed hash at most), the platform's
# user id is kept, because alerts must be able to message them. /forget deletes the row
# and, through the foreign keys, everything below.
shoppers = Table(
    "shoppers",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("platform", String(16), nullable=False),
    Column("user_id", String(32), nullable=False),  # the platform's user id, as text
    Column("language", String(16), nullable=False, server_default=""),
    Column("alerts", Boolean, nullable=False, server_default=true()),
    Column("blocked", Boolean, nullable=False, server_default=false()),  # 403: never again
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("platform", "user_id", name="uq_shoppers_platform_user"),
)

# What each shopper saved, with the price and stock last told to them (when saved, then
# as of the last build compared): the baseline a new build's prices are compared with.
saved_products = Table(
    "saved_products",
    metadata,
    Column(
        "shopper_id",
        BigInteger,
        ForeignKey("shoppers.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("product_id", String(200), primary_key=True),
    Column("saved_at_ms", BigInteger, nullable=False),
    Column("price", Float),  # None: the catalog gave none
    Column("in_stock", Boolean, nullable=False),
    Index("ix_saved_products_product", "product_id"),
)

# One row per index build whose prices were compared: the comparison runs once per build,
# even with several replicas or a restart (the insert of this row is its lock).
alert_builds = Table(
    "alert_builds",
    metadata,
    Column("build_id", String(64), primary_key=True),
    Column("at", BigInteger, nullable=False),
)

# The alerts to send, written in the same transaction as the comparison that found them.
# status: pending -> sending (claimed) -> sent; dropped (shopper blocked the bot or turned
# alerts off), failed (the platform refused it), unknown (a process died while sending it:
# not sent again, as a shopper must never get one twice).
alert_outbox = Table(
    "alert_outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "shopper_id",
        BigInteger,
        ForeignKey("shoppers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("product_id", String(200), nullable=False),
    Column("event", String(80), nullable=False),  # "price_drop:<build>", "back_in_stock:<build>"
    Column("old_price", Float),
    Column("new_price", Float),
    Column("created_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("claimed_at", BigInteger),
    Column("sent_at", BigInteger),
    UniqueConstraint("shopper_id", "product_id", "event", name="uq_alert_outbox_event"),
    Index("ix_alert_outbox_status", "status", "id"),
)

# A new build's price and stock of the saved products, staged for one set-based comparison
# with saved_products (the catalog is another database); emptied in the same transaction.
alert_prices = Table(
    "alert_prices",
    metadata,
    Column("build_id", String(64), primary_key=True),
    Column("product_id", String(200), primary_key=True),
    Column("price", Float),
    Column("in_stock", Boolean, nullable=False),
)
