"""The one writer of message rows (`events`): every row is created with its first event, every
change writes its event, a batch reports exactly the rows it changed, and no other module
writes message rows or their events."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from notify import db, events
from notify.models import Event, Message, Status
from notify.send.plan import plan
from tests.factories import add_contacts, campaign_toml, make_campaign

PACKAGE = Path(__file__).resolve().parent.parent / "notify"
AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def planned(engine, tmp_path, with_phone: int, without_phone: int):
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, with_phone)
    add_contacts(engine, campaign, without_phone, phones=False, start=with_phone)
    with db.session_scope(engine) as session:
        created = plan(session, campaign, ("email", "sms"))
    return campaign, created


def events_by_message(session, kind: str) -> dict[int, int]:
    rows = session.execute(
        select(Event.message_id, func.count()).where(Event.kind == kind).group_by(Event.message_id)
    )
    return dict(rows.all())


def test_a_large_first_plan_logs_each_skipped_row_once_and_a_second_plan_nothing(engine, tmp_path):
    # More rows than one streamed part (5,000) of the created rows on SQLite.
    campaign, created = planned(engine, tmp_path, with_phone=4000, without_phone=3000)
    assert created == {"email": 7000, "sms": 7000}
    with db.session_scope(engine) as session:
        skipped = set(session.scalars(select(Message.id).where(Message.status == Status.SKIPPED)))
        logged = events_by_message(session, Status.SKIPPED)
        # A pending first notice's first event is its attempt: none yet.
        assert events_by_message(session, Status.PENDING) == {}
    assert len(skipped) == 3000
    assert logged == dict.fromkeys(skipped, 1)
    with db.session_scope(engine) as session:
        again = plan(session, campaign, ("email", "sms"))
        assert sum(again.values()) == 0
        assert sum(events_by_message(session, Status.SKIPPED).values()) == 3000


def test_a_batch_reports_and_logs_only_the_rows_its_guard_let_through(engine, tmp_path):
    campaign, _ = planned(engine, tmp_path, with_phone=3, without_phone=0)
    guarded = events.Transition(
        "retry",
        "attempts = attempts + 1, last_event_at = :now",
        guard="AND status = 'pending'",
    )
    logged = events.Transition(
        "retry",
        "attempts = attempts + 1, last_event_at = :now",
        guard="AND status = 'pending'",
        log_unchanged=True,
    )
    with db.session_scope(engine) as session:
        rows = session.execute(
            select(Message.id, Message.contact_id)
            .where(Message.channel == "email")
            .order_by(Message.id)
        ).all()
        session.execute(
            Message.__table__.update().where(Message.id == rows[1].id).values(status=Status.FAILED)
        )

        def steps(detail):
            return [
                events.Step(campaign.id, mid, cid, AT, "test", {"n": detail}) for mid, cid in rows
            ]

        changed = events.change(session, guarded, steps(1))
        assert changed == {rows[0].id, rows[2].id}
        assert events.change(session, logged, steps(2)) == changed
        applied = {
            message_id: was_applied
            for message_id, was_applied, detail in session.execute(
                select(Event.message_id, Event.applied, Event.detail).where(Event.kind == "retry")
            )
            if detail == {"n": 2}
        }
        attempts = dict(session.execute(select(Message.id, Message.attempts)).all())
    assert applied == {rows[0].id: True, rows[1].id: False, rows[2].id: True}
    assert [attempts[r.id] for r in rows] == [2, 0, 2]


def test_advance_keeps_the_loaded_row_and_the_database_in_step(engine, tmp_path):
    planned(engine, tmp_path, with_phone=1, without_phone=0)
    with db.session_scope(engine) as session:
        message = session.scalars(select(Message).where(Message.channel == "sms")).one()
        assert events.advance(session, message, Status.SENT, source="test", at=AT)
        assert not events.advance(session, message, Status.PENDING, source="test", at=AT)
        assert message.status == Status.SENT and message.sent_at == AT
        message_id = message.id
    with db.session_scope(engine) as session:
        stored = session.get(Message, message_id)
        kinds = session.execute(
            select(Event.kind, Event.applied)
            .where(Event.message_id == message_id)
            .order_by(Event.id)
        ).all()
    assert (stored.status, stored.sent_at, stored.last_event_at) == (Status.SENT, AT, AT)
    assert [tuple(k) for k in kinds] == [("sent", True), ("pending", False)]


# What writing a message row or an event looks like, in SQL or SQLAlchemy.
WRITES = re.compile(
    r"INSERT INTO (messages|events)\b|UPDATE messages SET status|insert\((Message|Event)\)"
    r"|(Message|Event)\.__table__\.(insert|update)\(|(?<!class )\bMessage\(|\bmessage\.status = "
)


def test_no_module_but_events_writes_message_rows_or_events():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "events.py" or relative.startswith("migrations/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if WRITES.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
