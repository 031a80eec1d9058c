"""The contract checks itself: manifests, JSON Schemas, examples and models agree."""

from __future__ import annotations

import json

import jsonschema
import pytest
from cloudevents.v1.kafka import KafkaMessage, from_binary

from notify_schemas import envelope, models
from notify_schemas.generate import render
from notify_schemas.topics import all_topics, contract_dir

TOPICS = all_topics()
MODELLED = [t for t in TOPICS.values() if t.model is not None]


def examples(topic_name: str) -> list[tuple[str, dict]]:
    folder = contract_dir() / "examples" / topic_name / "1"
    return [(p.name, json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]


def test_every_topic_of_the_contract_has_a_manifest():
    assert set(TOPICS) >= {
        "notify.message-created.v1",
        "notify.announcement-requested.v1",
        "notify.users.v1",
        "notify.memberships.v1",
        "notify.channel-preferences.v1",
        "notify.notifications.v1",
        "notify.deliveries.v1",
        "notify.dlq.v1",
    }
    for t in TOPICS.values():
        assert t.cleanup in {"delete", "compact"}
        assert t.partitions >= 1
        assert t.consumers and t.producers


@pytest.mark.parametrize("topic", MODELLED, ids=lambda t: t.name)
def test_committed_schema_matches_the_model(topic):
    committed = (contract_dir() / "jsonschema" / topic.schema_file).read_text()
    assert committed == render(topic.name), "run `make schemas` and review the contract change"


@pytest.mark.parametrize("topic", MODELLED, ids=lambda t: t.name)
def test_every_example_validates_against_schema_and_model(topic):
    schema = json.loads((contract_dir() / "jsonschema" / topic.schema_file).read_text())
    found = examples(topic.name)
    assert found, f"{topic.name} has no examples"
    for name, example in found:
        jsonschema.validate(example, schema, cls=jsonschema.Draft202012Validator)
        parsed = topic.model.model_validate(example)
        # The model round-trips to data the schema still accepts.
        jsonschema.validate(parsed.model_dump(mode="json"), schema)
        assert name


@pytest.mark.parametrize(
    ("topic_name", "bad"),
    [
        ("notify.message-created.v1", {"message_id": "m"}),  # required fields missing
        (
            "notify.users.v1",
            {"user_id": "u", "display_name": "U", "nickname": "x"},  # unknown field
        ),
        ("notify.channel-preferences.v1", {"user_id": "u", "channel_id": "c", "level": "loud"}),
        ("notify.memberships.v1", {"server_id": "s/1", "user_id": "u"}),  # "/" is reserved
    ],
)
def test_schema_and_model_both_reject_invalid_events(topic_name, bad):
    topic = TOPICS[topic_name]
    schema = json.loads((contract_dir() / "jsonschema" / topic.schema_file).read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(ValueError):
        topic.model.model_validate(bad)


def test_announcement_needs_exactly_one_audience():
    base = {"announcement_id": "a", "title": "t", "body": "b", "created_at": "2026-01-01T00:00:00Z"}
    with pytest.raises(ValueError, match="exactly one"):
        models.AnnouncementRequested.model_validate(base)
    with pytest.raises(ValueError, match="exactly one"):
        models.AnnouncementRequested.model_validate({**base, "server_id": "s", "user_ids": ["u"]})
    assert models.AnnouncementRequested.model_validate({**base, "server_id": "s"}).server_id == "s"


def test_notification_ids_are_deterministic_per_source_event_and_user():
    a = models.notification_id_for("m-1", "u-1")
    assert a == models.notification_id_for("m-1", "u-1")
    assert a != models.notification_id_for("m-1", "u-2")
    assert a != models.notification_id_for("m-2", "u-1")


def test_envelope_is_cloudevents_binary_mode():
    event = models.ChannelPreference(user_id="u", channel_id="c", level="none")
    value, headers = envelope.encode(
        event, ce_type="io.notify.ChannelPreference", source="/inbox", correlation_id="req-1"
    )
    ce = from_binary(KafkaMessage(headers=dict(headers), key=b"u/c", value=value))
    assert ce["specversion"] == "1.0"
    assert ce["type"] == "io.notify.ChannelPreference"
    assert ce["source"] == "/inbox"
    assert ce["correlationid"] == "req-1"
    assert ce["datacontenttype"] == "application/json"
    assert ce.get_data() == event.model_dump(mode="json")
    _, other = envelope.encode(event, ce_type="x", source="/inbox")
    assert dict(headers)["ce_id"] != dict(other)["ce_id"]
