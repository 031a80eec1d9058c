"""Web Push subscriptions: the application server key for PushManager.subscribe, and the
user's subscriptions (save, list, delete). push-sender reads them to deliver.

A subscription is the browser's PushSubscription JSON. It is refused (422, naming the
field) unless its endpoint passes the endpoint policy (https, a DNS name resolving only to
public addresses, the optional allowlist: notify_common.webpush) and its keys are usable
(p256dh an uncompressed P-256 point, auth 16 bytes). Saving an endpoint that is already
stored updates it; when another user saves it (they signed in on that browser) it is
replaced by a new subscription, so pushes queued for the previous user never reach them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from notify_common import metrics, webpush
from notify_common.db.models import PushSubscriptionRow
from notify_inbox.deps import CurrentUser, SessionDep, SettingsDep
from notify_inbox.settings import InboxSettings

router = APIRouter(tags=["push"])


class PushKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    auth: Annotated[str, StringConstraints(min_length=1, max_length=64)]

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        webpush.parse_p256_point(value)
        return value.strip()

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        webpush.parse_auth_secret(value)
        return value.strip()


class DeviceInfo(BaseModel):
    """What the user may want to recognise the browser by (all optional, shown back)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(max_length=100)] | None = None
    user_agent: Annotated[str, StringConstraints(max_length=512)] | None = None
    platform: Annotated[str, StringConstraints(max_length=64)] | None = None


class SubscriptionIn(BaseModel):
    """PushSubscription.toJSON(), plus optional device information."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Annotated[str, StringConstraints(min_length=1, max_length=webpush.MAX_ENDPOINT_CHARS)]
    # Milliseconds since the epoch when the push service will expire it, if it says.
    expirationTime: int | None = Field(default=None, ge=0, le=10**15)
    keys: PushKeys
    device: DeviceInfo | None = None


class SubscriptionOut(BaseModel):
    id: uuid.UUID
    endpoint: str
    origin: str
    device: dict[str, Any] | None
    expiration_time: datetime | None
    is_active: bool
    failure_count: int
    last_active: datetime | None
    deactivated_reason: str | None
    created_at: datetime
    updated_at: datetime


class SubscriptionList(BaseModel):
    items: list[SubscriptionOut]


class PublicKey(BaseModel):
    public_key: str = Field(description="base64url; pass as applicationServerKey")


subscriptions = cast(Table, PushSubscriptionRow.__table__)
_c = subscriptions.c
_COLUMNS = (
    _c.id,
    _c.endpoint,
    _c.origin,
    _c.device_info,
    _c.expiration_time,
    _c.is_active,
    _c.failure_count,
    _c.last_active,
    _c.deactivated_reason,
    _c.created_at,
    _c.updated_at,
)


def _out(row: Any) -> SubscriptionOut:
    return SubscriptionOut(
        id=row.id,
        endpoint=row.endpoint,
        origin=row.origin,
        device=row.device_info,
        expiration_time=row.expiration_time,
        is_active=row.is_active,
        failure_count=row.failure_count,
        last_active=row.last_active,
        deactivated_reason=row.deactivated_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _unprocessable(field: str, message: str) -> HTTPException:
    # The same shape as FastAPI's own validation errors, so clients handle one format.
    return HTTPException(
        422, detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}]
    )


class CapReached(Exception):
    pass


def save_subscription(
    *, session: Session, settings: InboxSettings, user_id: str, body: SubscriptionIn
) -> tuple[SubscriptionOut, bool]:
    """Store the subscription (created, or updated when the endpoint is known); commits.

    Returns (subscription, created). Raises webpush.EndpointRejected or CapReached."""
    origin = settings.endpoint_policy().check_endpoint(body.endpoint)
    expiration = (
        datetime.fromtimestamp(body.expirationTime / 1000, UTC)
        if body.expirationTime is not None
        else None
    )
    device = body.device.model_dump(exclude_none=True) if body.device else None
    values = {
        "user_id": user_id,
        "origin": origin,
        "p256dh": body.keys.p256dh,
        "auth": body.keys.auth,
        "application_server_key": settings.vapid_public_key,
        "device_info": device,
        "expiration_time": expiration,
    }
    # Serialise saves of one endpoint, then of one user (always in that order, so two saves
    # never wait for each other in a cycle): the cap check and the upsert see settled state.
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:e, 0))"), {"e": body.endpoint}
    )
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:u, 1))"), {"u": user_id})
    existing = session.execute(
        select(_c.id, _c.user_id).where(_c.endpoint == body.endpoint)
    ).one_or_none()
    if existing is not None and existing.user_id != user_id:
        # Another user signed in on this browser: their queued pushes go with the old row.
        session.execute(delete(subscriptions).where(_c.id == existing.id))
        existing = None
    if existing is None:
        active = session.execute(
            select(func.count()).where(_c.user_id == user_id, _c.is_active)
        ).scalar_one()
        if active >= settings.push_max_subscriptions_per_user:
            session.rollback()
            raise CapReached()
        # Inactive subscriptions of this user are dead weight once a new one arrives.
        session.execute(delete(subscriptions).where(_c.user_id == user_id, ~_c.is_active))
        row = session.execute(
            insert(subscriptions)
            .values(id=uuid.uuid4(), endpoint=body.endpoint, **values)
            .returning(*_COLUMNS)
        ).one()
        created = True
    else:
        # Re-subscribing (new keys, or the browser renewed it): same row, fresh health.
        row = session.execute(
            update(subscriptions)
            .where(_c.id == existing.id)
            .values(
                **values,
                is_active=True,
                failure_count=0,
                deactivated_reason=None,
                updated_at=func.now(),
            )
            .returning(*_COLUMNS)
        ).one()
        created = False
    session.commit()
    return _out(row), created


def list_subscriptions(*, session: Session, user_id: str) -> list[SubscriptionOut]:
    rows = session.execute(
        select(*_COLUMNS).where(_c.user_id == user_id).order_by(_c.created_at, _c.id)
    ).all()
    return [_out(r) for r in rows]


def delete_subscription(*, session: Session, user_id: str, subscription_id: uuid.UUID) -> bool:
    """Delete the user's subscription (its queued pushes go with it); commits."""
    result = session.execute(
        delete(subscriptions).where(_c.id == subscription_id, _c.user_id == user_id)
    )
    session.commit()
    return bool(getattr(result, "rowcount", 0))


