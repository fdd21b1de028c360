"""Where messages go: the outbox folder only when asked for, and every message says where it
went (prompt, lookup, export, audit). A job that lost its environment must not "notify"
everyone into a folder."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import db
from notify.cli import main
from notify.models import AuditRecord, Message, PasswordReset
from tests.factories import add_contacts, campaign_toml, make_campaign, point_at
from tests.smtp_sink import SmtpSink

TWILIO_SID = re.compile(r"SM[0-9a-f]{32}")


def run(*args, **kw):
    return CliRunner().invoke(main, list(args), **kw)


@pytest.fixture
def no_outbox(env, monkeypatch):
    """The test's environment without NOTIFY_OUTBOX: no transport asked for at all."""
    monkeypatch.delenv("NOTIFY_OUTBOX")
    return env


def setup_campaign(env, tmp_path, n=3, **changes):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, **changes))
    add_contacts(engine, campaign, n, exposures="card;passwords")
    return engine, campaign


def messages(engine):
    with db.session_scope(engine) as session:
        return session.scalars(select(Message).order_by(Message.id)).all()


def audits(engine, command="send"):
    with db.session_scope(engine) as session:
        return session.scalars(select(AuditRecord).where(AuditRecord.command == command)).all()


def test_no_provider_and_no_outbox_is_one_line_and_changes_nothing(no_outbox, tmp_path):
    engine, campaign = setup_campaign(no_outbox, tmp_path)
    for args in (
        ["send", campaign.name, "--yes"],
        ["send", campaign.name, "--dry-run"],
        ["remind", campaign.name, "--after", "1h", "--yes"],
    ):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert result.output == (
            "Error: email: no provider configured: set NOTIFY_SMTP_HOST (and NOTIFY_SMTP_PORT, "
            "NOTIFY_SMTP_USERNAME, NOTIFY_SMTP_PASSWORD), or ask for the outbox folder with "
            "--outbox or NOTIFY_OUTBOX\n"
        )
    assert messages(engine) == []
    # Only the evidence of the refused run (failed runs are audited too), nothing sent.
    assert [(a.outcome, a.counts.get("error", "")[:25]) for a in audits(engine)] == [
        ("failed", "email: no provider config")
    ]
    with db.session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(PasswordReset)) == 0
    assert not (tmp_path / "outbox").exists()


def test_a_channel_without_provider_stops_the_others_too(no_outbox, tmp_path, monkeypatch):
    engine, campaign = setup_campaign(no_outbox, tmp_path)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        result = run("send", campaign.name, "--yes")
        assert sink.received == []
    assert result.exit_code == 1
    assert result.output == (
        "Error: sms: no provider configured: set TWILIO_ACCOUNT_SID and "
        "TWILIO_AUTH_TOKEN, or ask for the outbox folder with --outbox "
        "or NOTIFY_OUTBOX\n"
    )
    assert messages(engine) == []


