"""The upstream-facing API: validate, publish, answer only once the broker confirmed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, create_engine

from notify_common import logging as log
from notify_common import metrics
from notify_common.db.engine import normalize_url
from notify_common.http import create_app
from notify_common.kafka.config import client_config
from notify_common.kafka.producer import EventProducer, PublishError
from notify_common.ratelimit import RateLimiter
from notify_ingest import schedule
from notify_ingest.deps import (
    AnnouncementsCaller,
    DirectoryCaller,
    MessagesCaller,
    ProducerDep,
    SettingsDep,
    parse_tokens,
)
from notify_ingest.ids import announcement_event_id, message_event_id
from notify_ingest.settings import IngestSettings
from notify_schemas import envelope, models, topics
from notify_schemas.models import Id

logger = log.get(__name__)
SOURCE = "/notify/ingest"

PathId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^/\s]+$")]


class Accepted(BaseModel):
    status: Literal["accepted", "scheduled"] = "accepted"
    event_id: str
    # For a scheduled announcement: when it will be released.
    send_at: datetime | None = None


class ScheduledOut(BaseModel):
    announcement_id: str
    state: Literal["scheduled", "released", "cancelled"]
    send_at: datetime
    released_at: datetime | None = None
    cancelled_at: datetime | None = None


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Rejected(BaseModel):
    """Why a request was refused; `errors` names the offending fields, when there are any."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)


# ingest answers 400 and 422 in its own shape (see `invalid` below), not FastAPI's default.
REJECTED: dict[int | str, dict[str, Any]] = {
    400: {"model": Rejected, "description": "the body is not JSON"},
    422: {"model": Rejected, "description": "the event is invalid; errors name the fields"},
}


class MessageIn(models.MessageCreated):
    """MessageCreated as posted; created_at defaults to the time of receipt."""

    created_at: datetime = Field(default_factory=envelope.now)


class AnnouncementIn(models.AnnouncementRequested):
    """AnnouncementRequested as posted; the id is generated when absent."""

    announcement_id: Id = Field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = Field(default_factory=envelope.now)


class UserIn(BaseModel):
    """A user's state; user_id comes from the path."""

    model_config = ConfigDict(extra="forbid")

    display_name: models.Name
    email: str | None = None
    locale: str = "en"
    timezone: str = "UTC"
    is_admin: bool = False
    entitled: bool = False
    channels: models.ChannelToggles = Field(default_factory=models.ChannelToggles)
    quiet_hours: models.QuietHours | None = None
    digest: models.DigestSettings = Field(default_factory=models.DigestSettings)


class MembershipIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = "member"
    active: bool = True
    server_name: models.Name | None = None


