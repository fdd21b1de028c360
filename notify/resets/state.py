"""The one reset-status rule, and the words of it: what a reset's status is at a given time.

A reset is ``completed`` once a completion was applied; otherwise ``expired`` when its newest
link has lapsed, else ``pending`` (``EXPIRED`` is derived, never stored). ``status``,
``lookup``, the resets export and the web view all ask here, and the rule is written once, in
SQL (:func:`status_expression`, :func:`lapsed`): each selects the status in its own query, so
every place agrees on what "expired" means. No Python twin: two copies of a rule drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from notify.models import (
    Campaign,
    Contact,
    PasswordReset,
    UTCDateTime,
    utcnow,
)
from notify.times import iso_utc

PENDING = "pending"
COMPLETED = "completed"
EXPIRED = "expired"  # derived, never stored: pending and every link has expired


def iso(value: datetime | None) -> str:
    """ISO-8601 UTC to the second with a Z (``2026-11-22T10:00:00Z``), as the other exports;
    empty for None."""
    return iso_utc(value) or ""


def has_passwords(exposures: ColumnElement[str] | Any = Contact.exposures) -> ColumnElement[bool]:
    """SQL condition: the stored ``;``-joined exposures include ``passwords``."""
    return (literal(";") + exposures + literal(";")).like("%;passwords;%")


def exposes_passwords(stored: str | None) -> bool:
    """Python twin of :func:`has_passwords`, for a contact's stored exposures."""
    return "passwords" in (stored or "").split(";")


def lapsed(now: datetime) -> ColumnElement[bool]:
    """SQL condition: a pending reset whose newest link expired before ``now`` (the rule's
    ``expired``; written so that ``ix_resets_state`` can count them)."""
    return and_(
        PasswordReset.status == PENDING, PasswordReset.link_expires_at < literal(now, UTCDateTime())
    )


def status_expression(now: datetime, *, absent: str | None = PENDING) -> ColumnElement[Any]:
    """SQL for the reported status (pending | completed | expired) of a joined reset row.

    A pending reset whose newest link expired before ``now`` is expired. ``absent`` is the
    status of a contact outer-joined without a reset row: ``pending`` where the contact is
    known to have exposed passwords (resets export: the reset is no less required before the
    first send made its row), None (an empty cell) where it may not (deliveries export).
    """
    whens = []
    if absent != PENDING:
        whens.append((PasswordReset.status.is_(None), literal(absent)))
    return case(
        *whens,
        (PasswordReset.status == COMPLETED, literal(COMPLETED)),
        (lapsed(now), literal(EXPIRED)),
        else_=literal(PENDING),
    )


def counts(session: Session, campaign: Campaign, now: datetime | None = None) -> dict[str, int]:
    """How many resets are pending, completed and expired (for ``notify status``)."""
    now = now or utcnow()
    status = status_expression(now)
    rows = session.execute(
        select(status, func.count())
        .select_from(PasswordReset)
        .where(PasswordReset.campaign_id == campaign.id)
        .group_by(status)
    )
    result = {PENDING: 0, COMPLETED: 0, EXPIRED: 0}
    result.update({name: int(n) for name, n in rows})
    return result
