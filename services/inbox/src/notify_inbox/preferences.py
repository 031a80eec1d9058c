"""A user's own preferences: stored in PostgreSQL and published through the outbox.

Each PUT writes the state row and its event (an outbox row) in one transaction, so the
fanout learns every committed change and nothing that was rolled back. The state row is
upserted first: its row lock makes a second PUT for the same key wait until the first
commits, so the outbox ids (which the relay publishes in order) follow the commit order of
each key's changes.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Table, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from notify_common.db.models import ChannelPreferenceRow, OutboxRow, UserPreferencesRow
from notify_common.kafka.codec import summarize
from notify_inbox.deps import CurrentUser, SessionDep
from notify_schemas import envelope, models, topics

SOURCE = "/notify/inbox"

user_preferences = cast(Table, UserPreferencesRow.__table__)
channel_preferences = cast(Table, ChannelPreferenceRow.__table__)
outbox = cast(Table, OutboxRow.__table__)

E = TypeVar("E", bound=BaseModel)

PathId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^/\s]+$")]


class PreferencesIn(BaseModel):
    """The whole of a user's preferences (PUT replaces them; omitted parts get defaults)."""

    model_config = ConfigDict(extra="forbid")

    channels: models.ChannelToggles = Field(default_factory=models.ChannelToggles)
    quiet_hours: models.QuietHours | None = None
    digest: models.DigestSettings = Field(default_factory=models.DigestSettings)


class ChannelPreferenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: models.PreferenceLevel


def _event(model: type[E], **data: Any) -> E:
    # The user id comes from the token and becomes a Kafka key: one the contract forbids
    # (e.g. holding "/") is refused here rather than published.
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, detail=f"cannot store this: {summarize(exc)}") from None


def _enqueue(
    session: Session, *, topic: str, key: str, event: BaseModel, correlation_id: str | None
) -> None:
    """Add the event to the outbox in the session's transaction (published after commit)."""
    ce_type = topics.topic(topic).ce_type
    if ce_type is None:
        raise RuntimeError(f"{topic} has no CloudEvents type in its manifest")
    value, headers = envelope.encode(
        event, ce_type=ce_type, source=SOURCE, correlation_id=correlation_id
    )
    session.execute(
        insert(outbox).values(
            topic=topic, key=key, value=value, headers=envelope.decode_headers(headers)
        )
    )


def get_preferences(*, session: Session, user_id: str) -> models.UserPreferences:
    """The user's stored preferences, or the defaults when they never set any."""
    row = session.execute(
        select(
            user_preferences.c.channels, user_preferences.c.quiet_hours, user_preferences.c.digest
        ).where(user_preferences.c.user_id == user_id)
    ).one_or_none()
    if row is None:
        return _event(models.UserPreferences, user_id=user_id)
    return _event(
        models.UserPreferences,
        user_id=user_id,
        channels=row.channels,
        quiet_hours=row.quiet_hours,
        digest=row.digest,
    )


def put_preferences(
    *, session: Session, user_id: str, preferences: PreferencesIn, correlation_id: str | None
) -> models.UserPreferences:
    """Replace the user's preferences and enqueue the event; commits."""
    event = _event(models.UserPreferences, user_id=user_id, **preferences.model_dump())
    state = event.model_dump(mode="json")
    stmt = pg_insert(user_preferences).values(
        user_id=user_id,
        channels=state["channels"],
        quiet_hours=state["quiet_hours"],
        digest=state["digest"],
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[user_preferences.c.user_id],
            set_={
                "channels": stmt.excluded.channels,
                "quiet_hours": stmt.excluded.quiet_hours,
                "digest": stmt.excluded.digest,
                "updated_at": func.now(),
            },
        )
    )
    _enqueue(
        session,
        topic=topics.USER_PREFERENCES,
        key=user_id,
        event=event,
        correlation_id=correlation_id,
    )
    session.commit()
    return event


def get_channel_preference(
    *, session: Session, user_id: str, channel_id: str
) -> models.ChannelPreference:
    """The user's level for the channel; "all" when never set."""
    level = session.execute(
        select(channel_preferences.c.level).where(
            channel_preferences.c.user_id == user_id,
            channel_preferences.c.channel_id == channel_id,
        )
    ).scalar_one_or_none()
    return _event(
        models.ChannelPreference, user_id=user_id, channel_id=channel_id, level=level or "all"
    )


def put_channel_preference(
    *,
    session: Session,
    user_id: str,
    channel_id: str,
    level: models.PreferenceLevel,
    correlation_id: str | None,
) -> models.ChannelPreference:
    """Set the user's level for the channel and enqueue the event; commits."""
    event = _event(models.ChannelPreference, user_id=user_id, channel_id=channel_id, level=level)
    stmt = pg_insert(channel_preferences).values(
        user_id=user_id, channel_id=channel_id, level=level
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[channel_preferences.c.user_id, channel_preferences.c.channel_id],
            set_={"level": stmt.excluded.level, "updated_at": func.now()},
        )
    )
    _enqueue(
        session,
        topic=topics.CHANNEL_PREFERENCES,
        key=f"{user_id}/{channel_id}",
        event=event,
        correlation_id=correlation_id,
    )
    session.commit()
    return event


def _correlation_id(request: Request) -> str | None:
    return getattr(request.state, "correlation_id", None)


router = APIRouter(tags=["preferences"])


@router.get("/preferences", response_model=models.UserPreferences)
def read_preferences(user: CurrentUser, session: SessionDep) -> models.UserPreferences:
    """The caller's delivery preferences (defaults until they set any)."""
    return get_preferences(session=session, user_id=user.user_id)


@router.put("/preferences", response_model=models.UserPreferences)
def write_preferences(
    body: PreferencesIn, request: Request, user: CurrentUser, session: SessionDep
) -> models.UserPreferences:
    """Replace the caller's delivery preferences; the fanout applies them within moments."""
    return put_preferences(
        session=session,
        user_id=user.user_id,
        preferences=body,
        correlation_id=_correlation_id(request),
    )


@router.get("/channels/{channel_id}/preference", response_model=models.ChannelPreference)
def read_channel_preference(
    channel_id: PathId, user: CurrentUser, session: SessionDep
) -> models.ChannelPreference:
    """The caller's notification level for one channel ("all" until set)."""
    return get_channel_preference(session=session, user_id=user.user_id, channel_id=channel_id)


@router.put("/channels/{channel_id}/preference", response_model=models.ChannelPreference)
def write_channel_preference(
    channel_id: PathId,
    body: ChannelPreferenceIn,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
) -> models.ChannelPreference:
    """Set the caller's notification level for one channel: all, mentions or none."""
    return put_channel_preference(
        session=session,
        user_id=user.user_id,
        channel_id=channel_id,
        level=body.level,
        correlation_id=_correlation_id(request),
    )
