"""Click analytics: searches, the results shown, clicks.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "searches",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_hash", sa.String(32)),
        sa.Column("results", sa.SmallInteger, nullable=False),
    )
    op.create_index("ix_searches_at", "searches", ["at"])
    op.create_table(
        "shown_results",
        sa.Column(
            "search_id",
            sa.BigInteger,
            sa.ForeignKey("searches.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("rank", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("product_id", sa.String(200), nullable=False),
        sa.Column("category", sa.String(200), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
    )
    op.create_table(
        "clicks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("search_id", sa.BigInteger, nullable=False),
        sa.Column("rank", sa.SmallInteger, nullable=False),
        sa.Column("product_id", sa.String(200), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
    )
    op.create_index("ix_clicks_at", "clicks", ["at"])
    op.create_index("ix_clicks_search", "clicks", ["search_id", "rank"])


def downgrade() -> None:
    op.drop_table("clicks")
    op.drop_table("shown_results")
    op.drop_table("searches")