def build_app(
    settings: IngestSettings,
    producer: EventProducer | None = None,
    *,
    engine: Engine | None = None,
) -> FastAPI:
    tokens = parse_tokens(settings.service_tokens.get_secret_value())
    # The database only holds the rate-limit counters: not part of readiness, since the
    # limiter fails open and events go to Kafka whether it answers or not.
    db = engine
    if db is None and settings.database_url is not None:
        db = create_engine(
            normalize_url(settings.database_url.get_secret_value()),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            hide_parameters=True,
        )
    if db is None and settings.ingest_rate_limit_per_minute > 0:
        logger.warning("NOTIFY_DATABASE_URL is not set: service tokens are not rate limited")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.producer = producer or EventProducer(
            settings, **{"message.timeout.ms": int(settings.ingest_publish_timeout_s * 1000)}
        )
        app.state.producer.start()
        releaser = None
        if db is not None:
            releaser = schedule.Releaser(
                db, app.state.producer, settings, settings.ingest_schedule_poll_s
            )
            releaser.start()
        yield
        if releaser is not None:
            await asyncio.to_thread(releaser.stop)
        await asyncio.to_thread(app.state.producer.close)
        if engine is None and db is not None:
            db.dispose()

    async def broker_reachable() -> str | None:
        def probe() -> str | None:
            from confluent_kafka.admin import AdminClient

            try:
                AdminClient(client_config(settings)).list_topics(timeout=2)
                return None
            except Exception as exc:
                return f"kafka unreachable: {exc}"

        return await asyncio.to_thread(probe)

    app = create_app(
        service="ingest",
        title="Notify ingest",
        description="Upstream-facing API: messages, announcements and the user directory.",
        readiness=[broker_reachable],
        max_body_bytes=settings.ingest_max_body_bytes,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = tokens
    app.state.rate_limiter = RateLimiter(
        db, service="ingest", limit=settings.ingest_rate_limit_per_minute, window_s=60.0
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        malformed = any(e.get("type") == "json_invalid" for e in errors)
        metrics.INGEST_REJECTED.labels(reason="malformed" if malformed else "validation").inc()
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors
        ]
        if malformed:
            return JSONResponse({"detail": "malformed JSON body", "errors": detail}, 400)
        return JSONResponse({"detail": "invalid event", "errors": detail}, 422)

    async def publish(
        request: Request,
        producer: EventProducer,
        *,
        topic: str,
        key: str,
        event: BaseModel | None,
        ce_type: str,
        event_id: str | None = None,
    ) -> str:
        event_id = event_id or str(uuid.uuid4())
        correlation_id = getattr(request.state, "correlation_id", None)
        headers = envelope.ce_headers(
            ce_type=ce_type, source=SOURCE, event_id=event_id, correlation_id=correlation_id
        )
        value = None if event is None else envelope.encode(event, ce_type=ce_type, source=SOURCE)[0]
        try:
            await producer.publish(
                settings.topic(topic),
                key=key,
                value=value,
                headers=headers,
                timeout=settings.ingest_publish_timeout_s,
            )
        except PublishError as exc:
            metrics.INGEST_REJECTED.labels(reason="unavailable").inc()
            logger.warning("publish not confirmed", topic=topic, error=str(exc))
            raise HTTPException(
                status_code=503,
                detail="the event could not be confirmed by Kafka; retry later",
                headers={"Retry-After": "5"},
            ) from None
        logger.info("published", topic=topic, event_id=event_id)
        return event_id

    @app.post(
        "/v1/messages",
        status_code=202,
        response_model=Accepted,
        responses=REJECTED,
        tags=["events"],
    )
    async def post_message(
        body: MessageIn, request: Request, producer: ProducerDep, _c: MessagesCaller
    ) -> Accepted:
        """Publish MessageCreated. Idempotent on message_id."""
        event = models.MessageCreated.model_validate(body.model_dump())
        event_id = message_event_id(event.message_id)
        await publish(
            request,
            producer,
            topic=topics.MESSAGE_CREATED,
            key=event.server_id,
            event=event,
            ce_type="io.notify.MessageCreated",
            event_id=event_id,
        )
        metrics.INGEST_ACCEPTED.labels(kind="message").inc()
        return Accepted(event_id=event_id)

    @app.post(
        "/v1/announcements",
        status_code=202,
        response_model=Accepted,
        responses=REJECTED,
        tags=["events"],
    )
    async def post_announcement(
        body: AnnouncementIn, request: Request, producer: ProducerDep, _c: AnnouncementsCaller
    ) -> Accepted:
        """Publish AnnouncementRequested to a server or to explicit user ids.

        Idempotent on announcement_id."""
        event = models.AnnouncementRequested.model_validate(body.model_dump())
        event_id = announcement_event_id(event.announcement_id)
        if event.send_at is not None and event.send_at > envelope.now():
            # Held in PostgreSQL and released at send_at (schedule.py).
            held = await asyncio.to_thread(
                schedule.hold,
                scheduling_db(),
                event,
                key=event.server_id or "global",
                correlation_id=getattr(request.state, "correlation_id", None),
            )
            metrics.SCHEDULED_ANNOUNCEMENTS.labels(action="scheduled").inc()
            return Accepted(status="scheduled", event_id=event_id, send_at=held.send_at)
        await publish(
            request,
            producer,
            topic=topics.ANNOUNCEMENT_REQUESTED,
            key=event.server_id or "global",
            event=event,
            ce_type="io.notify.AnnouncementRequested",
            event_id=event_id,
        )
        metrics.INGEST_ACCEPTED.labels(kind="announcement").inc()
        return Accepted(event_id=event_id)

    def scheduling_db(*, lookup: bool = False) -> Engine:
        if db is None:
            if lookup:  # nothing can have been scheduled here
                raise HTTPException(404, "no scheduled announcement with this id")
            raise HTTPException(
                422,
                "scheduled announcements need a database: this ingest has no "
                "NOTIFY_DATABASE_URL (send without send_at, or configure one)",
            )
        return db

    def scheduled_out(found: schedule.Scheduled) -> ScheduledOut:
        return ScheduledOut(
            announcement_id=found.announcement_id,
            state=found.state,
            send_at=found.send_at,
            released_at=found.released_at,
            cancelled_at=found.cancelled_at,
        )

    @app.get(
        "/v1/announcements/{announcement_id}",
        response_model=ScheduledOut,
        responses={**REJECTED, 404: {"description": "no scheduled announcement with this id"}},
        tags=["events"],
    )
    async def get_scheduled_announcement(
        announcement_id: PathId, _c: AnnouncementsCaller
    ) -> ScheduledOut:
        """The state of a scheduled announcement: scheduled, released or cancelled."""
        found = await asyncio.to_thread(schedule.get, scheduling_db(lookup=True), announcement_id)
        if found is None:
            raise HTTPException(404, "no scheduled announcement with this id")
        return scheduled_out(found)

    @app.delete(
        "/v1/announcements/{announcement_id}",
        response_model=ScheduledOut,
        responses={
            **REJECTED,
            404: {"description": "no scheduled announcement with this id"},
            409: {"description": "already released: too late to cancel"},
        },
        tags=["events"],
    )
    async def cancel_scheduled_announcement(
        announcement_id: PathId, _c: AnnouncementsCaller
    ) -> ScheduledOut:
        """Cancel a scheduled announcement before its send_at (idempotent)."""
        found = await asyncio.to_thread(
            schedule.cancel, scheduling_db(lookup=True), announcement_id
        )
        if found is None:
            raise HTTPException(404, "no scheduled announcement with this id")
        if found.state == "released":
            raise HTTPException(409, "the announcement was already released; too late to cancel")
        return scheduled_out(found)

    @app.put(
        "/v1/users/{user_id}",
        status_code=202,
        response_model=Accepted,
        responses=REJECTED,
        tags=["directory"],
    )
    async def put_user(
        user_id: PathId,
        body: UserIn,
        request: Request,
        producer: ProducerDep,
        _c: DirectoryCaller,
        _s: SettingsDep,
    ) -> Accepted:
        """Publish the user's latest state (compacted by user_id)."""
        try:
            event = models.User.model_validate({"user_id": user_id, **body.model_dump()})
        except ValueError as exc:
            raise RequestValidationError(getattr(exc, "errors", lambda: [])()) from None
        event_id = await publish(
            request,
            producer,
            topic=topics.USERS,
            key=user_id,
            event=event,
            ce_type="io.notify.User",
        )
        metrics.INGEST_ACCEPTED.labels(kind="user").inc()
        return Accepted(event_id=event_id)

    @app.delete(
        "/v1/users/{user_id}",
        status_code=202,
        response_model=Accepted,
        responses=REJECTED,
        tags=["directory"],
    )
    async def delete_user(
        user_id: PathId, request: Request, producer: ProducerDep, _c: DirectoryCaller
    ) -> Accepted:
        """Publish a tombstone: the user is deleted."""
        event_id = await publish(
            request, producer, topic=topics.USERS, key=user_id, event=None, ce_type="io.notify.User"
        )
        metrics.INGEST_ACCEPTED.labels(kind="user_deleted").inc()
        return Accepted(event_id=event_id)

    @app.put(
        "/v1/servers/{server_id}/members/{user_id}",
        status_code=202,
        response_model=Accepted,
        responses=REJECTED,
        tags=["directory"],
    )
    async def put_member(
        server_id: PathId,
        user_id: PathId,
        body: MembershipIn,
        request: Request,
        producer: ProducerDep,
        _c: DirectoryCaller,
    ) -> Accepted:
        """Publish the membership's latest state (compacted by {server_id}/{user_id})."""
        try:
            event = models.Membership.model_validate(
                {"server_id": server_id, "user_id": user_id, **body.model_dump()}
            )
        except ValueError as exc:
            raise RequestValidationError(getattr(exc, "errors", lambda: [])()) from None
        event_id = await publish(
            request,
            producer,
            topic=topics.MEMBERSHIPS,
            key=f"{server_id}/{user_id}",
            event=event,
            ce_type="io.notify.Membership",
        )
        metrics.INGEST_ACCEPTED.labels(kind="membership").inc()
        return Accepted(event_id=event_id)

    @app.delete(
        "/v1/servers/{server_id}/members/{user_id}",
        status_code=202,
        response_model=Accepted,
        responses=REJECTED,
        tags=["directory"],
    )
    async def delete_member(
        server_id: PathId,
        user_id: PathId,
        request: Request,
        producer: ProducerDep,
        _c: DirectoryCaller,
    ) -> Accepted:
        """Publish a tombstone: the user left the server."""
        event_id = await publish(
            request,
            producer,
            topic=topics.MEMBERSHIPS,
            key=f"{server_id}/{user_id}",
            event=None,
            ce_type="io.notify.Membership",
        )
        metrics.INGEST_ACCEPTED.labels(kind="membership_deleted").inc()
        return Accepted(event_id=event_id)

    return app
