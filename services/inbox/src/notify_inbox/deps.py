"""FastAPI dependencies of the inbox (STYLE.md habit 7)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from notify_common.auth import AuthError, Principal, verify_user_token
from notify_common.ratelimit import RateLimiter, user_key
from notify_inbox.settings import InboxSettings

# auto_error=False: a missing header must answer 401 with WWW-Authenticate like an invalid
# token does; the scheme object still documents bearer auth in the OpenAPI schema.
_bearer = HTTPBearer(auto_error=False, description="A user JWT (sub = user id)")


def get_settings(request: Request) -> InboxSettings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


SettingsDep = Annotated[InboxSettings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]


def get_session(engine: EngineDep) -> Iterator[Session]:
    """A session per request. Service functions commit what they write themselves, so a
    response is never sent for a change that was not committed; whatever is left
    uncommitted is rolled back on close."""
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


_UNLIMITED = RateLimiter(None, service="inbox", limit=0)


def get_rate_limiter(request: Request) -> RateLimiter:
    # build_app always sets one; an app assembled without it (a test's) is not limited.
    limiter: RateLimiter = getattr(request.app.state, "rate_limiter", _UNLIMITED)
    return limiter


def current_user(
    settings: SettingsDep,
    limiter: Annotated[RateLimiter, Depends(get_rate_limiter)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller, within their request budget (401, or 429 with Retry-After).

    A sync dependency, so FastAPI runs it in a worker thread: the rate-limit check is a
    database round trip."""
    if credentials is None:
        raise _unauthorized("a user token is required (Authorization: Bearer <token>)")
    try:
        principal = verify_user_token(settings, credentials.credentials)
    except AuthError as exc:
        raise _unauthorized(str(exc)) from None
    limiter.enforce(user_key(principal.user_id))
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise HTTPException(status_code=403, detail="the admin role is required")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]
