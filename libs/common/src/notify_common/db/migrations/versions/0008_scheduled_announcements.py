"""scheduled announcements: held in PostgreSQL until send_at, then released to Kafka

Revision ID: 0008_scheduled_announcements
Revises: 0007_priority_lanes
Create Date: 2026-11-22 06:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_scheduled_announcements"
down_revision = "0007_priority_lanes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduled_announcements",
        sa.Column("announcement_id", sa.Text(), nullable=False),
        sa.Column("event", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("kafka_key", sa.Text(), nullable=False),
        sa.Column("correlation_id", sa.Text(), nullable=True),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("announcement_id", name=op.f("pk_scheduled_announcements")),
    )
    op.create_index(
        "ix_scheduled_announcements_due",
        "scheduled_announcements",
        ["send_at"],
        unique=False,
        postgresql_where=sa.text("state = 'scheduled'"),
    )


def downgrade() -> None:
    op.drop_index("ix_scheduled_announcements_due", table_name="scheduled_announcements")
    op.drop_table("scheduled_announcements")
