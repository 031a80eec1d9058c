"""The notification center page: static HTML, JS and CSS (no build step), served at /app/.

Security: the page is served with a Content-Security-Policy that allows scripts only from
this origin (no inline script, no eval), so even a rendering bug cannot run injected code;
the script renders every text with textContent and follows action URLs only when they are
same-origin paths. The token arrives in the URL fragment (#token=…, never sent to a server),
is kept in sessionStorage and removed from the address bar.

`GET /app/dev-login` hands out a token for a demo user by redirecting to the page with it.
It exists only when NOTIFY_DEV_LOGIN=true (`make dev` sets it); otherwise it answers 404.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel

from notify_common.auth import issue_user_token
from notify_common.settings import CommonSettings
from notify_inbox.settings import InboxSettings
from notify_schemas.models import Id

STATIC = Path(__file__).parent / "static"
_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "bell.svg": "image/svg+xml",
}
# A dev token lives long enough for a demo session, not for days.
_DEV_TOKEN_TTL_S = 8 * 3600


class WebAppSettings(CommonSettings):
    # Where browsers reach the realtime service (its public URL, not a cluster-internal one).
    realtime_public_url: str = "http://127.0.0.1:8002"
    # The dev-only sign-in shortcut; never enable it where real users are.
    dev_login: bool = False
    dev_login_user: str = "demo-user"


class PageConfig(BaseModel):
    realtime_url: str
    dev_login: bool


def install(app: FastAPI, settings: WebAppSettings | None = None) -> None:
    """Serve the page from `app` (settings from the environment unless given)."""
    app.state.web_settings = settings or WebAppSettings()
    app.include_router(router)


def _settings(request: Request) -> WebAppSettings:
    return request.app.state.web_settings


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@cache
def _csp(realtime_url: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self' {_origin(realtime_url)}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _security_headers(settings: WebAppSettings) -> dict[str, str]:
    return {
        "Content-Security-Policy": _csp(settings.realtime_public_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


router = APIRouter(include_in_schema=False)


@router.get("/app")
def app_redirect() -> RedirectResponse:
    return RedirectResponse("/app/", status_code=308)


@router.get("/app/")
def page(request: Request) -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html; charset=utf-8",
        headers=_security_headers(_settings(request)),
    )


@router.get("/app/static/{name}")
def static_file(name: str, request: Request) -> FileResponse:
    media_type = _FILES.get(name)
    if media_type is None:  # only the page's own files, never a path into the package
        raise HTTPException(404, "not found")
    return FileResponse(
        STATIC / name, media_type=media_type, headers=_security_headers(_settings(request))
    )


_PUSH_FILES = {
    "push.js": "text/javascript; charset=utf-8",
    "icon-192.png": "image/png",
    "badge-72.png": "image/png",
}


@router.get("/app/sw.js")
def service_worker(request: Request) -> FileResponse:
    """The Web Push service worker, at the page's scope (/app/)."""
    return FileResponse(
        STATIC / "push" / "sw.js",
        media_type="text/javascript; charset=utf-8",
        headers={**_security_headers(_settings(request)), "Service-Worker-Allowed": "/app/"},
    )


@router.get("/app/push/{name}")
def push_file(name: str, request: Request) -> FileResponse:
    media_type = _PUSH_FILES.get(name)
    if media_type is None:
        raise HTTPException(404, "not found")
    return FileResponse(
        STATIC / "push" / name, media_type=media_type, headers=_security_headers(_settings(request))
    )


@router.get("/app/config.json", response_model=PageConfig)
def page_config(request: Request) -> PageConfig:
    settings = _settings(request)
    return PageConfig(
        realtime_url=settings.realtime_public_url.rstrip("/"), dev_login=settings.dev_login
    )


@router.get("/app/dev-login")
def dev_login(
    request: Request,
    user_id: Annotated[Id | None, Query(description="default: the demo user")] = None,
) -> RedirectResponse:
    settings = _settings(request)
    if not settings.dev_login:
        raise HTTPException(404, "not found")
    auth: InboxSettings = request.app.state.settings
    token = issue_user_token(auth, user_id or settings.dev_login_user, ttl_s=_DEV_TOKEN_TTL_S)
    return RedirectResponse(
        f"/app/#token={token}", status_code=303, headers={"Cache-Control": "no-store"}
    )
