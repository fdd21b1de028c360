"""The send engine on the embedded outbox: everyone once per channel, resumable, dry run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from notify import db
from notify.cli import main
from notify.config import load_settings
from notify.models import Event, Message
from notify.send.options import SendOptions
from notify.send.runner import send_campaign
from tests.factories import add_contacts, campaign_toml, count, make_campaign


def _sms_lines(outbox: Path) -> list[dict]:
    path = outbox / "sms.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if path.exists()
        else []
    )


def test_send_everyone_once_then_nothing(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, 12, exposures="identity;card;passwords")
    add_contacts(engine, campaign, 3, start=100, phones=False, exposures="card")
    settings = load_settings()
    options = SendOptions(email_rate=0, sms_rate=0, progress=False)
    summary = send_campaign(engine, settings, campaign.name, options)
    assert summary.count("sent", "email") == 15
    assert summary.count("sent", "sms") == 12
    outbox = Path(env["NOTIFY_OUTBOX"])
    assert len(list((outbox / "email").glob("*.eml"))) == 15
    assert len(_sms_lines(outbox)) == 12
    with db.session_scope(engine) as session:
        skipped = session.scalars(select(Message).where(Message.status == "skipped")).all()
        assert [m.skip_reason for m in skipped] == ["no phone number"] * 3
        sent = session.scalars(select(Message).where(Message.status == "sent")).all()
        assert all(m.content_sha256 and m.template_version and m.attempts == 1 for m in sent)
        templates_used = Counter(m.template for m in sent)
        assert templates_used == {"identity/notice": 24, "card/notice": 3}
        # every status change is an event: sending + sent per message, skipped once each
        assert count(session, Event, Event.kind == "sending") == 27
        assert count(session, Event, Event.kind == "sent") == 27
        assert count(session, Event, Event.kind == "skipped") == 3
    again = send_campaign(engine, settings, campaign.name, options)
    assert again.count("sent") == 0
    assert len(list((outbox / "email").glob("*.eml"))) == 15
    assert len(_sms_lines(outbox)) == 12


def test_new_contacts_after_a_send_get_only_their_messages(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 5)
    options = SendOptions(email_rate=0, progress=False)
    send_campaign(engine, load_settings(), campaign.name, options)
    add_contacts(engine, campaign, 2, start=50)
    summary = send_campaign(engine, load_settings(), campaign.name, options)
    assert summary.count("sent", "email") == 2
    assert summary.planned["email"] == 2


def test_dry_run_renders_and_counts_but_writes_nothing(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, 4, exposures="passwords")
    result = CliRunner().invoke(main, ["send", campaign.name, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert data["dry_run"] is True
    assert data["run"] == {"email": {"would_send": 4}, "sms": {"would_send": 4}}
    with db.session_scope(engine) as session:
        assert count(session, Message) == 0
    assert not (Path(env["NOTIFY_OUTBOX"]) / "email").exists()


def test_limit_sends_at_most_n(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 10)
    result = CliRunner().invoke(
        main, ["send", campaign.name, "--limit", "4", "--yes", "--email-rate", "0"]
    )
    assert result.exit_code == 0, result.output
    with db.session_scope(engine) as session:
        assert count(session, Message, Message.status == "sent") == 4
        assert count(session, Message, Message.status == "pending") == 6
        assert count(session, Message, Message.lease_owner.is_not(None)) == 0


def test_send_without_yes_off_terminal_refuses(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, 2)
    result = CliRunner().invoke(main, ["send", campaign.name])
    assert result.exit_code == 1
    assert "add --yes" in result.output
    with db.session_scope(engine) as session:
        assert count(session, Message) == 0


def test_unknown_campaign_is_one_line(env):
    db.connect(env["NOTIFY_DATABASE_URL"])  # an existing database without that campaign
    result = CliRunner().invoke(main, ["send", "nope", "--yes"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: unknown campaign 'nope' (load it with: notify campaign load FILE)"
    )


def test_reset_links_are_issued_per_message(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, 2, exposures="passwords")
    add_contacts(engine, campaign, 1, start=10, exposures="card")
    send_campaign(
        engine,
        load_settings(),
        campaign.name,
        SendOptions(email_rate=0, sms_rate=0, progress=False),
    )
    outbox = Path(env["NOTIFY_OUTBOX"])
    bodies = [line["body"] for line in _sms_lines(outbox)]
    with_link = [b for b in bodies if "reset?token=" in b]
    assert len(with_link) == 2  # passwords contacts only
    from notify.models import PasswordReset, ResetToken

    with db.session_scope(engine) as session:
        resets = session.scalars(select(PasswordReset)).all()
        assert sorted(r.links_sent for r in resets) == [2, 2]  # email + SMS each
        hashes = set(session.scalars(select(ResetToken.token_hash)))
    token = with_link[0].split("reset?token=")[1].split()[0].rstrip(".")
    import hashlib

    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert token not in str(hashes)


def test_reminder_after_a_completed_reset_is_skipped_not_sent(env, tmp_path):
    from datetime import timedelta

    from notify import campaigns
    from notify.models import utcnow
    from notify.resets.completions import complete
    from notify.resets.reminders import plan_reminders

    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 2, exposures="passwords")
    options = SendOptions(email_rate=0, progress=False)
    send_campaign(engine, load_settings(), campaign.name, options)
    later = utcnow() + timedelta(hours=80)
    with db.session_scope(engine) as session:
        stored = campaigns.get_campaign(session, campaign.name)
        planned = plan_reminders(session, stored, timedelta(hours=72), 2, ["email"], now=later)
        assert planned == 2
        done = complete(session, stored, key="C-00000", completed_at=utcnow(), source="test")
        assert done.status == 200
    summary = send_campaign(
        engine,
        load_settings(),
        campaign.name,
        SendOptions(email_rate=0, progress=False, notice="reminder"),
    )
    assert summary.count("sent") == 1
    with db.session_scope(engine) as session:
        reminders = {
            m.contact_id: (m.status, m.skip_reason)
            for m in session.scalars(select(Message).where(Message.notice == "reminder"))
        }
        first_notices = count(session, Message, Message.notice == "notice")
    assert sorted(reminders.values()) == [("sent", None), ("skipped", "reset completed")]
    assert first_notices == 2  # remind planned no new first notices
