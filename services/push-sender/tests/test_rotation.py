"""VAPID key rotation as docs/push.md describes it: while the old private key is listed in
NOTIFY_VAPID_PREVIOUS_PRIVATE_KEYS, subscriptions made with the old public key keep
receiving pushes signed with the old key, new ones are signed with the new key; once the
old key is dropped, an old subscription is deactivated on its next push."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from notify_common.webpush import generate_vapid_private_key
from notify_push_sender.app import build_app
from notify_push_sender.testing import PushReceiver

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

OLD = generate_vapid_private_key()


@pytest.fixture
def fast_env(vapid_pair: tuple[str, str]) -> dict[str, str]:
    from .conftest import fast_settings

    # Step 1 of the rotation: the new pair in force, the old private key kept as previous.
    return {**fast_settings(vapid_pair), "NOTIFY_VAPID_PREVIOUS_PRIVATE_KEYS": OLD[0]}


@pytest.fixture
def sender(settings, engine) -> Iterator[TestClient]:
    with TestClient(build_app(settings, engine=engine)) as client:
        yield client


def signing_key(receiver: PushReceiver, token: str) -> str:
    [push] = receiver.delivered(token)
    assert push.vapid_error is None, push.vapid_error
    header = push.headers["Authorization"]
    params = dict(p.strip().split("=", 1) for p in header.partition(" ")[2].split(","))
    return params["k"]


def test_during_a_rotation_each_subscription_is_signed_with_its_own_key(
    sender,
    receiver,
    add_subscription,
    notification,
    publish,
    deliveries,
    vapid_pair,
):
    old_sub = receiver.subscribe("made-with-old-key")
    new_sub = receiver.subscribe("made-with-new-key")
    add_subscription("u-old", old_sub, application_server_key=OLD[1])
    add_subscription("u-new", new_sub, application_server_key=vapid_pair[1])
    to_old, to_new = notification("u-old"), notification("u-new")
    publish([to_old, to_new])
    assert [d.outcome for d in deliveries(2)] == ["sent", "sent"]
    assert signing_key(receiver, "made-with-old-key") == OLD[1]
    assert signing_key(receiver, "made-with-new-key") == vapid_pair[1]
    # Both decrypt: the payload encryption does not depend on the VAPID key.
    assert receiver.delivered("made-with-old-key")[0].message is not None
