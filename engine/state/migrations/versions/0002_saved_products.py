"""Saved products and price-drop / back-in-stock alerts: shoppers, saved_products,
alert_builds, alert_outbox, alert_prices.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    _create_saved_products()
    _create_alerts()


def _create_saved_products() -> None:
    op.create_table(
        "shoppers",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("language", sa.String(16), nullable=False, server_default=""),
        sa.Column("alerts", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("platform", "user_id", name="uq_shoppers_platform_user"),
    )
    op.create_table(
        "saved_products",
        sa.Column(
            "shopper_id",
            sa.BigInteger,
            sa.ForeignKey("shoppers.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("product_id", sa.String(200), primary_key=True),
        sa.Column("saved_at_ms", sa.BigInteger, nullable=False),
        sa.Column("price", sa.Float),
        sa.Column("in_stock", sa.Boolean, nullable=False),
    )
    op.create_index("ix_saved_products_product", "saved_products", ["product_id"])


def _create_alerts() -> None:
    op.create_table(
        "alert_builds",
        sa.Column("build_id", sa.String(64), primary_key=True),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alert_outbox",
        sa.Column("id", _ID, primary_key=True),
        sa.Column(
            "shopper_id",
            sa.BigInteger,
            sa.ForeignKey("shoppers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("product_id", sa.String(200), nullable=False),
        sa.Column("event", sa.String(80), nullable=False),
        sa.Column("old_price", sa.Float),
        sa.Column("new_price", sa.Float),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("claimed_at", sa.BigInteger),
        sa.Column("sent_at", sa.BigInteger),
        sa.UniqueConstraint("shopper_id", "product_id", "event", name="uq_alert_outbox_event"),
    )
    op.create_index("ix_alert_outbox_status", "alert_outbox", ["status", "id"])
    op.create_table(
        "alert_prices",
        sa.Column("build_id", sa.String(64), primary_key=True),
        sa.Column("product_id", sa.String(200), primary_key=True),
        sa.Column("price", sa.Float),
        sa.Column("in_stock", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_prices")
    op.drop_table("alert_outbox")
    op.drop_table("alert_builds")
    op.drop_table("saved_products")
    op.drop_table("shoppers")
