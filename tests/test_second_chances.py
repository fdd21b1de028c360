"""Second chances: corrected addresses reach people, and `notify requeue` after failures.

Real sends throughout: email through the aiosmtpd sink (rejecting, then accepting), SMS to
the outbox the test environment asks for.
"""

from __future__ import annotations

import csv
import json
from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import select, update

from notify import db, requeue
from notify.cli import main
from notify.config import load_settings
from notify.models import AuditRecord, Contact, Event, Message
from notify.resets.reminders import plan_reminders
from notify.send.options import SendOptions
from notify.send.plan import plan
from notify.send.runner import send_campaign
from tests.factories import add_contacts, campaign_toml, make_campaign, point_at
from tests.smtp_sink import SmtpSink


def run(*args):
    return CliRunner().invoke(main, list(args))


def send(engine, name):
    return send_campaign(
        engine, load_settings(), name, SendOptions(email_rate=0, sms_rate=0, progress=False)
    )


def rows(engine, key, channel="email"):
    with db.session_scope(engine) as session:
        return session.execute(
            select(
                Message.sequence, Message.notice, Message.status, Message.address, Message.transport
            )
            .join(Contact, Contact.id == Message.contact_id)
            .where(Contact.key == key, Message.channel == channel)
            .order_by(Message.sequence)
        ).all()


def set_contact(engine, key, **values):
    with db.session_scope(engine) as session:
        session.execute(update(Contact).where(Contact.key == key).values(**values))


def test_corrected_addresses_get_a_new_message_on_the_next_send(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, fallback='"none"'))
    add_contacts(engine, campaign, 4)  # C-00000..3 with email and phone
    set_contact(engine, "C-00002", email=None)  # skipped: no email address
    set_contact(engine, "C-00003", phone=None)  # skipped: no phone number
    with SmtpSink(reject={"user1@example.com"}) as sink:
        point_at(monkeypatch, sink)
        send(engine, campaign.name)
    assert rows(engine, "C-00001")[0][2] == "failed"
    assert rows(engine, "C-00002")[0][2] == "skipped"
    # The corrections (what `contacts import --update` does, here straight on the rows).
    set_contact(engine, "C-00000", email="new0@example.com")  # reached already: nothing
    set_contact(engine, "C-00001", email="fixed1@example.com")
    set_contact(engine, "C-00002", email="added2@example.com")
    set_contact(engine, "C-00003", phone="+14155559999")
    with SmtpSink(reject={"user1@example.com"}) as sink:
        point_at(monkeypatch, sink)
        summary = send(engine, campaign.name)
        received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == ["added2@example.com", "fixed1@example.com"]
    assert summary.planned == {"email": 2, "sms": 1}
    assert rows(engine, "C-00001") == [
        (0, "notice", "failed", "user1@example.com", f"smtp:{sink.host}"),
        (1, "notice", "sent", "fixed1@example.com", f"smtp:{sink.host}"),
    ]
    assert [r[2:4] for r in rows(engine, "C-00002")] == [
        ("skipped", None),
        ("sent", "added2@example.com"),
    ]
    assert [r[2:4] for r in rows(engine, "C-00003", "sms")] == [
        ("skipped", None),
        ("sent", "+14155559999"),
    ]
    assert len(rows(engine, "C-00000")) == 1  # it reached them: the old address stands
    # Nothing more on the next run: the new messages are the last, and they reached.
    assert send(engine, campaign.name).planned == {"email": 0, "sms": 0}
    lookup = run("lookup", "C-00001")
    assert "  email notice: failed to user1@example.com via smtp" in lookup.stdout
    assert "  email notice 1: sent to fixed1@example.com via smtp" in lookup.stdout
    verdict = lookup.stdout.splitlines()[0]
    assert verdict.startswith("Reached by ") and "email" in verdict  # by the new message
    assert "failed" not in verdict
    assert run("export", "deliveries", campaign.name, "-o", "d.csv").exit_code == 0
    with open(tmp_path / "d.csv", newline="") as handle:
        exported = [
            r
            for r in csv.DictReader(handle)
            if r["contact_key"] == "C-00001" and r["channel"] == "email"
        ]
    assert [(r["status"], r["address"]) for r in exported] == [
        ("failed", "user1@example.com"),
        ("sent", "fixed1@example.com"),
    ]
    with db.session_scope(engine) as session:
        planned = session.scalars(
            select(Event.detail).where(Event.source == "plan", Event.kind == "pending")
        ).all()
    assert planned == [{"planned": "correction", "reason": "address changed"}] * 3


