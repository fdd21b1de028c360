"""Words that say what happened: each summary the issue names, exactly as printed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import select

from notify import db, localtime
from notify.cli import main
from notify.cli.remind import next_due_text
from notify.models import Campaign, Contact, Message, PasswordReset, utcnow
from notify.resets.reminders import Upcoming, plan_reminders, upcoming_reminders
from notify.resets.tokens import ensure_resets
from tests.factories import add_contacts, campaign_toml, count, make_campaign
from tests.test_resets import add_contact, add_message
from tests.test_resets import make_campaign as resets_make_campaign


def run(*args, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)


def test_dry_run_says_what_would_be_sent_and_what_is_skipped_why(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, 5)
    add_contacts(engine, campaign, 2, emails=False, start=10)
    add_contacts(engine, campaign, 1, phones=False, start=20)
    result = run("send", campaign.name, "--dry-run")
    lines = result.output.splitlines()
    assert lines[0].startswith(f"Dry run (nothing sent): campaign {campaign.name} in ")
    assert lines[1:] == [
        "  email: 6 would be sent, 2 skipped (no address)",
        "  sms: 7 would be sent, 1 skipped (no address)",
    ]
    data = json.loads(run("send", campaign.name, "--dry-run", "--json").output)
    assert data["run"] == {"email": {"would_send": 6}, "sms": {"would_send": 7}}
    assert data["skipped"] == {"email": {"no_address": 2}, "sms": {"no_address": 1}}
    with db.session_scope(engine) as session:
        assert count(session, Message) == 0  # a dry run plans nothing
    run("send", campaign.name, "--yes", "--channel", "email", "--email-rate", "0")
    after = run("send", campaign.name, "--dry-run").output.splitlines()
    assert after[1:] == [
        "  email: 0 would be sent, 6 already sent, 2 skipped (no address)",
        "  sms: 7 would be sent, 1 skipped (no address)",
    ]


def _reminder_campaign(env, campaign_file, sent: dict[str, datetime]):
    """Contacts with exposed passwords whose first email was sent at the given times."""
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        campaign = resets_make_campaign(session, campaign_file)
        for key, at in sent.items():
            add_message(session, campaign, add_contact(session, campaign, key), sent_at=at)
    return engine


def test_upcoming_reminders_with_the_clock_injected(env, campaign_file):
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    engine = _reminder_campaign(
        env,
        campaign_file,
        {
            "due": now - timedelta(days=4),
            "soon": now - timedelta(days=2),
            "later": now - timedelta(hours=30),
            "reset": now - timedelta(days=1),
        },
    )
    with db.session_scope(engine) as session:
        campaign = session.scalar(select(Campaign))
        ensure_resets(session, campaign)
        session.scalar(
            select(PasswordReset)
            .join(Contact, Contact.id == PasswordReset.contact_id)
            .where(Contact.key == "reset")
        ).status = "completed"
        session.flush()
        upcoming = upcoming_reminders(
            session, campaign, timedelta(hours=72), 2, ("email",), now=now
        )
        assert upcoming == Upcoming(2, now + timedelta(days=1), now + timedelta(hours=42))
        assert (
            plan_reminders(
                session, campaign, timedelta(hours=72), 2, ("email",), now=now, dry_run=True
            )
            == 1
        )
        text = next_due_text("acme-2026-11", upcoming, "72h", localtime.named_zone("Europe/Berlin"))
    assert text == (
        "Next: 2 reminders fall due from 2026-11-28 11:00 CET to 2026-11-29 "
        "05:00 CET (unless those contacts reset); run notify remind acme-2026-11 "
        "--after 72h then."
    )
    assert next_due_text("x", Upcoming(), "3d").startswith("Next: none will fall due")


def test_remind_dry_run_names_when_the_next_reminders_fall_due(env, campaign_file):
    sent = utcnow() - timedelta(days=1)
    _reminder_campaign(
        env,
        campaign_file,
        {"a": sent, "b": sent - timedelta(hours=2), "c": sent - timedelta(days=5)},
    )
    result = run("remind", "acme-2026-11", "--after", "3d", "--dry-run", "--channel", "email")
    first, last = sent - timedelta(hours=2) + timedelta(days=3), sent + timedelta(days=3)
    assert result.output.splitlines() == [
        "Dry run (nothing planned or sent): 1 reminder due now for 'acme-2026-11' on email.",
        f"Next: 2 reminders fall due from {localtime.show(first)} to {localtime.show(last)} "
        "(unless those contacts reset); run notify remind acme-2026-11 --after 3d then.",
    ]
    data = json.loads(run("remind", "acme-2026-11", "--after", "3d", "--dry-run", "--json").output)
    assert data["next_due"] == {
        "count": 2,
        "first_at": localtime.iso_utc(first),
        "last_at": localtime.iso_utc(last),
    }
    local = run(
        "remind",
        "acme-2026-11",
        "--after",
        "3d",
        "--dry-run",
        "--channel",
        "email",
        env={"NOTIFY_TIMEZONE": "Asia/Tokyo"},
    ).output
    assert f"to {localtime.show(last, localtime.named_zone('Asia/Tokyo'))} (unless" in local
    assert "JST" in local


def test_reimport_says_nothing_new_and_what_changed(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    source = tmp_path / "list.csv"
    source.write_text(
        "id,email,exposure\nA,a@example.com,card\nB,b@example.com,card\n"
        "A,a@example.com,card\nC,c@example.com,identity\n"
    )
    first = run("contacts", "import", str(source), "--campaign", campaign.name)
    assert first.output.splitlines()[0] == (
        f"Imported {source} into {campaign.name}: 4 rows: 3 new, 0 already present, "
        "0 changed; 1 repeated in the file."
    )
    again = run("contacts", "import", str(source), "--campaign", campaign.name, "--json")
    assert again.output.splitlines()[0] == (
        f"Imported {source} into {campaign.name}: 4 rows: 0 new, 3 already present, "
        "0 changed; 1 repeated in the file."
    )
    counts = json.loads(again.output.splitlines()[-1])
    assert (counts["imported"], counts["merged"]) == (0, 4)
    # One known contact gains an exposure, one is new: the words say exactly that.
    source.write_text(
        "id,email,exposure\nA,a@example.com,card;passwords\nB,b@example.com,card\n"
        "D,d@example.com,card\n"
    )
    changed = run("contacts", "import", str(source), "--campaign", campaign.name, "--dry-run")
    assert changed.output.splitlines()[0] == (
        f"Dry run (nothing written): would import {source} into {campaign.name}: 3 rows: "
        "1 new, 2 already present, 1 changed."
    )


def test_a_runs_retries_read_as_retried():
    from collections import Counter

    from notify.send.options import SendSummary

    summary = SendSummary(
        "acme",
        done=Counter({("sms", "retry"): 2, ("sms", "sent"): 34}),
        totals={"sms": {"sent": 34}},
    )
    assert summary.lines()[1] == "  sms: 34 messages (34 sent); this run: 2 retried, 34 sent"


def test_next_reminders_within_one_shown_minute_read_at_that_time():
    from datetime import UTC, datetime

    first = datetime(2026, 12, 9, 1, 34, 5, tzinfo=UTC)
    text = next_due_text("acme", Upcoming(28, first, first + timedelta(seconds=20)), "72h")
    assert text.startswith("Next: 28 reminders fall due at 2026-12-09 01:34 UTC (unless")


def test_a_send_with_no_contacts_says_so(env, campaign_file):
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    result = run("send", "acme-2026-11", "--yes", "--outbox")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == (
        "  no messages: the campaign has no contacts yet (import them with: notify contacts "
        "import FILE --campaign acme-2026-11)"
    )
