"""The two lanes of notifications (docs/decisions/0010-priority-lanes.md).

The fanout writes critical and high-priority notifications (mentions are high) to
notify.notifications-priority.v1 and the rest to notify.notifications.v1. Every consumer
of notifications reads each lane with its own consumer in its own group
("<group>-priority" for the priority lane), so a backlog on the bulk lane — a 100 000-
recipient announcement — never sits in front of a critical notification.
"""

from __future__ import annotations

from typing import Literal

from notify_schemas import topics

Lane = Literal["bulk", "priority"]
BULK: Lane = "bulk"
PRIORITY: Lane = "priority"
LANES: tuple[Lane, ...] = (PRIORITY, BULK)


def topic_for(lane: Lane) -> str:
    """The notifications topic of a lane (unprefixed)."""
    return topics.NOTIFICATIONS_PRIORITY if lane == PRIORITY else topics.NOTIFICATIONS


def group_for(group: str, lane: Lane) -> str:
    """The consumer group of a lane: the service's group for bulk, "<group>-priority"."""
    return f"{group}-priority" if lane == PRIORITY else group
