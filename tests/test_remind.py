"""Reminders: who is due, the delay, the cap, repeated and concurrent runs, the CLI."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import db
from notify.cli import main
from notify.cli.common import parse_duration
from notify.errors import NotifyError
from notify.models import AuditRecord, Event, Message, ResetToken, utcnow
from notify.resets.completions import complete
from notify.resets.reminders import plan_reminders
from notify.resets.state import counts
from notify.resets.tokens import hash_token, issue_token
from tests.test_resets import add_contact, add_message, make_campaign

AFTER = timedelta(hours=72)


def reminders(session, **where) -> list[Message]:
    query = (
        select(Message)
        .where(Message.notice == "reminder")
        .order_by(Message.contact_id, Message.channel)
    )
    for name, value in where.items():
        query = query.where(getattr(Message, name) == value)
    return list(session.scalars(query))


def plan(session, campaign, **kwargs) -> int:
    options = {"after": AFTER, "max_reminders": 2, "channels": ["email", "sms"]}
    options.update(kwargs)
    return plan_reminders(session, campaign, **options)


def test_parse_duration():
    assert parse_duration("72h") == timedelta(hours=72)
    assert parse_duration("3d") == timedelta(days=3)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_duration(" 1D 12H ") == timedelta(days=1, hours=12)
    for bad in ("", "72", "h", "3x", "1m1h", "-3d", "3.5d"):
        with pytest.raises(NotifyError, match="not a duration"):
            parse_duration(bad)


def test_only_pending_password_resets_whose_last_notice_is_old_enough(session, campaign):
    now = utcnow()
    old, recent = now - timedelta(hours=73), now - timedelta(hours=71)
    due = add_contact(session, campaign, "due")
    add_message(session, campaign, due, sent_at=old)
    delivered = add_contact(session, campaign, "delivered", "identity;passwords")
    add_message(session, campaign, delivered, status="delivered", sent_at=old)
    too_soon = add_contact(session, campaign, "too-soon")
    add_message(session, campaign, too_soon, sent_at=recent)
    card = add_contact(session, campaign, "card", "card")
    add_message(session, campaign, card, sent_at=old)
    done = add_contact(session, campaign, "done")
    add_message(session, campaign, done, sent_at=old)
    failed = add_contact(session, campaign, "failed")
    add_message(session, campaign, failed, status="failed")
    waiting = add_contact(session, campaign, "waiting")
    add_message(session, campaign, waiting, status="pending")
    add_contact(session, campaign, "never-sent")
    assert complete(session, campaign, key="done", completed_at=now, source="import").status == 200

    assert plan(session, campaign, now=now) == 2
    rows = reminders(session)
    assert [(r.contact_id, r.channel, r.sequence, r.status, r.address) for r in rows] == [
        (due.id, "email", 1, "pending", "due@example.com"),
        (delivered.id, "email", 1, "pending", "delivered@example.com"),
    ]
    # Each planned row has its "pending" event; the reset records now exist for the engine.
    planned = session.scalars(select(Event).where(Event.message_id.in_([r.id for r in rows])))
    assert sorted((e.source, e.kind) for e in planned) == [("reset", "pending")] * 2
    assert counts(session, campaign) == {"pending": 6, "completed": 1, "expired": 0}


def test_after_boundary_is_inclusive(session, campaign):
    now = utcnow()
    contact = add_contact(session, campaign, "a")
    add_message(session, campaign, contact, sent_at=now - AFTER)
    assert plan(session, campaign, now=now - timedelta(seconds=1)) == 0
    assert plan(session, campaign, now=now) == 1


def test_second_round_waits_and_the_cap_holds(session, campaign):
    now = utcnow()
    contact = add_contact(session, campaign, "a", phone="+14155550100")
    add_message(session, campaign, contact, sent_at=now - timedelta(days=10))
    add_message(session, campaign, contact, channel="sms", sent_at=now - timedelta(days=10))
    assert plan(session, campaign, now=now) == 2  # one per channel
    # Immediately again: the reminders are not sent yet, so nothing new.
    assert plan(session, campaign, now=now) == 0
    assert plan(session, campaign, now=now + timedelta(days=30)) == 0
    for row in reminders(session):
        row.status, row.sent_at = "sent", now
    session.flush()
    assert plan(session, campaign, now=now + timedelta(hours=71)) == 0
    assert plan(session, campaign, now=now + timedelta(hours=72)) == 2
    assert [r.sequence for r in reminders(session, channel="email")] == [1, 2]
    for row in reminders(session, status="pending"):
        row.status, row.sent_at = "delivered", now + timedelta(hours=72)
    session.flush()
    # Cap of two reminders per channel reached.
    assert plan(session, campaign, now=now + timedelta(days=60)) == 0
    assert plan(session, campaign, now=now + timedelta(days=60), max_reminders=3) == 2
    assert [r.sequence for r in reminders(session, channel="sms")] == [1, 2, 3]
    assert plan(session, campaign, now=now + timedelta(days=60), channels=["email"]) == 0


def test_channel_choice_and_limit(session, campaign):
    now = utcnow()
    for key in ("a", "b", "c"):
        contact = add_contact(session, campaign, key, phone="+1415555010" + str(len(key)))
        add_message(session, campaign, contact, sent_at=now - timedelta(days=4))
        add_message(session, campaign, contact, channel="sms", sent_at=now - timedelta(days=4))
    assert plan(session, campaign, now=now, channels=["sms"], dry_run=True) == 3
    assert plan(session, campaign, now=now, dry_run=True, limit=4) == 4
    assert reminders(session) == []  # dry runs wrote nothing
    assert plan(session, campaign, now=now, channels=["sms"], limit=2) == 2
    assert {r.channel for r in reminders(session)} == {"sms"}
    assert plan(session, campaign, now=now) == 4
    assert len(reminders(session)) == 6
    with pytest.raises(NotifyError, match="unknown channel"):
        plan(session, campaign, channels=["fax"])


def test_reminder_after_expiry_gets_a_fresh_link(session, campaign):
    now = utcnow()
    contact = add_contact(session, campaign, "a")
    first = add_message(session, campaign, contact, sent_at=now - timedelta(days=15))
    old_token = issue_token(session, campaign, contact.id, first.id, now=now - timedelta(days=15))
    assert counts(session, campaign, now)["expired"] == 1
    assert plan(session, campaign, now=now) == 1
    reminder = reminders(session)[0]
    # What the engine does at send time: a new token for the reminder message.
    new_token = issue_token(session, campaign, contact.id, reminder.id, now=now)
    assert new_token and new_token != old_token
    assert counts(session, campaign, now) == {"pending": 1, "completed": 0, "expired": 0}
    assert (
        complete(session, campaign, token=old_token, completed_at=now, source="webhook").status
        == 410
    )
    assert (
        complete(session, campaign, token=new_token, completed_at=now, source="webhook").status
        == 200
    )
    assert counts(session, campaign, now)["completed"] == 1  # no reminder is due


def test_concurrent_runs_create_nothing_twice(engine, campaign_file):
    now = utcnow()
    with db.session_scope(engine) as session:
        campaign = make_campaign(session, campaign_file)
        for n in range(40):
            contact = add_contact(session, campaign, f"c{n}", phone=f"+1415555{n:04d}")
            add_message(session, campaign, contact, sent_at=now - timedelta(days=4))
            add_message(session, campaign, contact, channel="sms", sent_at=now - timedelta(days=4))
    barrier = threading.Barrier(2)
    created: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            with db.session_scope(engine) as session:
                created.append(plan(session, campaign, now=now))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(created)[-1] + sorted(created)[0] == 80
    with db.session_scope(engine) as session:
        assert len(reminders(session)) == 80
        assert (
            session.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.kind == "pending", Event.source == "reset")
            )
            == 80
        )
        # And a third, later run still finds nothing new to plan.
        assert plan(session, campaign, now=now) == 0


# --------------------------------------------------------------------------- CLI


def run(*args, **kwargs):
    return CliRunner().invoke(main, list(args), **kwargs)


def seed_due(env, campaign_file) -> None:
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        campaign = make_campaign(session, campaign_file)
        for key in ("a", "b"):
            contact = add_contact(session, campaign, key)
            add_message(session, campaign, contact, sent_at=utcnow() - timedelta(days=4))


def test_cli_remind_bad_duration_is_one_line(env, campaign_file):
    seed_due(env, campaign_file)
    result = run("remind", "acme-2026-11", "--after", "72x")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: --after: '72x' is not a duration (examples: 72h, 3d, 90m, 1h30m)"
    )
    unknown = run("remind", "nope", "--after", "72h", "--yes")
    assert unknown.exit_code == 1 and unknown.output.startswith("Error: unknown campaign")


def test_cli_remind_dry_run_plans_nothing(env, campaign_file):
    seed_due(env, campaign_file)
    result = run("remind", "acme-2026-11", "--after", "3d", "--dry-run")
    assert result.exit_code == 0, result.output
    assert (
        "Dry run (nothing planned or sent): 2 reminders due now for 'acme-2026-11' on email, sms."
    ) in result.output
    later = run("remind", "acme-2026-11", "--after", "5d", "--dry-run", "--json")
    assert json.loads(later.output.strip().splitlines()[-1])["reminders_due"] == 0
    no_tty = run("remind", "acme-2026-11", "--after", "3d")  # no --yes, nobody to ask
    assert no_tty.exit_code == 1 and "add --yes" in no_tty.output
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        assert reminders(session) == []
        assert (
            session.scalar(
                select(func.count()).select_from(AuditRecord).where(AuditRecord.command == "remind")
            )
            == 0
        )


def test_cli_remind_end_to_end_sends_through_the_engine(env, campaign_file, tmp_path):
    pytest.importorskip("notify.send.runner", reason="send engine not written yet")
    seed_due(env, campaign_file)
    result = run("remind", "acme-2026-11", "--after", "72h", "--channel", "email", "--yes")
    assert result.exit_code == 0, result.output
    assert "Planned 2 reminder(s)." in result.output
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        rows = reminders(session)
        assert [(r.sequence, r.status) for r in rows] == [(1, "sent"), (1, "sent")]
        # Each reminder carried its own fresh link, and only the link's hash is stored.
        hashes = set(
            session.scalars(
                select(ResetToken.token_hash).where(ResetToken.message_id.in_([r.id for r in rows]))
            )
        )
        assert len(hashes) == 2
    sent = sorted((tmp_path / "outbox" / "email").glob("*.eml"))
    assert len(sent) == 2
    for path in sent:
        text = path.read_text()
        tokens = set(re.findall(r"reset\?token=([A-Za-z0-9_-]{43,})", text))
        assert len(tokens) == 1 and hash_token(tokens.pop()) in hashes
    again = run("remind", "acme-2026-11", "--after", "72h", "--channel", "email", "--yes")
    assert "Planned 0 reminder(s)." in again.output
    with db.session_scope(engine) as session:
        audits = session.scalars(
            select(AuditRecord).where(AuditRecord.command == "remind").order_by(AuditRecord.id)
        ).all()
        assert [a.counts["reminders_planned"] for a in audits] == [2, 0]
        assert audits[0].counts["email"]["sent"] == 2
