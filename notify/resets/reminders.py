"""Reminders: a contact who has not reset their password is reminded on each channel, some
time after the last message there reached them, at most ``max_reminders`` times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    case,
    exists,
    func,
    literal,
    null,
    select,
)
from sqlalchemy.orm import Session

from notify import events
from notify.errors import NotifyError
from notify.models import (
    CHANNELS,
    REACHED_STATUSES,
    Campaign,
    Contact,
    Message,
    PasswordReset,
    UTCDateTime,
    utcnow,
)
from notify.resets.state import COMPLETED, has_passwords
from notify.resets.tokens import ensure_resets
from notify.times import as_utc


def plan_reminders(
    session: Session,
    campaign: Campaign,
    after: timedelta,
    max_reminders: int,
    channels: Iterable[str],
    now: datetime | None = None,
    *,
    dry_run: bool = False,
    limit: int | None = None,
) -> int:
    """Create the due reminder rows (pending); returns how many (would be) created.

    Due, per contact and channel: passwords exposed and reset not completed; the channel's
    latest message (highest sequence, first notice or reminder) is ``sent`` or ``delivered``
    and was sent at least ``after`` ago (so nothing is pending there); fewer than
    ``max_reminders`` reminders on that channel so far. The new row is ``notice="reminder"``
    with the next sequence, addressed to the contact's current address. One INSERT ... SELECT
    per channel; the unique message constraint makes concurrent or repeated runs create
    nothing twice. ``dry_run`` only counts. ``limit`` caps the rows created in this run.
    """
    channels = list(dict.fromkeys(channels))
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise NotifyError(f"unknown channel {unknown[0]!r} (known: {', '.join(CHANNELS)})")
    if after < timedelta(0):
        raise NotifyError("the reminder delay cannot be negative")
    if max_reminders < 1:
        return 0
    now = as_utc(now or utcnow())
    if not dry_run:
        # Keep the records in step (the engine issues tokens against them at send time).
        ensure_resets(session, campaign)
    total = 0
    for channel in channels:
        budget = None if limit is None else limit - total
        if budget is not None and budget <= 0:
            break
        due = _due_reminders(campaign.id, channel, now - after, max_reminders, now, budget)
        if dry_run:
            total += session.scalar(select(func.count()).select_from(due.subquery())) or 0
        else:
            total += events.create_messages(
                session,
                due,
                campaign_id=campaign.id,
                at=now,
                source="reset",
                detail={"planned": "reminder"},
            )
    if total and not dry_run:  # California 1798.82(d)(5) holds for reminders too
        from notify.campaigns import config_of
        from notify.rules.business_email import skip_business_credentials

        skip_business_credentials(session, campaign, config_of(campaign), now)
    return total


@dataclass(frozen=True)
class Upcoming:
    """Reminders not due yet that will fall due if nothing changes (no reset completed)."""

    count: int = 0
    first_at: datetime | None = None  # when the earliest falls due
    last_at: datetime | None = None  # when the latest of them falls due


def upcoming_reminders(
    session: Session,
    campaign: Campaign,
    after: timedelta,
    max_reminders: int,
    channels: Iterable[str],
    now: datetime | None = None,
) -> Upcoming:
    """The reminders that are not due yet but will be: how many, and when the first and
    the last fall due (the latest message on the channel reached less than ``after`` ago,
    reset not completed, fewer than ``max_reminders`` so far). What ``remind --dry-run``
    names, so that an operator (or cron) knows when to run it again.
    """
    now = as_utc(now or utcnow())
    cutoff = now - after
    count, first, last = 0, None, None
    for channel in dict.fromkeys(channels):
        reached_at = _upcoming_stats(campaign.id, channel, max_reminders, cutoff)
        n, low, high = session.execute(
            select(func.count(), func.min(reached_at.c.at), func.max(reached_at.c.at)).select_from(
                reached_at
            )
        ).one()
        if not n:
            continue
        count += n
        low, high = _stored_time(low), _stored_time(high)
        first = low if first is None else min(first, low)
        last = high if last is None else max(last, high)
    if not count or first is None or last is None:
        return Upcoming()
    return Upcoming(count, first + after, last + after)


def _stored_time(value: datetime | str) -> datetime:
    """A stored time from an aggregate (SQLite may hand back its text) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