def test_an_unchanged_address_or_one_in_flight_gets_nothing(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
    )
    add_contacts(engine, campaign, 2)
    with db.session_scope(engine) as session:
        plan(session, campaign, ("email",))
        session.execute(update(Message).where(Message.contact_id == 1).values(status="bounced"))
    set_contact(engine, "C-00001", email="other@example.com")  # still pending: in flight
    with db.session_scope(engine) as session:
        assert requeue.plan_corrections(session, campaign, ("email",)) == {"email": 0}


def test_requeue_gives_final_failures_another_chance(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
    )
    add_contacts(engine, campaign, 4, exposures="passwords")
    refused = {"user1@example.com", "user2@example.com"}
    with SmtpSink(reject=refused) as sink:
        point_at(monkeypatch, sink)
        send(engine, campaign.name)
    with db.session_scope(engine) as session:  # one of them bounced later instead
        session.execute(
            update(Message)
            .where(Message.address == "user3@example.com")
            .values(status="bounced", error_code="5.1.1")
        )
    dry = run("requeue", campaign.name, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["by_channel"] == {"email": {"failed": 2, "bounced": 1}}
    assert len(rows(engine, "C-00001")) == 1  # the dry run changed nothing
    no_tty = run("requeue", campaign.name)
    assert no_tty.exit_code == 1 and "add --yes" in no_tty.output
    only = run("requeue", campaign.name, "--status", "bounced", "--error-code", "5.1.1", "--yes")
    assert only.exit_code == 0, only.output
    assert only.stdout.startswith(f"Requeued 1 message(s) of {campaign.name} (email: 1 bounced)")
    done = run("requeue", campaign.name, "--yes")
    assert done.exit_code == 0 and "Requeued 2 message(s)" in done.stdout
    again = run("requeue", campaign.name, "--yes")
    assert "Nothing to requeue" in again.stdout  # planned once, whatever the re-runs
    with SmtpSink() as sink:  # the relay accepts them now
        point_at(monkeypatch, sink)
        summary = send(engine, campaign.name)
        received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == ["user1@example.com", "user2@example.com", "user3@example.com"]
    assert summary.count("sent") == 3
    assert [r[:3] for r in rows(engine, "C-00001")] == [
        (0, "notice", "failed"),
        (1, "notice", "sent"),
    ]
    assert [r[:3] for r in rows(engine, "C-00003")] == [
        (0, "notice", "bounced"),
        (1, "notice", "sent"),
    ]
    assert len(rows(engine, "C-00000")) == 1  # reached the first time: never requeued
    with db.session_scope(engine) as session:
        audits = session.scalars(select(AuditRecord).where(AuditRecord.command == "requeue")).all()
        assert [(a.arguments["status"], a.counts["requeued"]) for a in audits] == [
            ("bounced", 1),
            (None, 2),
            (None, 0),
        ]
        assert session.scalar(select(Event.id).where(Event.source == "requeue")) is not None
        # A reminder after a requeued message takes the next sequence: no collision.
        created = plan_reminders(
            session, campaign, timedelta(0), 2, ["email"], now=summary_time(engine)
        )
    assert created == 4
    assert [r[:3] for r in rows(engine, "C-00001")][-1] == (2, "reminder", "pending")
    assert [r[:3] for r in rows(engine, "C-00000")][-1] == (1, "reminder", "pending")


def summary_time(engine):
    with db.session_scope(engine) as session:
        return max(
            session.scalars(select(Message.sent_at).where(Message.sent_at.is_not(None)))
        ) + timedelta(seconds=1)


def test_requeue_refuses_an_unknown_campaign_in_one_line(env, tmp_path):
    db.connect(env["NOTIFY_DATABASE_URL"])
    result = run("requeue", "nope", "--yes")
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown campaign 'nope'")


def test_requeue_of_a_channel_the_campaign_does_not_use_is_an_error(env, tmp_path):
    """Not "nothing to requeue": the operator asked for the wrong channel."""
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
    )
    result = run("requeue", campaign.name, "--channel", "sms", "--yes")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: --channel sms: the campaign {campaign.name} does not use it (channels: email)\n"
    )


