"""FastAPI dependencies of the inbox (STYLE.md habit 7)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from notify_common.auth import AuthError, Principal, verify_user_token
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


def current_user(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("a user token is required (Authorization: Bearer <token>)")
    try:
        return verify_user_token(settings, credentials.credentials)
    except AuthError as exc:
        raise _unauthorized(str(exc)) from None


CurrentUser = Annotated[Principal, Depends(current_user)]


def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise HTTPException(status_code=403, detail="the admin role is required")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]
