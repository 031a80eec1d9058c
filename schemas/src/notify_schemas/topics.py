"""The topic registry, read from the manifests under schemas/topics/.

Every Kafka topic of the contract is described once, in its manifest; code refers to topics
through the constants below and never spells a topic name twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel

from notify_schemas import models

MESSAGE_CREATED = "notify.message-created.v1"
ANNOUNCEMENT_REQUESTED = "notify.announcement-requested.v1"
USERS = "notify.users.v1"
MEMBERSHIPS = "notify.memberships.v1"
CHANNEL_PREFERENCES = "notify.channel-preferences.v1"
USER_PREFERENCES = "notify.user-preferences.v1"
NOTIFICATIONS = "notify.notifications.v1"
# The priority lane (critical and high-priority notifications): docs/decisions/0010.
NOTIFICATIONS_PRIORITY = "notify.notifications-priority.v1"
DELIVERIES = "notify.deliveries.v1"
READ_STATE = "notify.read-state.v1"
FANOUT_RESULTS = "notify.fanout-results.v1"
SUPPRESSIONS = "notify.suppressions.v1"
DLQ = "notify.dlq.v1"


def contract_dir() -> Path:
    """Where the manifests, JSON Schemas and examples live (repo checkout or installed wheel)."""
    packaged = Path(__file__).parent / "_contract"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Topic:
    name: str
    description: str
    key: str
    cleanup: str
    partitions: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    model: type[BaseModel] | None
    schema_file: str | None
    ce_type: str | None

    @property
    def compacted(self) -> bool:
        return self.cleanup == "compact"


@cache
def all_topics() -> dict[str, Topic]:
    topics: dict[str, Topic] = {}
    for path in sorted((contract_dir() / "topics").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        latest = max(raw["versions"], key=lambda v: v["version"])
        model = getattr(models, latest["model"]) if latest["model"] else None
        topics[raw["name"]] = Topic(
            name=raw["name"],
            description=raw["description"],
            key=raw["key"],
            cleanup=raw["cleanup"],
            partitions=int(raw["partitions"]),
            producers=tuple(raw["producers"]),
            consumers=tuple(raw["consumers"]),
            model=model,
            schema_file=latest["schema"],
            ce_type=latest["ce_type"],
        )
    return topics


def topic(name: str) -> Topic:
    return all_topics()[name]