def test_outbox_flag_records_outbox_everywhere(no_outbox, tmp_path):
    engine, campaign = setup_campaign(no_outbox, tmp_path)
    result = run("send", campaign.name, "--outbox", "--yes", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["transports"] == {"email": "outbox", "sms": "outbox"}
    rows = messages(engine)
    assert len(rows) == 6 and {(m.status, m.transport) for m in rows} == {("sent", "outbox")}
    outbox = tmp_path / "outbox"  # ./outbox: NOTIFY_OUTBOX is not set
    assert len(list((outbox / "email").glob("*.eml"))) == 3
    sids = [json.loads(line)["sid"] for line in (outbox / "sms.jsonl").read_text().splitlines()]
    assert len(sids) == 3
    assert not any(TWILIO_SID.fullmatch(s) for s in sids)  # never taken for Twilio's
    assert {m.provider_message_id for m in rows if m.channel == "sms"} == set(sids)
    (record,) = audits(engine)
    assert (record.arguments["email_transport"], record.arguments["sms_transport"]) == (
        "outbox",
        "outbox",
    )
    lookup = run("lookup", "C-00001")
    assert "  email notice: sent to user1@example.com via outbox;" in lookup.stdout
    assert "  SMS notice: sent to +14155550001 via outbox;" in lookup.stdout
    assert run("export", "deliveries", campaign.name, "-o", "d.csv").exit_code == 0
    with open(tmp_path / "d.csv", newline="") as handle:
        exported = list(csv.DictReader(handle))
    assert list(exported[0])[19] == "transport"  # first of the appended columns
    assert {r["transport"] for r in exported} == {"outbox"}


def test_smtp_is_recorded_with_its_host_and_outbox_env_only_fills_gaps(env, tmp_path, monkeypatch):
    engine, campaign = setup_campaign(env, tmp_path)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        result = run("send", campaign.name, "--yes")
        assert result.exit_code == 0, result.output
        assert len(sink.received) == 3
    # NOTIFY_OUTBOX is set (env fixture): SMS, which has no provider, goes there; email
    # goes to the relay.
    assert {(m.channel, m.transport) for m in messages(engine)} == {
        ("email", f"smtp:{sink.host}"),
        ("sms", "outbox"),
    }
    with open(Path(env["NOTIFY_OUTBOX"]) / "sms.jsonl") as handle:
        assert len(handle.readlines()) == 3


def test_outbox_flag_wins_over_a_configured_relay(env, tmp_path, monkeypatch):
    engine, campaign = setup_campaign(env, tmp_path, channels='["email"]', fallback='"none"')
    with SmtpSink() as sink:
        monkeypatch.setenv("NOTIFY_SMTP_HOST", sink.host)
        monkeypatch.setenv("NOTIFY_SMTP_PORT", str(sink.port))
        result = run("send", campaign.name, "--outbox", "--yes")
        assert result.exit_code == 0, result.output
        assert sink.received == []
    assert {m.transport for m in messages(engine)} == {"outbox"}


def test_the_prompt_says_where_each_channel_goes(no_outbox, tmp_path, monkeypatch):
    engine, campaign = setup_campaign(no_outbox, tmp_path)
    asked = []

    def confirm(text, default=False):
        asked.append(text)
        return False

    monkeypatch.setattr("click.confirm", confirm)
    # On a terminal: nothing is refused for want of --yes (CliRunner's stdin is not one).
    monkeypatch.setattr("notify.cli.send.require_terminal", lambda about: None)
    result = run("send", campaign.name, "--outbox")
    assert result.exit_code == 0, result.output
    folder = (tmp_path / "outbox").resolve()
    assert asked == [
        f"Send 3 email to outbox folder {folder}, 3 sms to outbox folder "
        f"{folder} for campaign {campaign.name}?"
    ]
    assert "Nothing sent." in result.output
    assert messages(engine) == []


def test_links_sent_counts_handed_over_messages_only(env, tmp_path, monkeypatch):
    """Every email fails before the hand-over: no link reached anyone (was: one per try)."""
    engine, campaign = setup_campaign(env, tmp_path, channels='["email"]', fallback='"none"')
    lookup = run("lookup", "C-00000")
    assert "Reset: required (passwords exposed), no link sent yet" in lookup.stdout
    status = run("status", campaign.name, "--json")
    resets = json.loads(status.stdout)["resets"]
    assert (resets["total"], resets["pending"], resets["before_first_send"]) == (3, 3, True)
    assert (
        "Resets:      3 required (passwords exposed), no link sent yet"
        in run("status", campaign.name).stdout
    )
    with SmtpSink(fail_every=1) as sink:  # 451 to every DATA: transient, until attempts end
        point_at(monkeypatch, sink)
        from notify.config import load_settings
        from notify.send.options import SendOptions
        from notify.send.runner import send_campaign

        send_campaign(
            engine,
            load_settings(),
            campaign.name,
            SendOptions(email_rate=0, retry_base=0.01, progress=False),
        )
    rows = messages(engine)
    assert {m.status for m in rows} == {"failed"} and all(m.attempts > 1 for m in rows)
    with db.session_scope(engine) as session:
        links = session.scalars(select(PasswordReset.links_sent)).all()
    assert links == [0, 0, 0]
    lookup = run("lookup", "C-00000")
    assert "Reset: required (passwords exposed), no link sent yet" in lookup.stdout
    # Handed over: counted once per message, however many attempts it took.
    with SmtpSink(fail_every=2) as sink:
        monkeypatch.setenv("NOTIFY_SMTP_PORT", str(sink.port))
        other, _ = setup_second(engine, tmp_path)
        from notify.config import load_settings
        from notify.send.options import SendOptions
        from notify.send.runner import send_campaign

        send_campaign(
            engine,
            load_settings(),
            other.name,
            SendOptions(email_rate=0, retry_base=0.01, progress=False),
        )
    with db.session_scope(engine) as session:
        sent = session.scalars(select(Message).where(Message.campaign_id == other.id)).all()
        assert {m.status for m in sent} == {"sent"} and any(m.attempts > 1 for m in sent)
        links = session.scalars(
            select(PasswordReset.links_sent).where(PasswordReset.campaign_id == other.id)
        ).all()
    assert links == [1, 1, 1]


def setup_second(engine, tmp_path):
    folder = tmp_path / "second"
    folder.mkdir()
    campaign = make_campaign(
        engine,
        campaign_toml(folder, name='"acme-2027-01"', channels='["email"]', fallback='"none"'),
    )
    add_contacts(engine, campaign, 3, exposures="passwords", start=50)
    return campaign, None
