"""What the campaign page shows: the counts `notify status --json` prints (from the
tallies, so they are instant at any size), the resets funnel, and the time series behind
the charts (messages per minute, reset completions over time)."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.orm import Session

from notify.campaigns import get_campaign
from notify.models import IN_FLIGHT_STATUSES, Message, PasswordReset, utcnow
from notify.status import campaign_status

# The series scan the campaign's messages (a second or so at a million): while a send runs
# the page refreshes every REFRESH seconds, and the series are reused for SERIES_TTL.
REFRESH = 10
SERIES_TTL = 15.0
_cache: dict[tuple[str, str], tuple[float, Any]] = {}
_cache_lock = threading.Lock()


def _minute(column: Any, sqlite: bool) -> Any:
    """A timestamp truncated to its minute as ``YYYY-MM-DD HH:MM`` text (UTC)."""
    if sqlite:  # stored as ISO text: the first 16 characters are the minute
        return func.substr(type_coerce(column, String), 1, 16)
    return func.to_char(func.date_trunc("minute", column), "YYYY-MM-DD HH24:MI")


def per_minute(session: Session, column: Any, *where: Any) -> dict[str, int]:
    """How many rows have ``column`` in each minute (UTC), for the rows matching ``where``."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    bucket = _minute(column, sqlite)
    rows = session.execute(
        select(bucket, func.count()).where(column.is_not(None), *where).group_by(bucket)
    )
    return {minute.replace("T", " "): n for minute, n in rows if minute}


def _cached(key: tuple[str, str], compute: Any) -> Any:
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < SERIES_TTL:
            return hit[1]
    value = compute()
    with _cache_lock:
        _cache[key] = (now, value)
    return value


def campaign_page(session: Session, name: str, now: datetime | None = None) -> dict[str, Any]:
    """Status counts, resets funnel, whether a send is under way, and the chart series."""
    now = now or utcnow()
    status = campaign_status(session, name, now=now)
    campaign = get_campaign(session, name)
    in_flight = sum(
        sum(by.get(s, 0) for s in IN_FLIGHT_STATUSES) for by in status["messages"].values()
    )
    url = str(session.get_bind().engine.url)

    def sends() -> dict[str, int]:
        return per_minute(session, Message.sent_at, Message.campaign_id == campaign.id)

    def completions() -> dict[str, int]:
        return per_minute(
            session,
            PasswordReset.completed_at,
            PasswordReset.campaign_id == campaign.id,
            PasswordReset.status == "completed",
        )

    def links() -> int:
        return (
            session.scalar(
                select(func.count())
                .select_from(PasswordReset)
                .where(PasswordReset.campaign_id == campaign.id, PasswordReset.links_sent > 0)
            )
            or 0
        )

    fresh = in_flight == 0  # a finished campaign's series do not change: no need to cache
    series = {
        "sent_per_minute": sends() if fresh else _cached((url, f"{name}:sent"), sends),
        "completions_per_minute": (
            completions() if fresh else _cached((url, f"{name}:done"), completions)
        ),
    }
    resets = status["resets"]
    funnel = [
        ("Must reset (passwords exposed)", resets["total"]),
        ("Sent a reset link", links() if resets["total"] else 0),
        ("Completed the reset", resets["completed"]),
    ]
    return {
        "status": status,
        "in_flight": in_flight,
        "series": series,
        "funnel": funnel,
        "organization": campaign.settings.get("organization"),
    }
