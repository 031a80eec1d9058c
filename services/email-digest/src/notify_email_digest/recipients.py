"""Who a mail goes to and when their digest is due: email-digest's view of the directory.

The view is fed by two compacted topics (docs/decisions/0006-email-digest.md): the upstream
User record (notify.users.v1: address, name, locale, timezone, and default delivery
settings) and the user's own UserPreferences (notify.user-preferences.v1), which, when
present, override the User record's delivery settings (docs/decisions/0002). Both are kept
as received, in email_recipients, and combined here when a mail is about to be sent, so a
change of either is honoured by the next mail without any recomputation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from notify_schemas.models import User, UserPreferences


@dataclass(frozen=True)
class Recipient:
    user_id: str
    known: bool  # a User record exists (not deleted)
    email: str | None
    display_name: str
    locale: str
    timezone: ZoneInfo
    email_enabled: bool
    digest_enabled: bool
    # The digest hour and the zone it is read in: the user's own hour in their timezone,
    # or NOTIFY_DIGEST_HOUR_UTC in UTC when neither of their records sets one.
    digest_hour: int
    digest_zone: ZoneInfo

    def suppression(self) -> str | None:
        """Why this user gets no digest (a metric label), or None."""
        if not self.known:
            return "unknown_user"
        if not self.email:
            return "no_address"
        if not self.email_enabled:
            return "email_off"
        if not self.digest_enabled:
            return "digest_off"
        return None

    def digest_slot(self, now: datetime) -> tuple[date, datetime]:
        """The latest digest time at or before `now`: (the user's local date, the instant).

        A digest for that date is due once it has notifications received before the
        instant; later ones wait for the next day's digest.
        """
        local = now.astimezone(self.digest_zone)
        day = local.date() if local.hour >= self.digest_hour else local.date() - timedelta(days=1)
        # In a DST gap the wall time does not exist; zoneinfo maps it to the instant an hour
        # later, which is when the user's clock shows the next valid time: what they expect.
        at = datetime.combine(day, time(self.digest_hour), tzinfo=self.digest_zone)
        return day, at.astimezone(UTC)


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        # An unknown zone must not stop the user's mail: fall back to UTC.
        return ZoneInfo("UTC")


def resolve(
    *,
    user_id: str,
    user: dict[str, Any] | None,
    prefs: dict[str, Any] | None,
    default_hour_utc: int,
) -> Recipient:
    """Combine the stored records into what a mail needs (see the module docstring)."""
    u = User.model_validate(user) if user is not None else None
    p = UserPreferences.model_validate(prefs) if prefs is not None else None
    # The record that decides delivery: the user's own preferences over the upstream one.
    channels = p.channels if p is not None else (u.channels if u is not None else None)
    digest = p.digest if p is not None else (u.digest if u is not None else None)
    tz = zone(u.timezone if u is not None else None)
    if digest is not None and "hour_local" in digest.model_fields_set:
        hour, digest_zone = digest.hour_local, tz
    else:
        hour, digest_zone = default_hour_utc, ZoneInfo("UTC")
    return Recipient(
        user_id=user_id,
        known=u is not None,
        email=u.email if u is not None else None,
        display_name=u.display_name if u is not None else user_id,
        locale=u.locale if u is not None else "en",
        timezone=tz,
        email_enabled=channels.email if channels is not None else True,
        digest_enabled=digest.enabled if digest is not None else True,
        digest_hour=hour,
        digest_zone=digest_zone,
    )


def stored(event: User | UserPreferences) -> dict[str, Any]:
    """How a record is kept: only the fields its producer set, so that `resolve` can tell
    an explicit digest hour from the model's default."""
    return event.model_dump(mode="json", exclude_unset=True)