def _round_stats(campaign_id: int, channel: str, reached: Any, *extra: Any) -> Any:
    """Per contact on ``channel``: its highest sequence, the highest one ``reached``, and
    its reminder count (plus ``extra`` columns): the aggregate both the due and the
    upcoming reminders are judged from."""
    messages = Message.__table__
    return (
        select(
            messages.c.contact_id,
            func.max(messages.c.sequence).label("last_sequence"),
            func.max(case((reached, messages.c.sequence))).label("reached_sequence"),
            *extra,
            func.sum(case((messages.c.notice == "reminder", 1), else_=0)).label("reminders"),
        )
        .where(messages.c.campaign_id == campaign_id, messages.c.channel == channel)
        .group_by(messages.c.contact_id)
        .subquery("stats")
    )


def _reset_completed() -> Any:
    """EXISTS: the contact (of the outer query) has completed its reset."""
    return exists().where(
        PasswordReset.campaign_id == Contact.campaign_id,
        PasswordReset.contact_id == Contact.id,
        PasswordReset.status == COMPLETED,
    )


def _upcoming_stats(campaign_id: int, channel: str, max_reminders: int, cutoff: datetime):
    """Per contact that will be due on ``channel``: when its latest message reached it."""
    messages = Message.__table__
    reached = messages.c.status.in_(sorted(REACHED_STATUSES))
    at = func.coalesce(messages.c.sent_at, messages.c.delivered_at)
    stats = _round_stats(
        campaign_id, channel, reached, func.max(case((reached, at))).label("reached_at")
    )
    return (
        select(stats.c.reached_at.label("at"))
        .select_from(Contact)
        .join(stats, stats.c.contact_id == Contact.id)
        .where(
            *_waiting_for_a_reminder(campaign_id, channel, stats, max_reminders),
            stats.c.reached_at > literal(cutoff, UTCDateTime()),
        )
        .subquery("upcoming")
    )


def _waiting_for_a_reminder(campaign_id: int, channel: str, stats: Any, max_reminders: int):
    """The conditions both the due and the upcoming reminders share: passwords exposed,
    reset not completed, an address on the channel, the latest message reached, and fewer
    than ``max_reminders`` reminders so far (``stats`` is :func:`_round_stats`' subquery)."""
    address = Contact.email if channel == "email" else Contact.phone
    return (
        Contact.campaign_id == campaign_id,
        has_passwords(),
        ~_reset_completed(),
        address.is_not(None),
        stats.c.reached_sequence == stats.c.last_sequence,
        stats.c.reminders < max_reminders,
    )


def _due_reminders(
    campaign_id: int,
    channel: str,
    cutoff: datetime,
    max_reminders: int,
    now: datetime,
    limit: int | None,
):
    """SELECT of the Message rows to insert for one channel (see :func:`plan_reminders`).

    One aggregate pass over the channel's messages per contact: the highest sequence, the
    highest sequence that was reached before ``cutoff``, and the reminder count. The contact
    is due when both sequences are equal (its latest message was reached long enough ago).
    No self-join on messages, so the INSERT never re-reads rows it is adding.
    """
    messages = Message.__table__
    reached_early = and_(
        messages.c.status.in_(sorted(REACHED_STATUSES)),
        func.coalesce(messages.c.sent_at, messages.c.delivered_at)
        <= literal(cutoff, UTCDateTime()),
    )
    stats = _round_stats(campaign_id, channel, reached_early)
    address = Contact.email if channel == "email" else Contact.phone
    query = (
        select(
            Contact.campaign_id,
            Contact.id,
            literal(channel),
            literal("reminder"),
            stats.c.last_sequence + 1,
            literal(False),
            literal("pending"),
            null(),
            address,
            literal(0),
            literal(now, UTCDateTime()),
        )
        .select_from(Contact)
        .join(stats, stats.c.contact_id == Contact.id)
        .where(*_waiting_for_a_reminder(campaign_id, channel, stats, max_reminders))
        .order_by(Contact.id)
    )
    return query.limit(limit) if limit is not None else query
