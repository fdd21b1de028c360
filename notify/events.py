"""Status changes and the append-only event log, shared by the engine, webhooks, sync and bounces.

Statuses only move forward (pending < sending < sent < a final one); anything that would move
a message backwards or sideways between finals is still recorded, as an event only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from notify.models import STATUS_RANK, Event, Message, Status, utcnow


def record(
    session: Session,
    *,
    source: str,
    kind: str,
    message: Message | None = None,
    campaign_id: int | None = None,
    contact_id: int | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
    applied: bool = True,
    provider_message_id: str | None = None,
    replay_key: str | None = None,
) -> Event:
    """Append one event (never updated afterwards except ``applied`` for early callbacks).

    ``replay_key`` (unique) identifies a provider report, so a replayed one is stored once.
    """
    event = Event(
        campaign_id=message.campaign_id if message is not None else campaign_id,
        message_id=message.id if message is not None else None,
        contact_id=message.contact_id if message is not None else contact_id,
        provider_message_id=provider_message_id,
        at=at or utcnow(),
        source=source,
        kind=kind,
        applied=applied,
        detail=detail,
        replay_key=replay_key,
    )
    session.add(event)
    return event


def can_move(current: str, new: str) -> bool:
    """True when ``new`` is strictly later than ``current`` in the status order."""
    return STATUS_RANK[new] > STATUS_RANK[current]


def advance(
    session: Session,
    message: Message,
    status: str,
    *,
    source: str,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
    replay_key: str | None = None,
) -> bool:
    """Move ``message`` to ``status`` if that is forward, and log an event either way.

    Returns True when the status changed. Timestamps (sent_at, delivered_at, last_event_at)
    are filled as the status passes them.
    """
    at = at or utcnow()
    moved = can_move(message.status, status)
    if moved:
        message.status = status
        if status == Status.SENT and message.sent_at is None:
            message.sent_at = at
        if status == Status.DELIVERED and message.delivered_at is None:
            message.delivered_at = at
    message.last_event_at = max(message.last_event_at or at, at)
    record(
        session,
        source=source,
        kind=status,
        message=message,
        detail=detail,
        at=at,
        applied=moved,
        replay_key=replay_key,
    )
    return moved


def row(
    campaign_id: int,
    message_id: int,
    contact_id: int,
    kind: str,
    source: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One applied event as the values of a bulk INSERT: what the engine's group commits and
    the bulk planners write next to the status change they record (same transaction)."""
    return {
        "campaign_id": campaign_id,
        "message_id": message_id,
        "contact_id": contact_id,
        "provider_message_id": None,
        "at": at,
        "source": source,
        "kind": kind,
        "applied": True,
        "detail": detail,
    }


def insert_planned(
    session: Session,
    campaign_id: int,
    created: Iterable[Sequence[Any]],
    at: datetime,
    source: str,
    detail: dict[str, Any] | None,
    chunk: int = 1000,
) -> None:
    """The ``pending`` event of each message just created in bulk (``(message_id,
    contact_id)`` pairs, as an INSERT ... RETURNING gives them), in chunks."""
    rows = [
        row(campaign_id, message_id, contact_id, Status.PENDING, source, at, detail)
        for message_id, contact_id in created
    ]
    for start in range(0, len(rows), chunk):
        session.execute(Event.__table__.insert(), rows[start : start + chunk])
