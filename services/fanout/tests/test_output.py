"""The fanout's output path for the suppression log, with a stand-in producer (no broker):
what a suppressed user's record looks like on notify.suppressions.v1."""

from __future__ import annotations

from typing import Any

from notify_common.settings import CommonSettings
from notify_fanout.output import NotificationOutput
from notify_schemas import envelope, topics
from notify_schemas.models import NotificationSuppressed


class FakeProducer:
    """Records what would be produced (librdkafka's fast path and the wrapper's)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, Any, Any]] = []
        self.raw = self

    def produce(self, topic: str, value: Any = None, key: Any = None, headers: Any = None) -> None:
        self.sent.append((topic, key, value, headers))

    def poll(self, _timeout: float = 0) -> int:
        return 0


def records(prefix: str = "t.") -> tuple[NotificationOutput, FakeProducer]:
    producer = FakeProducer()
    settings = CommonSettings(topic_prefix=prefix)
    return NotificationOutput(settings, producer=producer), producer  # type: ignore[arg-type]


def test_one_record_per_suppressed_user_keyed_by_user():
    output, producer = records()
    n = output.suppressions(
        source_id="m-1",
        kind="message",
        server_id="s-1",
        channel_id="c-1",
        users=[("u-free", "not_entitled"), ("u-muted", "channel_muted")],
        correlation_id="req-9",
    )
    assert n == 2
    assert [(t, k) for t, k, _, _ in producer.sent] == [
        (f"t.{topics.SUPPRESSIONS}", "u-free"),
        (f"t.{topics.SUPPRESSIONS}", "u-muted"),
    ]
    events = [NotificationSuppressed.model_validate_json(v) for _, _, v, _ in producer.sent]
    assert [(e.user_id, e.reason) for e in events] == [
        ("u-free", "not_entitled"),
        ("u-muted", "channel_muted"),
    ]
    assert {(e.source_id, e.kind, e.server_id, e.channel_id) for e in events} == {
        ("m-1", "message", "s-1", "c-1")
    }
    headers = envelope.decode_headers(producer.sent[0][3])
    assert headers["ce_type"] == topics.topic(topics.SUPPRESSIONS).ce_type
    assert headers["ce_id"] == "m-1/u-free"  # the same again when a batch is replayed
    assert headers[envelope.CORRELATION_HEADER] == "req-9"


def test_announcements_without_a_server_and_nobody_suppressed():
    output, producer = records("")
    assert (
        output.suppressions(
            source_id="a-1",
            kind="announcement",
            server_id=None,
            channel_id=None,
            users=[],
            correlation_id=None,
        )
        == 0
    )
    assert producer.sent == []
    output.suppressions(
        source_id="a-1",
        kind="announcement",
        server_id=None,
        channel_id=None,
        users=[("u-gone", "unknown_user")],
        correlation_id=None,
    )
    [(_, _, value, _)] = producer.sent
    event = NotificationSuppressed.model_validate_json(value)
    assert (event.kind, event.server_id, event.channel_id) == ("announcement", None, None)
