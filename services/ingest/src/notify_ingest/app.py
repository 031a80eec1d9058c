"""The upstream-facing API: validate, publish, answer only once the broker confirmed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from notify_common import logging as log
from notify_common import metrics
from notify_common.http import create_app
from notify_common.kafka.config import client_config
from notify_common.kafka.producer import EventProducer, PublishError
from notify_ingest.deps import (
    AnnouncementsCaller,
    DirectoryCaller,
    MessagesCaller,
    ProducerDep,
    SettingsDep,
    parse_tokens,
)
from notify_ingest.settings import IngestSettings
from notify_schemas import envelope, models, topics
from notify_schemas.models import Id

logger = log.get(__name__)
SOURCE = "/notify/ingest"
# ce_id of a message or announcement is derived from its own id, so a re-post is the same
# event to every consumer (and yields the same notification ids downstream).
EVENT_NAMESPACE = uuid.UUID("0b5cc3a6-2b4e-5d8e-8f0e-6e6f74696679")

PathId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^/\s]+$")]


class Accepted(BaseModel):
    status: str = "accepted"
    event_id: str


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


def build_app(settings: IngestSettings, producer: EventProducer | None = None) -> FastAPI:
    tokens = parse_tokens(settings.service_tokens.get_secret_value())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.producer = producer or EventProducer(
            settings, **{"message.timeout.ms": int(settings.ingest_publish_timeout_s * 1000)}
        )
        app.state.producer.start()
        yield
        await asyncio.to_thread(app.state.producer.close)

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

    @app.post("/v1/messages", status_code=202, response_model=Accepted, tags=["events"])
    async def post_message(
        body: MessageIn, request: Request, producer: ProducerDep, _c: MessagesCaller
    ) -> Accepted:
        """Publish MessageCreated. Idempotent on message_id."""
        event = models.MessageCreated.model_validate(body.model_dump())
        event_id = str(uuid.uuid5(EVENT_NAMESPACE, f"message:{event.message_id}"))
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

    @app.post("/v1/announcements", status_code=202, response_model=Accepted, tags=["events"])
    async def post_announcement(
        body: AnnouncementIn, request: Request, producer: ProducerDep, _c: AnnouncementsCaller
    ) -> Accepted:
        """Publish AnnouncementRequested to a server or to explicit user ids.

        Idempotent on announcement_id."""
        if body.send_at is not None and body.send_at > envelope.now():
            raise HTTPException(
                422, "scheduled announcements (send_at in the future) are not supported yet"
            )
        event = models.AnnouncementRequested.model_validate(body.model_dump())
        event_id = str(uuid.uuid5(EVENT_NAMESPACE, f"announcement:{event.announcement_id}"))
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

    @app.put("/v1/users/{user_id}", status_code=202, response_model=Accepted, tags=["directory"])
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

    @app.delete("/v1/users/{user_id}", status_code=202, response_model=Accepted, tags=["directory"])
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
