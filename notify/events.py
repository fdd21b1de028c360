"""The life of a message row: its creation, every change of what happened to it, and the
append-only event log.

One module writes them, so the record of what happened cannot drift from the rows:

* :func:`create_messages` is the one place message rows are created (first notices,
  corrections, requeues, reminders, fallback SMS), each with its first event in the same
  statement (PostgreSQL) or transaction (SQLite).
* :func:`change` is the one place a message row records what happened (its status, or the
  bookkeeping of an attempt: a retry, an outage), each with its event in the same
  transaction. (A worker's lease on a row is not something that happened to the message:
  ``send.store`` claims, renews and releases leases, with no event.) A
  :class:`Transition` names one way a row changes; the send engine's hot path batches many
  rows through one transition, a webhook or a bounce changes one (:func:`advance`).
* :func:`record` appends an event that changes no message (an early callback, a bounce's
  note, a completed reset).

Statuses only move forward (pending < sending < sent < a final one); anything that would move
a message backwards or sideways between finals is still recorded, as an event only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import SelectBase, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.types import TypeEngine

from notify import bulk
from notify.db import insert_for
from notify.models import STATUS_RANK, Event, Message, Status, UTCDateTime, utcnow

# What every event row holds (the id is the database's).
EVENT_COLUMNS = tuple(c.name for c in Event.__table__.columns if c.name != "id")

_INSERT_EVENT = bulk.insert_into(Event.__table__, *EVENT_COLUMNS)

# What a SELECT given to create_messages yields, in this order.
MESSAGE_COLUMNS = (
    "campaign_id",
    "contact_id",
    "channel",
    "notice",
    "sequence",
    "is_fallback",
    "status",
    "skip_reason",
    "address",
    "attempts",
    "created_at",
)


def row(
    campaign_id: int | None,
    message_id: int | None,
    contact_id: int | None,
    kind: str,
    source: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
    *,
    applied: bool = True,
    provider_message_id: str | None = None,
    replay_key: str | None = None,
) -> dict[str, Any]:
    """One event as the values of an INSERT (every column of :data:`EVENT_COLUMNS`)."""
    return {
        "campaign_id": campaign_id,
        "message_id": message_id,
        "contact_id": contact_id,
        "provider_message_id": provider_message_id,
        "at": at,
        "source": source,
        "kind": kind,
        "applied": applied,
        "detail": detail,
        "replay_key": replay_key,
    }


def record(
    session: Session,
    *,
    source: str,
    kind: str,
    message: Message | None = None,
    campaign_id: int | None = None,
    contact_id: int | None = None,
    message_id: int | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
    applied: bool = True,
    provider_message_id: str | None = None,
    replay_key: str | None = None,
) -> Event:
    """Append one event that changes no message (never updated afterwards except ``applied``
    for early callbacks).

    The message is ``message`` (loaded) or ``message_id`` with its campaign and contact.
    ``replay_key`` (unique) identifies a provider report, so a replayed one is stored once.
    """
    event = Event(
        **row(
            message.campaign_id if message is not None else campaign_id,
            message.id if message is not None else message_id,
            message.contact_id if message is not None else contact_id,
            kind,
            source,
            at or utcnow(),
            detail,
            applied=applied,
            provider_message_id=provider_message_id,
            replay_key=replay_key,
        )
    )
    session.add(event)
    return event


def append(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append many events that change no message (:func:`row` shapes each), in the caller's
    transaction: :func:`record` for a batch."""
    _INSERT_EVENT.execute(session.connection(), rows)


# -- creating message rows ---------------------------------------------------------------


def create_messages(
    session: Session,
    rows: SelectBase,
    *,
    campaign_id: int,
    at: datetime,
    source: str,
    detail: dict[str, Any] | None = None,
    logged: Collection[str] = (Status.PENDING, Status.SKIPPED),
) -> int:
    """Insert the message rows ``rows`` selects (:data:`MESSAGE_COLUMNS`, in order) that do
    not exist yet, and the first event (its status) of each created row whose status is in
    ``logged``; returns how many rows were created.

    The unique (campaign, contact, channel, notice, sequence) row makes a second run, a
    second worker or a concurrent one create nothing twice: what a conflict skips gets no
    event. The events are written from the rows the INSERT returns, so each created row gets
    exactly one whatever other runs do. On PostgreSQL both inserts are one statement (a
    data-modifying CTE), so the ids never travel to Python and back.
    """
    messages = Message.__table__
    created = (
        insert_for(session, messages)
        .from_select(list(MESSAGE_COLUMNS), rows)
        .on_conflict_do_nothing()
        .returning(messages.c.id, messages.c.contact_id, messages.c.status)
    )
    if session.get_bind().dialect.name == "postgresql":
        return _create_in_one_statement(session, created, campaign_id, at, source, detail, logged)
    conn = session.connection()
    count = 0
    # Streamed: a first plan of a million contacts returns a million rows.
    for part in session.execute(created).partitions(5000):
        count += len(part)
        _INSERT_EVENT.execute(
            conn,
            [
                row(campaign_id, message_id, contact_id, status, source, at, detail)
                for message_id, contact_id, status in part
                if status in logged
            ],
        )
    return count


def _create_in_one_statement(
    session: Session,
    created: Any,
    campaign_id: int,
    at: datetime,
    source: str,
    detail: dict[str, Any] | None,
    logged: Collection[str],
) -> int:
    new = created.cte("new_messages")
    events = Event.__table__
    first_events = (
        events.insert()
        .from_select(
            [
                "campaign_id",
                "message_id",
                "contact_id",
                "at",
                "source",
                "kind",
                "applied",
                "detail",
            ],
            select(
                literal(campaign_id),
                new.c.id,
                new.c.contact_id,
                literal(at, UTCDateTime()),
                literal(source),
                new.c.status,
                literal(True),
                literal(detail, events.c.detail.type),
            ).where(new.c.status.in_(list(logged))),
        )
        .cte("first_events")
    )
    return int(session.scalar(select(func.count()).select_from(new).add_cte(first_events)) or 0)