@router.get("/push/public-key", response_model=PublicKey)
def public_key(settings: SettingsDep, response: Response) -> PublicKey:
    """The VAPID application server key (public; no token needed). 404 while Web Push is
    not configured on this server, which the page treats as "push unavailable"."""
    if not settings.vapid_public_key:
        raise HTTPException(404, detail="Web Push is not enabled on this server")
    response.headers["Cache-Control"] = "public, max-age=300"
    return PublicKey(public_key=settings.vapid_public_key)


@router.post(
    "/push/subscriptions",
    response_model=SubscriptionOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "the endpoint was already stored and is updated"}},
)
def create_subscription(
    body: SubscriptionIn,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> SubscriptionOut:
    """Save the browser's subscription for the caller (201; 200 when it updated one)."""
    try:
        saved, created = save_subscription(
            session=session, settings=settings, user_id=user.user_id, body=body
        )
    except webpush.EndpointRejected as exc:
        metrics.PUSH_SUBSCRIPTION_SAVES.labels(result="rejected").inc()
        metrics.PUSH_ENDPOINT_REFUSED.labels(at="save").inc()
        raise _unprocessable("endpoint", f"endpoint {exc}") from None
    except CapReached:
        metrics.PUSH_SUBSCRIPTION_SAVES.labels(result="rejected").inc()
        raise HTTPException(
            409,
            detail=f"at most {settings.push_max_subscriptions_per_user} active push"
            " subscriptions per user; delete one first",
        ) from None
    metrics.PUSH_SUBSCRIPTION_SAVES.labels(result="created" if created else "updated").inc()
    if not created:
        response.status_code = status.HTTP_200_OK
    return saved


@router.get("/push/subscriptions", response_model=SubscriptionList)
def read_subscriptions(user: CurrentUser, session: SessionDep) -> SubscriptionList:
    """The caller's subscriptions, with their health (active, failures, last success)."""
    return SubscriptionList(items=list_subscriptions(session=session, user_id=user.user_id))


@router.delete("/push/subscriptions/{subscription_id}", status_code=204)
def remove_subscription(
    subscription_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> Response:
    """Delete one of the caller's subscriptions (404 for anyone else's)."""
    if not delete_subscription(
        session=session, user_id=user.user_id, subscription_id=subscription_id
    ):
        raise HTTPException(404, detail="no such subscription")
    return Response(status_code=204)
