"""The assembled inbox: background workers, readiness, errors, auth roles, OpenAPI."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from notify_common.auth import issue_user_token
from notify_common.testing.infra import free_port
from notify_inbox.app import build_app
from notify_inbox.deps import AdminUser
from notify_inbox.settings import InboxSettings
from notify_schemas import topics


@pytest.mark.integration
def test_the_app_feeds_notifications_and_publishes_preferences(
    settings, auth, publish, notification, read_topic, wait_until
):
    app = build_app(settings)
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        event = notification("u-carol")
        publish([event])

        def feed():
            return client.get("/v1/notifications", headers=auth("u-carol")).json()["items"]

        [item] = wait_until(feed, what="the notification in the feed")
        assert item["notification_id"] == str(event.notification_id)

        client.put(
            "/v1/channels/c-general/preference", json={"level": "none"}, headers=auth("u-carol")
        )
        [msg] = read_topic(topics.CHANNEL_PREFERENCES, 1)
        assert msg.key() == b"u-carol/c-general"

        exposed = client.get("/metrics").text
        assert "notify_inbox_persisted_total" in exposed
        assert "notify_outbox_published_total" in exposed
        workers = app.state.workers.threads
        assert {t.name for t in workers} == {
            "outbox-relay",
            "feed-consumer",
            "feed-consumer-priority",
            "dlq-consumer",
            "status-consumer",
            "suppression-retention",
        }
    # Leaving the app drained both workers.
    assert not any(t.is_alive() for t in workers)


def test_an_unreachable_database_makes_the_app_unready_and_answers_503():
    settings = InboxSettings(
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none",
        jwt_secret="test-secret-that-is-long-enough-for-hs256",
        inbox_consumer_enabled=False,
        inbox_relay_enabled=False,
    )
    with TestClient(build_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert "database unreachable" in resp.json()["problems"][0]
        resp = client.get(
            "/v1/notifications",
            headers={"Authorization": f"Bearer {issue_user_token(settings, 'u-carol')}"},
        )
        assert resp.status_code == 503
        assert resp.headers["Retry-After"]


@pytest.mark.integration
def test_bodies_over_the_limit_are_refused(api, auth):
    resp = api.put(
        "/v1/preferences",
        content=b'{"channels": {}, "pad": "' + b"x" * 20_000 + b'"}',
        headers={**auth("u-carol"), "Content-Type": "application/json"},
    )
    assert resp.status_code == 413


@pytest.mark.integration
def test_the_api_is_documented_under_v1_with_bearer_auth(api):
    spec = api.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/v1/notifications",
        "/v1/notifications/unread-count",
        "/v1/notifications/mark-all-read",
        "/v1/notifications/{notification_id}",
        "/v1/preferences",
        "/v1/channels/{channel_id}/preference",
        "/v1/push/public-key",
        "/v1/push/subscriptions",
        "/v1/push/subscriptions/{subscription_id}",
        "/v1/email/unsubscribe",
        "/v1/admin/dlq",
        "/v1/admin/dlq/stats",
        "/v1/admin/dlq/requeue",
        "/v1/admin/dlq/{entry_id}/requeue",
        "/v1/admin/messages/{message_id}",
        "/v1/admin/messages/{message_id}/suppressions",
        "/v1/admin/users/{user_id}/suppressions",
        "/v1/admin/stats",
    }
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_admin_routes_refuse_users_without_the_admin_role(db_settings_free, token_for):
    app = FastAPI()
    app.state.settings = db_settings_free

    @app.get("/admin-only")
    def admin_only(admin: AdminUser) -> dict[str, str]:
        return {"admin": admin.user_id}

    client = TestClient(app)
    assert client.get("/admin-only").status_code == 401
    user = {"Authorization": f"Bearer {token_for('u-carol')}"}
    assert client.get("/admin-only", headers=user).status_code == 403
    admin = {"Authorization": f"Bearer {token_for('u-root', admin=True)}"}
    assert client.get("/admin-only", headers=admin).json() == {"admin": "u-root"}


@pytest.fixture
def db_settings_free() -> InboxSettings:
    """Settings that never touch the database they name."""
    return InboxSettings(
        database_url="postgresql+psycopg://unused@127.0.0.1:1/unused",
        jwt_secret="test-secret-that-is-long-enough-for-hs256",
    )


@pytest.fixture
def token_for(db_settings_free):
    return lambda user_id, **kw: issue_user_token(db_settings_free, user_id, **kw)
