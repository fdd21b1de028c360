"""UTC time: the one clock and the one text form of a time (files, --json, events).

Every stored time is UTC, and every file or JSON answer carries it as ISO-8601 to the second
with a ``Z`` (``2026-11-27T10:02:03Z``) so that records from machines in different zones
compare as text. What a person reads on a terminal may be in their zone: that is
``notify.localtime``, built on these.
"""

from __future__ import annotations

from datetime import UTC, datetime

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> datetime:
    """Timezone-aware now in UTC; every stored time is UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime: a naive one is taken as UTC (how the database returns them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def as_datetime(value: datetime | str | None) -> datetime | None:
    """A stored time (aware or naive UTC, or ISO-8601 text as in --json) as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso_utc(value: datetime | str | None) -> str | None:
    """``2026-11-27T10:02:03Z``: how files and --json carry times, whatever the screen zone."""
    moment = as_datetime(value)
    return moment.astimezone(UTC).strftime(ISO_FORMAT) if moment else None


def parse_iso(text: str) -> datetime:
    """An ISO-8601 date or date-time as aware UTC; a time without offset is taken as UTC.

    Raises ValueError for anything else.
    """
    return as_utc(datetime.fromisoformat(str(text).strip()))
