"""priority lanes: push-sender claims due high-urgency pushes before the others

Revision ID: 0007_priority_lanes
Revises: 0006_suppressions
Create Date: 2026-11-22 06:30:00.000000

A partial index over the due pushes of the priority lane (urgency 'high': critical,
mentions, high priority), so the claim's first pass finds them without walking a bulk
backlog (docs/decisions/0010-priority-lanes.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_priority_lanes"
down_revision = "0006_suppressions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_push_deliveries_due_high",
        "push_deliveries",
        ["not_before"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'inflight') AND urgency = 'high'"),
    )


def downgrade() -> None:
    op.drop_index("ix_push_deliveries_due_high", table_name="push_deliveries")
