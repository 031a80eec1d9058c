"""Create every topic of the contract with its partitions and cleanup policy.

Topics are always created explicitly: a topic auto-created by a producer gets the broker's
default partition count, and co-partitioning (messages and the fanout's member table)
depends on the counts matching.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from notify_common.kafka.config import client_config
from notify_common.settings import CommonSettings
from notify_schemas.topics import all_topics


def ensure_topics(settings: CommonSettings, *, timeout: float = 30.0) -> list[str]:
    """Create the contract's topics that do not exist yet; return the names created."""
    admin = AdminClient(client_config(settings))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = []
    for t in all_topics().values():
        name = settings.topic(t.name)
        if name in existing:
            continue
        config = {"cleanup.policy": t.cleanup}
        if t.compacted:
            # Compact soon after a key changes so restarts replay little history.
            config["min.cleanable.dirty.ratio"] = "0.1"
        wanted.append(
            NewTopic(name, num_partitions=t.partitions, replication_factor=-1, config=config)
        )
    created = []
    if wanted:
        for name, fut in admin.create_topics(wanted, request_timeout=timeout).items():
            try:
                fut.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    return created


def partition_count(settings: CommonSettings, topic: str, *, timeout: float = 10.0) -> int:
    md = AdminClient(client_config(settings)).list_topics(topic, timeout=timeout)
    return len(md.topics[topic].partitions)