def test_a_requeued_message_that_fails_again_is_requeued_after_itself(env, tmp_path):
    """Only the last message of a channel counts: two failures are one more chance, with
    the sequence after the latest."""
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
    )
    add_contacts(engine, campaign, 1)
    with db.session_scope(engine) as session:
        plan(session, campaign, ("email",))
        session.execute(update(Message).values(status="failed", error_code="550"))
    for expected in (1, 2):
        with db.session_scope(engine) as session:
            dry = requeue.requeue(session, campaign, dry_run=True)
            assert dry.as_dict()["by_channel"] == {"email": {"failed": 1}}
            assert requeue.requeue(session, campaign).total == 1
        assert [r[:3] for r in rows(engine, "C-00000")][-1] == (expected, "notice", "pending")
        with db.session_scope(engine) as session:  # it fails again
            session.execute(
                update(Message)
                .where(Message.sequence == expected)
                .values(status="failed", error_code="550")
            )
    assert [r[2] for r in rows(engine, "C-00000")] == ["failed", "failed", "failed"]


def test_a_corrected_import_reaches_the_person_end_to_end(env, tmp_path, monkeypatch):
    """The whole path support follows: an invalid email is skipped, a bounced one fails; the
    list is fixed and re-imported with --update; the next send reaches both."""
    path = campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
    assert run("campaign", "load", str(path)).exit_code == 0
    first = tmp_path / "first.csv"
    first.write_text(
        "key,name,email,phone,exposures\nC-1,Ann,,+14155550100,card\n"
        "C-2,Bob,bob@old.example,,card\nC-3,Cy,cy@example.com,,card\n"
    )
    assert run("contacts", "import", str(first), "--campaign", "acme-2026-11").exit_code == 0
    with SmtpSink(reject={"bob@old.example"}) as sink:
        point_at(monkeypatch, sink)
        assert run("send", "acme-2026-11", "--yes").exit_code == 0
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    assert [r[2] for r in rows(engine, "C-1")] == ["skipped"]
    assert [r[2] for r in rows(engine, "C-2")] == ["failed"]
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(
        "key,name,email,phone,exposures\nC-1,Ann,ann@example.com,+14155550100,"
        "card\nC-2,Bob,bob@new.example,,card\n"
    )
    imported = run("contacts", "import", str(fixed), "--campaign", "acme-2026-11", "--update")
    assert imported.exit_code == 0, imported.output
    with SmtpSink(reject={"bob@old.example"}) as sink:
        point_at(monkeypatch, sink)
        sent = run("send", "acme-2026-11", "--yes")
        assert sent.exit_code == 0, sent.output
        assert sorted(r.rcpt_tos[0] for r in sink.received) == [
            "ann@example.com",
            "bob@new.example",
        ]
    assert [r[2:4] for r in rows(engine, "C-2")] == [
        ("failed", "bob@old.example"),
        ("sent", "bob@new.example"),
    ]
    lookup = run("lookup", "C-2")
    assert lookup.stdout.startswith("Reached by email on ")
    assert "failed to bob@old.example" in lookup.stdout
    assert len(rows(engine, "C-3")) == 1
