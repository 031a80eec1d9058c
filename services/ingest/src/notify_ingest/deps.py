"""FastAPI dependencies of ingest (STYLE.md habit 7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from notify_common import metrics
from notify_common.auth import bearer, check_service_token
from notify_common.kafka.producer import EventProducer
from notify_common.ratelimit import RateLimiter, service_key, too_many_requests
from notify_ingest.settings import IngestSettings

ALL_SCOPES = frozenset({"messages", "announcements", "directory"})


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]


def parse_tokens(raw: str) -> dict[str, Caller]:
    """{token: Caller} from "name:token[:scope+scope],…"."""
    tokens: dict[str, Caller] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        pieces = part.split(":")
        if len(pieces) not in (2, 3) or not pieces[0] or not pieces[1]:
            raise ValueError("NOTIFY_SERVICE_TOKENS entries look like name:token[:scope+scope]")
        scopes = frozenset(pieces[2].split("+")) if len(pieces) == 3 else ALL_SCOPES
        unknown = scopes - ALL_SCOPES
        if unknown:
            raise ValueError(f"unknown scopes in NOTIFY_SERVICE_TOKENS: {sorted(unknown)}")
        tokens[pieces[1]] = Caller(name=pieces[0], scopes=scopes)
    if not tokens:
        raise ValueError("NOTIFY_SERVICE_TOKENS holds no token")
    return tokens


def get_settings(request: Request) -> IngestSettings:
    return request.app.state.settings


def get_producer(request: Request) -> EventProducer:
    return request.app.state.producer


def _caller(request: Request) -> Caller:
    """The authenticated service, within its request budget (401, or 429 with Retry-After).

    Sync, so FastAPI runs it in a worker thread: the rate-limit check is a database round
    trip."""
    tokens: dict[str, Caller] = request.app.state.tokens
    presented = bearer(request.headers.get("authorization"))
    name = check_service_token({t: c.name for t, c in tokens.items()}, presented or "")
    if presented is None or name is None:
        metrics.INGEST_REJECTED.labels(reason="auth").inc()
        raise HTTPException(
            status_code=401,
            detail="a valid service token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = tokens[presented]
    limiter: RateLimiter = request.app.state.rate_limiter
    # Keyed by the service's name, never its token: the counter table holds no secret, and
    # a service's old and new token share one budget while it rotates them.
    decision = limiter.hit(service_key(caller.name))
    if not decision.allowed:
        metrics.INGEST_REJECTED.labels(reason="rate_limited").inc()
        raise too_many_requests(decision)
    return caller


def require(scope: str):
    def dependency(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
        if scope not in caller.scopes:
            metrics.INGEST_REJECTED.labels(reason="forbidden").inc()
            raise HTTPException(
                status_code=403, detail=f"service token '{caller.name}' lacks scope '{scope}'"
            )
        return caller

    return dependency


SettingsDep = Annotated[IngestSettings, Depends(get_settings)]
ProducerDep = Annotated[EventProducer, Depends(get_producer)]
MessagesCaller = Annotated[Caller, Depends(require("messages"))]
AnnouncementsCaller = Annotated[Caller, Depends(require("announcements"))]
DirectoryCaller = Annotated[Caller, Depends(require("directory"))]
