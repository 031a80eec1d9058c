"""The notification center page: served with a strict CSP, its config, the dev sign-in."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from notify_common.auth import verify_user_token
from notify_inbox.app import build_app
from notify_inbox.settings import InboxSettings
from notify_inbox.webapp import WebAppSettings

REALTIME = "http://rt.example:8002"


@pytest.fixture
def db_settings_free() -> InboxSettings:
    """Settings that never touch the database they name (the page needs none)."""
    return InboxSettings(
        database_url="postgresql+psycopg://unused@127.0.0.1:1/unused",
        jwt_secret="test-secret-that-is-long-enough-for-hs256",
        inbox_consumer_enabled=False,
        inbox_relay_enabled=False,
    )


@pytest.fixture
def page_client(db_settings_free):
    def make(**web) -> TestClient:
        app = build_app(db_settings_free)
        app.state.web_settings = WebAppSettings(realtime_public_url=REALTIME, **web)
        return TestClient(app)

    return make


def test_the_page_and_its_files_forbid_inline_scripts(page_client):
    client = page_client()
    for path, kind in [
        ("/app/", "text/html"),
        ("/app/static/app.js", "text/javascript"),
        ("/app/static/app.css", "text/css"),
        ("/app/sw.js", "text/javascript"),
        ("/app/push/push.js", "text/javascript"),
        ("/app/push/icon-192.png", "image/png"),
    ]:
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"].startswith(kind)
        csp = dict(
            d.strip().split(" ", 1) for d in resp.headers["content-security-policy"].split(";")
        )
        assert csp["script-src"] == "'self'"
        assert csp["default-src"] == "'none'"
        assert csp["connect-src"] == f"'self' {REALTIME}"
        assert resp.headers["x-content-type-options"] == "nosniff"
    html = client.get("/app/").text
    assert '<script src="/app/static/app.js"' in html
    assert '<script src="/app/push/push.js"' in html
    # The service worker may control the page's whole scope.
    assert client.get("/app/sw.js").headers["service-worker-allowed"] == "/app/"
    assert "<script>" not in html and "onclick" not in html


def test_only_the_pages_own_files_are_served(page_client):
    client = page_client()
    for path in (
        "/app/static/webapp.py",
        "/app/static/..%2Fwebapp.py",
        "/app/static/index.html2",
        "/app/push/sw.js.bak",
        "/app/push/..%2F..%2Fwebapp.py",
    ):
        assert client.get(path).status_code == 404


def test_the_page_learns_where_the_stream_is(page_client):
    assert page_client().get("/app/config.json").json() == {
        "realtime_url": REALTIME,
        "dev_login": False,
    }


def test_dev_login_exists_only_when_enabled(page_client, db_settings_free):
    assert page_client().get("/app/dev-login", follow_redirects=False).status_code == 404
    client = page_client(dev_login=True, dev_login_user="demo-user")
    resp = client.get("/app/dev-login", follow_redirects=False)
    assert resp.status_code == 303
    location = resp.headers["location"]
    assert location.startswith("/app/#token=")
    assert verify_user_token(db_settings_free, location.split("=", 1)[1]).user_id == "demo-user"
    other = client.get("/app/dev-login?user_id=u-2", follow_redirects=False).headers["location"]
    assert verify_user_token(db_settings_free, other.split("=", 1)[1]).user_id == "u-2"
    assert client.get("/app/dev-login?user_id=a/b", follow_redirects=False).status_code == 422
