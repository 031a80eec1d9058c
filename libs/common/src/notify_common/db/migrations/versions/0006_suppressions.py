"""suppressions: the log of every decision not to notify someone, with its reason

Revision ID: 0006_suppressions
Revises: 0005_rate_limits
Create Date: 2026-11-22 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_suppressions"
down_revision = "0005_rate_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("notification_id", sa.UUID(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("server_id", sa.Text(), nullable=True),
        sa.Column("channel_id", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("notification_id", "channel", name="uq_suppressions_decision"),
    )
    op.create_index("ix_suppressions_at", "suppressions", ["at"], unique=False)
    op.create_index(
        "ix_suppressions_user_id_at_id", "suppressions", ["user_id", "at", "id"], unique=False
    )
    op.create_index("ix_suppressions_source_id", "suppressions", ["source_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_suppressions_source_id", table_name="suppressions")
    op.drop_index("ix_suppressions_user_id_at_id", table_name="suppressions")
    op.drop_index("ix_suppressions_at", table_name="suppressions")
    op.drop_table("suppressions")
