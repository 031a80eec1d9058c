"""rate limits: fixed-window request counters shared by every replica

Revision ID: 0005_rate_limits
Revises: 0004_admin
Create Date: 2026-11-22 05:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_rate_limits"
down_revision = "0004_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
    )
    op.create_index(op.f("ix_rate_limits_window_end"), "rate_limits", ["window_end"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_rate_limits_window_end"), table_name="rate_limits")
    op.drop_table("rate_limits")
