"""The HTTP surface every service shares: health, readiness, metrics, body limit, request ids."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from notify_common.http import CORRELATION_HEADER, create_app

LIMIT = 1024


class Note(BaseModel):
    text: str


def make_app(*, problem: list[str | None] | None = None, service: str = "test") -> FastAPI:
    state = problem if problem is not None else [None]

    async def dependency_check() -> str | None:
        return state[0]

    app = create_app(
        service=service,
        title="test",
        readiness=[dependency_check],
        max_body_bytes=LIMIT,
    )

    @app.get("/v1/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        return {"item_id": item_id}

    @app.post("/v1/notes", status_code=202)
    async def post_note(note: Note) -> dict[str, int]:
        return {"length": len(note.text)}

    return app


def test_healthz_is_ok() -> None:
    with TestClient(make_app()) as client:
        r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz_reports_the_problem_with_503_then_200_once_fixed() -> None:
    problem: list[str | None] = ["postgres unreachable: connection refused"]
    with TestClient(make_app(problem=problem)) as client:
        down = client.get("/readyz")
        problem[0] = None
        up = client.get("/readyz")

    assert down.status_code == 503
    assert "postgres unreachable: connection refused" in down.text
    assert up.status_code == 200


def test_metrics_count_requests_by_route_template_not_raw_path() -> None:
    # A unique service label keeps the assertions independent of other tests' requests.
    service = f"svc-{uuid.uuid4().hex[:8]}"
    with TestClient(make_app(service=service)) as client:
        for item in ("a1", "b2", "c3"):
            assert client.get(f"/v1/items/{item}").status_code == 200
        assert client.get("/nowhere/at/all").status_code == 404
        r = client.get("/metrics")

    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE notify_http_requests_total counter" in text
    service_lines = [
        line
        for line in text.splitlines()
        if line.startswith("notify_http_requests_total{") and f'service="{service}"' in line
    ]
    mine = [
        line
        for line in service_lines
        if 'route="/v1/items/{item_id}"' in line and 'status="2xx"' in line
    ]
    assert mine, text
    assert any(line.endswith(" 3.0") for line in mine), mine
    # Raw paths would give every id its own time series.
    # (Match the route label itself: the random service label may contain "a1".)
    assert not any(
        'route="/v1/items/a1"' in line or 'route="/nowhere' in line for line in service_lines
    )
    assert any('route="unmatched"' in line and 'status="4xx"' in line for line in service_lines)


def test_body_over_limit_with_content_length_is_413() -> None:
    with TestClient(make_app()) as client:
        r = client.post(
            "/v1/notes",
            content=b'{"text":"' + b"x" * (LIMIT * 2) + b'"}',
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 413
    assert r.json()["limit_bytes"] == LIMIT


def test_body_over_limit_when_chunked_is_413() -> None:
    def chunks():
        yield b'{"text":"'
        for _ in range(4):
            yield b"x" * (LIMIT // 2)
        yield b'"}'

    with TestClient(make_app()) as client:
        r = client.post("/v1/notes", content=chunks(), headers={"content-type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert r.status_code == 413


@pytest.mark.parametrize("chunked", [False, True])
def test_body_under_limit_is_accepted(chunked: bool) -> None:
    body = b'{"text":"' + b"x" * (LIMIT // 2) + b'"}'
    content = iter([body[:10], body[10:]]) if chunked else body
    with TestClient(make_app()) as client:
        r = client.post("/v1/notes", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text
    assert r.json() == {"length": LIMIT // 2}


def test_request_id_is_echoed_back() -> None:
    with TestClient(make_app()) as client:
        r = client.get("/v1/items/a1", headers={CORRELATION_HEADER: "req-123"})
        generated = client.get("/v1/items/a1")

    assert r.headers[CORRELATION_HEADER] == "req-123"
    # Without one, the service makes one up so the caller can still quote it.
    assert generated.headers.get(CORRELATION_HEADER)
    assert generated.headers[CORRELATION_HEADER] != "req-123"


def test_headers_over_the_limit_are_431_and_the_app_keeps_serving() -> None:
    client = TestClient(make_app())
    resp = client.get("/v1/items/a", headers={"X-Junk": "x" * 20_000})
    assert resp.status_code == 431
    assert resp.json() == {"detail": "request headers too large", "limit_bytes": 16 * 1024}
    assert resp.headers[CORRELATION_HEADER]  # counted and traced like any response
    many = {f"X-H{i}": "y" * 40 for i in range(400)}
    assert client.get("/v1/items/a", headers=many).status_code == 431
    assert client.get("/v1/items/" + "p" * 17_000).status_code == 431
    assert client.get("/v1/items/a", headers={"X-Fine": "x" * 8_000}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": "\\ud800"}',  # a lone surrogate, escaped
        b'{"text": "\xed\xa0\x80"}',  # a surrogate encoded as (invalid) UTF-8
        b'\xef\xbb\xbf{"text": "a"}',  # a byte order mark
        b'{"text": "a", "n": NaN}',
    ],
)
def test_json_only_pythons_parser_accepts_is_400(body: bytes) -> None:
    # json.loads takes these and pydantic passes the strings on, to fail where text must be
    # UTF-8 (the database, the response) as a 500.
    client = TestClient(make_app())
    resp = client.post("/v1/notes", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["detail"] == "malformed JSON body"
    assert client.post("/v1/notes", json={"text": "ok"}).status_code == 202


def test_malformed_json_is_still_the_apps_to_report() -> None:
    client = TestClient(make_app())
    resp = client.post(
        "/v1/notes", content=b'{"text": ', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422  # FastAPI's own answer, unchanged