# -- changing message rows ---------------------------------------------------------------


class Transition:
    """One way a message row changes: an UPDATE of the row ``:id`` and the event it gets.

    ``sets`` is the SET clause with ``:name`` parameters (a transition the engine batches sets
    ``last_event_at = :now``, which tells which rows of a batch it changed); ``status`` the
    status it moves to, when fixed; ``guard`` narrows the rows it may change (a lease still
    held, a status not yet final). ``kind`` is the event's (a step may name its own).
    ``log_unchanged`` records a step whose row the guard kept as it was too, not applied.
    ``types`` converts parameters that need it (times, booleans); ``now`` is a time.
    """

    def __init__(
        self,
        kind: str | None,
        sets: str,
        *,
        status: str | None = None,
        guard: str = "",
        log_unchanged: bool = False,
        **types: TypeEngine[Any],
    ) -> None:
        self.kind = kind
        self.status = status
        self.log_unchanged = log_unchanged
        sql = f"UPDATE messages SET {sets} WHERE id = :id {guard}".rstrip()
        if ":now" in sql:
            types = {"now": UTCDateTime(), **types}
        self.update = bulk.Statement(sql, **types)


@dataclass(slots=True)  # one per message on the hot path
class Step:
    """One message row to change, and what its event says."""

    campaign_id: int
    message_id: int
    contact_id: int
    at: datetime
    source: str
    detail: dict[str, Any] | None = None
    values: Mapping[str, Any] = field(default_factory=dict)  # the UPDATE's other parameters
    kind: str | None = None  # the event's kind, when not the transition's
    applied: bool | None = None  # None: applied when the row changed
    replay_key: str | None = None  # a provider report's (stored once)


def change(
    session: Session,
    how: Transition,
    steps: Sequence[Step],
    *,
    before_events: Callable[[set[int]], None] | None = None,
) -> set[int]:
    """Apply ``how`` to each step's message and write each one's event, in the caller's
    transaction; returns the ids of the rows it changed.

    The one writer of what happens to a message after its creation (leases aside, which are
    ``send.store``'s), so no status changes without its event. Rows are updated in contact
    order: the status triggers update each contact's reach row, and workers that lock those
    rows in one order cannot deadlock each other.
    ``before_events`` runs between the two, given the changed ids, for work the events
    depend on (the engine issues reset tokens for the attempts that really began).
    """
    if not steps:
        return set()
    conn = session.connection()
    ordered = sorted(steps, key=lambda s: s.contact_id)
    updated = how.update.execute(
        conn, [{"id": s.message_id, "now": s.at, **s.values} for s in ordered]
    )
    ids = {s.message_id for s in steps}
    changed = ids if updated == len(steps) else _changed(session, how, steps)
    if before_events is not None:
        before_events(changed)
    _INSERT_EVENT.execute(
        conn,
        [
            row(
                s.campaign_id,
                s.message_id,
                s.contact_id,
                s.kind or how.kind or "",
                s.source,
                s.at,
                s.detail,
                applied=(s.message_id in changed) if s.applied is None else s.applied,
                replay_key=s.replay_key,
            )
            for s in steps
            if how.log_unchanged or s.message_id in changed
        ],
    )
    return changed


def _changed(session: Session, how: Transition, steps: Sequence[Step]) -> set[int]:
    """Which rows of a batch the guard let through (rare: another worker or a webhook got
    there first): those now stamped with their step's time and in the transition's status."""
    if len(steps) == 1:
        return set()  # one row: the count said it did not change
    found: set[int] = set()
    for at in {s.at for s in steps}:
        query = select(Message.id).where(
            Message.id.in_([s.message_id for s in steps if s.at == at]),
            Message.last_event_at == at,
        )
        if how.status is not None:
            query = query.where(Message.status == how.status)
        found |= set(session.scalars(query))
    return found


def can_move(current: str, new: str) -> bool:
    """True when ``new`` is strictly later than ``current`` in the status order."""
    return STATUS_RANK[new] > STATUS_RANK[current]


# A loaded row's change: the values are worked out from the row as loaded (advance).
_ADVANCE = Transition(
    None,
    "status = :status, sent_at = :sent_at, delivered_at = :delivered_at, "
    "last_event_at = :last_event_at",
    sent_at=UTCDateTime(),
    delivered_at=UTCDateTime(),
    last_event_at=UTCDateTime(),
)


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
    """Move a loaded ``message`` to ``status`` if that is forward, and log an event either
    way (not applied when it is not forward); returns True when the status changed.

    Timestamps (sent_at, delivered_at, last_event_at) are filled as the status passes them.
    The loaded object is kept in step with the row.
    """
    at = at or utcnow()
    moved = can_move(message.status, status)
    values = {
        "status": status if moved else message.status,
        "sent_at": message.sent_at,
        "delivered_at": message.delivered_at,
        "last_event_at": max(message.last_event_at or at, at),
    }
    if moved and status == Status.SENT and message.sent_at is None:
        values["sent_at"] = at
    if moved and status == Status.DELIVERED and message.delivered_at is None:
        values["delivered_at"] = at
    session.flush()  # earlier events of this session go first
    step = Step(
        message.campaign_id,
        message.id,
        message.contact_id,
        at,
        source,
        detail,
        values,
        kind=status,
        applied=moved,
        replay_key=replay_key,
    )
    change(session, _ADVANCE, [step])
    for name, value in values.items():
        set_committed_value(message, name, value)
    return moved
