"""Preferences: the API, the outbox rows it writes, and the relay that publishes them."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from notify_inbox.app import build_app
from notify_inbox.outbox import LOCK_KEY, OutboxRelay
from notify_schemas import envelope, models, topics

pytestmark = pytest.mark.integration

DEFAULTS = {
    "channels": {"in_app": True, "push": True, "email": True},
    "quiet_hours": None,
    "digest": {"enabled": True, "hour_local": 9},
}
NIGHT_OWL = {
    "channels": {"in_app": True, "push": False, "email": True},
    "quiet_hours": {"start": "22:00", "end": "07:30"},
    "digest": {"enabled": False, "hour_local": 20},
}


def outbox_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM outbox ORDER BY id")).mappings()
        return [dict(r) for r in rows]


def test_preferences_default_until_set_then_round_trip(api, auth, engine):
    headers = auth("u-carol")
    assert api.get("/v1/preferences", headers=headers).json() == {"user_id": "u-carol", **DEFAULTS}
    assert outbox_rows(engine) == []

    resp = api.put("/v1/preferences", json=NIGHT_OWL, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"user_id": "u-carol", **NIGHT_OWL}
    assert api.get("/v1/preferences", headers=headers).json() == {"user_id": "u-carol", **NIGHT_OWL}
    # Another user still has the defaults.
    assert api.get("/v1/preferences", headers=auth("u-dave")).json()["channels"]["push"] is True

    # PUT replaces the whole: omitted parts go back to their defaults.
    api.put("/v1/preferences", json={"channels": {"push": False}}, headers=headers)
    got = api.get("/v1/preferences", headers=headers).json()
    assert got["quiet_hours"] is None
    assert got["digest"] == DEFAULTS["digest"]
    assert got["channels"] == {"in_app": True, "push": False, "email": True}


def test_channel_level_defaults_to_all_then_round_trips(api, auth):
    headers = auth("u-carol")
    url = "/v1/channels/c-general/preference"
    assert api.get(url, headers=headers).json() == {
        "user_id": "u-carol",
        "channel_id": "c-general",
        "level": "all",
    }
    assert api.put(url, json={"level": "mentions"}, headers=headers).json()["level"] == "mentions"
    assert api.get(url, headers=headers).json()["level"] == "mentions"
    assert api.get("/v1/channels/c-random/preference", headers=headers).json()["level"] == "all"
    assert api.get(url, headers=auth("u-dave")).json()["level"] == "all"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/preferences", {"quiet_hours": {"start": "25:00", "end": "07:00"}}),
        ("/v1/preferences", {"digest": {"hour_local": 24}}),
        ("/v1/preferences", {"channel": {"push": False}}),
        ("/v1/channels/c-general/preference", {"level": "some"}),
        ("/v1/channels/c-general/preference", {}),
    ],
)
def test_invalid_preferences_are_rejected_and_nothing_is_queued(api, auth, engine, path, body):
    assert api.put(path, json=body, headers=auth("u-carol")).status_code == 422
    assert outbox_rows(engine) == []


def test_a_user_id_that_cannot_be_a_key_is_refused(api, auth, engine):
    resp = api.put("/v1/preferences", json=NIGHT_OWL, headers=auth("team/carol"))
    assert resp.status_code == 422
    assert api.get("/v1/preferences", headers=auth("team/carol")).status_code == 422
    assert outbox_rows(engine) == []


def test_every_change_is_queued_in_the_outbox_with_its_event(api, auth, engine):
    api.put(
        "/v1/channels/c-general/preference",
        json={"level": "none"},
        headers={**auth("u-carol"), "X-Request-ID": "req-1"},
    )
    api.put("/v1/preferences", json=NIGHT_OWL, headers={**auth("u-carol"), "X-Request-ID": "req-2"})

    channel_row, user_row = outbox_rows(engine)
    assert (channel_row["topic"], channel_row["key"]) == (
        topics.CHANNEL_PREFERENCES,
        "u-carol/c-general",
    )
    assert models.ChannelPreference.model_validate_json(channel_row["value"]).level == "none"
    assert channel_row["headers"]["ce_type"] == "io.notify.ChannelPreference"
    assert channel_row["headers"]["ce_source"] == "/notify/inbox"
    assert channel_row["headers"][envelope.CORRELATION_HEADER] == "req-1"
    assert channel_row["published_at"] is None

    assert (user_row["topic"], user_row["key"]) == (topics.USER_PREFERENCES, "u-carol")
    event = models.UserPreferences.model_validate_json(user_row["value"])
    assert event.model_dump(mode="json") == {"user_id": "u-carol", **NIGHT_OWL}
    assert user_row["headers"]["ce_type"] == "io.notify.UserPreferences"
    assert user_row["headers"][envelope.CORRELATION_HEADER] == "req-2"


# --- the relay, against the real broker ------------------------------------------------


@pytest.fixture
def client(settings, engine) -> Iterator[TestClient]:
    """The API on the test's database and topics; relays are started by the tests."""
    api_only = settings.model_copy(
        update={"inbox_relay_enabled": False, "inbox_consumer_enabled": False}
    )
    with TestClient(build_app(api_only, engine=engine)) as c:
        yield c


