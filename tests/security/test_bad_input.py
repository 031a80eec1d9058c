"""Hostile and broken requests against ingest and the inbox, served by uvicorn as in
production: each gets a clear 4xx, and the service answers the next normal request."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from notify_common.auth import issue_user_token

from .conftest import SERVICE_TOKEN, inbox_settings

pytestmark = pytest.mark.integration

MESSAGE = {
    "message_id": "m-bad-input",
    "server_id": "s-1",
    "channel_id": "c-1",
    "sender_id": "u-1",
    "sender_name": "Alice",
    "content": "hello",
}
PREFERENCES = {"channels": {"in_app": True, "push": True, "email": False}}


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    ok: int
    max_body: int

    def request(self, client: httpx.Client, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return client.request(self.method, self.url + self.path, headers=headers, **kwargs)

    def assert_healthy(self, client: httpx.Client) -> None:
        """The service still works: a normal request succeeds after the bad one."""
        resp = self.request(client, json=self.body)
        assert resp.status_code == self.ok, resp.text
        assert client.get(self.url + "/healthz").status_code == 200


@pytest.fixture(params=["ingest", "inbox"])
def target(request: pytest.FixtureRequest, database_url: str) -> Iterator[Target]:
    if request.param == "ingest":
        url = request.getfixturevalue("ingest_url")
        yield Target(
            name="ingest",
            url=url,
            method="POST",
            path="/v1/messages",
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
            body=MESSAGE,
            ok=202,
            max_body=256 * 1024,
        )
    else:
        url = request.getfixturevalue("inbox_url")
        token = issue_user_token(inbox_settings(database_url), "u-alice")
        yield Target(
            name="inbox",
            url=url,
            method="PUT",
            path="/v1/preferences",
            headers={"Authorization": f"Bearer {token}"},
            body=PREFERENCES,
            ok=200,
            max_body=16 * 1024,
        )


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def test_an_oversized_body_is_413(target: Target, client: httpx.Client) -> None:
    big = b'{"content": "' + b"x" * (target.max_body + 1) + b'"}'
    resp = target.request(client, content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["limit_bytes"] == target.max_body
    target.assert_healthy(client)


def test_an_oversized_chunked_body_is_413(target: Target, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"content": "'
        for _ in range(target.max_body // 4096 + 2):
            yield b"x" * 4096
        yield b'"}'

    # A generator has no length: sent with Transfer-Encoding: chunked, no Content-Length.
    resp = target.request(client, content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    target.assert_healthy(client)


def raw_status(url: str, request: bytes) -> int:
    """Send bytes no well-behaved client would send; the status of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def test_a_content_length_that_lies_is_413(target: Target, client: httpx.Client) -> None:
    headers = "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
    request = (
        f"{target.method} {target.path} HTTP/1.1\r\nHost: test\r\n{headers}"
        "Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{}"
    ).encode()
    assert raw_status(target.url, request) == 413
    target.assert_healthy(client)


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_deeply_nested_json_is_a_4xx(target: Target, client: httpx.Client, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    for body in (nested, '{"content": ' + nested + "}"):
        raw = body.encode()
        assert len(raw) <= target.max_body  # refused for its shape, not its size
        resp = target.request(client, content=raw, headers={"content-type": "application/json"})
        assert resp.status_code in (400, 422), resp.text
    target.assert_healthy(client)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"content": "\xff\xfe broken"}',
        b"\xc3\x28",
        b'{"content": "\xed\xa0\x80"}',  # an encoded UTF-16 surrogate
        b"\xef\xbb\xbf" + b'{"content": 1}',  # a byte order mark
        b'{"content": "\\ud800"}',  # a lone surrogate escape
        b"\x00" * 64,
    ],
)
def test_invalid_utf8_and_garbage_are_a_4xx(
    target: Target, client: httpx.Client, raw: bytes
) -> None:
    resp = target.request(client, content=raw, headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text
    target.assert_healthy(client)


def test_a_wrong_content_type_is_a_4xx(target: Target, client: httpx.Client) -> None:
    resp = target.request(client, content=b"a=1&b=2", headers={"content-type": "text/plain"})
    assert 400 <= resp.status_code < 500, resp.text
    target.assert_healthy(client)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Junk": "x" * 100_000},
        {"Authorization": "Bearer " + "a" * 100_000},
        {f"X-Many-{i}": "y" * 64 for i in range(500)},
    ],
    ids=["one-100KB-header", "100KB-token", "500-headers"],
)
def test_huge_headers_are_431(
    target: Target, client: httpx.Client, headers: dict[str, str]
) -> None:
    try:
        resp = target.request(client, json=target.body, headers=headers)
    except httpx.RemoteProtocolError:
        pytest.fail("the server dropped the connection instead of answering")
    assert resp.status_code == 431, resp.text
    assert resp.json()["detail"] == "request headers too large"
    target.assert_healthy(client)


def test_a_large_but_allowed_header_is_handled(target: Target, client: httpx.Client) -> None:
    # Under the server's header limit, an absurd token or request id is still just wrong.
    resp = target.request(
        client, json=target.body, headers={"Authorization": "Bearer " + "a" * 8000}
    )
    assert resp.status_code == 401
    resp = target.request(client, json=target.body, headers={"X-Request-ID": "r" * 8000})
    assert resp.status_code == target.ok
    assert len(resp.headers["x-request-id"]) <= 128  # replaced, not echoed back
