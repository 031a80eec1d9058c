"""admin: dead letters, fanout results, delivery outcomes, notifications by message_id

Revision ID: 0004_admin
Revises: 0003_email
Create Date: 2026-11-22 05:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_admin"
down_revision = "0003_email"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dlq_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("original_topic", sa.Text(), nullable=False),
        sa.Column("original_partition", sa.Integer(), nullable=False),
        sa.Column("original_offset", sa.BigInteger(), nullable=False),
        sa.Column("consumer_group", sa.Text(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=True),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("error_class", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("dlq_partition", sa.Integer(), nullable=False),
        sa.Column("dlq_offset", sa.BigInteger(), nullable=False),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requeue_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dlq_entries")),
        sa.UniqueConstraint(
            "original_topic",
            "original_partition",
            "original_offset",
            "consumer_group",
            name=op.f("uq_dlq_entries_origin"),
        ),
    )
    op.create_index(
        "ix_dlq_entries_dead_lettered_at", "dlq_entries", ["dead_lettered_at"], unique=False
    )
    op.create_table(
        "fanout_results",
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("suppressed", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_fanout_results")),
    )
    op.create_index("ix_fanout_results_at", "fanout_results", ["at"], unique=False)
    op.create_table(
        "delivery_outcomes",
        sa.Column("notification_id", sa.UUID(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("notification_id", "channel", name=op.f("pk_delivery_outcomes")),
    )
    op.create_index("ix_delivery_outcomes_at", "delivery_outcomes", ["at"], unique=False)
    op.create_index(
        "ix_notifications_message_id",
        "notifications",
        [sa.text("(metadata ->> 'message_id')")],
        unique=False,
    )
    op.create_index(
        "ix_notifications_announcement_id",
        "notifications",
        [sa.text("(metadata ->> 'announcement_id')")],
        unique=False,
    )
    op.create_index("ix_notifications_inserted_at", "notifications", ["inserted_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_notifications_inserted_at", table_name="notifications")
    op.drop_index("ix_notifications_announcement_id", table_name="notifications")
    op.drop_index("ix_notifications_message_id", table_name="notifications")
    op.drop_index("ix_delivery_outcomes_at", table_name="delivery_outcomes")
    op.drop_table("delivery_outcomes")
    op.drop_index("ix_fanout_results_at", table_name="fanout_results")
    op.drop_table("fanout_results")
    op.drop_index("ix_dlq_entries_dead_lettered_at", table_name="dlq_entries")
    op.drop_table("dlq_entries")