@pytest.fixture
def start_relay(settings, engine):
    """Start an OutboxRelay in a thread; returns a function that stops it."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start():
        relay = OutboxRelay(settings=settings, engine=engine, lock_retry_s=0.1)
        stop = threading.Event()
        thread = threading.Thread(target=relay.run, args=(stop,), name="test-relay")
        thread.start()
        running.append((stop, thread))

        def halt() -> None:
            stop.set()
            thread.join(15)
            assert not thread.is_alive(), "the relay did not stop"

        return relay, halt

    yield start
    for stop, thread in running:
        stop.set()
        thread.join(15)


def published(msg) -> tuple[str, str]:
    """(key, level or push flag) of a published preference event, as the fanout reads it."""
    headers = envelope.decode_headers(msg.headers())
    assert not envelope.missing_ce_attributes(headers)
    if headers["ce_type"] == "io.notify.ChannelPreference":
        return msg.key().decode(), models.ChannelPreference.model_validate_json(msg.value()).level
    event = models.UserPreferences.model_validate_json(msg.value())
    return msg.key().decode(), f"push={event.channels.push}"


def test_relay_publishes_changes_with_their_keys_in_order(client, auth, start_relay, read_topic):
    start_relay()
    carol = auth("u-carol")
    for level in ("mentions", "none", "all", "mentions"):
        assert (
            client.put(
                "/v1/channels/c-general/preference", json={"level": level}, headers=carol
            ).status_code
            == 200
        )
    client.put("/v1/channels/c-random/preference", json={"level": "none"}, headers=carol)
    client.put("/v1/preferences", json={"channels": {"push": False}}, headers=carol)
    client.put("/v1/preferences", json={"channels": {"push": True}}, headers=carol)
    client.put("/v1/preferences", json={}, headers=auth("u-dave"))

    channel = [published(m) for m in read_topic(topics.CHANNEL_PREFERENCES, 5, settle=0.3)]
    assert [level for key, level in channel if key == "u-carol/c-general"] == [
        "mentions",
        "none",
        "all",
        "mentions",
    ]
    assert ("u-carol/c-random", "none") in channel
    assert len(channel) == 5

    users = [published(m) for m in read_topic(topics.USER_PREFERENCES, 3, settle=0.3)]
    assert [flag for key, flag in users if key == "u-carol"] == ["push=False", "push=True"]
    assert ("u-dave", "push=True") in users
    assert len(users) == 3


def test_rows_written_while_no_relay_runs_are_published_after_a_restart(
    client, auth, start_relay, read_topic, engine, wait_until
):
    carol = auth("u-carol")
    _, stop = start_relay()
    client.put("/v1/channels/c-general/preference", json={"level": "mentions"}, headers=carol)
    wait_until(lambda: all(r["published_at"] for r in outbox_rows(engine)), what="published")
    stop()

    client.put("/v1/channels/c-general/preference", json={"level": "none"}, headers=carol)
    client.put("/v1/channels/c-other/preference", json={"level": "none"}, headers=carol)
    assert [r["published_at"] for r in outbox_rows(engine)][1:] == [None, None]

    start_relay()
    messages = read_topic(topics.CHANNEL_PREFERENCES, 3, settle=0.3)
    assert [published(m) for m in messages if m.key() == b"u-carol/c-general"] == [
        ("u-carol/c-general", "mentions"),
        ("u-carol/c-general", "none"),
    ]
    assert len(messages) == 3
    wait_until(lambda: all(r["published_at"] for r in outbox_rows(engine)), what="all marked")


def test_one_relay_publishes_at_a_time_and_another_takes_over(
    client, auth, start_relay, read_topic, engine, wait_until
):
    first, _ = start_relay()
    second, _ = start_relay()
    wait_until(lambda: first.is_publisher or second.is_publisher, what="a publisher")
    assert not (first.is_publisher and second.is_publisher)

    carol = auth("u-carol")
    levels = ["all", "mentions", "none"] * 4
    for level in levels[:6]:
        client.put("/v1/channels/c-general/preference", json={"level": level}, headers=carol)
    wait_until(lambda: all(r["published_at"] for r in outbox_rows(engine)), what="published")

    # The publisher loses its database session (a failover, a killed backend): the lock goes
    # with it, and whichever relay takes it next carries on where the first stopped.
    with engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND objid = :low AND granted"
            ),
            {"low": LOCK_KEY & 0xFFFFFFFF},
        ).all()
    assert len(killed) == 1
    for level in levels[6:]:
        client.put("/v1/channels/c-general/preference", json={"level": level}, headers=carol)

    messages = read_topic(topics.CHANNEL_PREFERENCES, len(levels), settle=0.5)
    assert [published(m)[1] for m in messages] == levels
    wait_until(lambda: first.is_publisher or second.is_publisher, what="a publisher again")
