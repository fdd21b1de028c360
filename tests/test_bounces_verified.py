"""Bounces are verified: VERP tags through the real SMTP sink, recipient matching only to
recent email (clock injected), every value clipped and cleaned, and a DSN that cannot be
applied skipped and reported while the others apply, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from notify import bounces, campaigns, db, verp
from notify.cli import main
from notify.config import load_settings
from notify.errors import ConfigError
from notify.models import Campaign, Contact, Event, Message
from notify.send.options import SendOptions
from notify.send.plan import plan
from notify.send.runner import send_campaign
from tests.factories import add_contacts, campaign_toml, make_campaign, point_at
from tests.smtp_sink import SmtpSink

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # the injected clock of the matching tests


def dsn(
    recipient: str,
    *,
    returned_to: str = "security@acme.example",
    message_id: str | None = None,
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 user unknown",
    action: str = "failed",
) -> bytes:
    """A Postfix-shaped DSN delivered to ``returned_to`` (the original's envelope sender)."""
    original = f"Message-ID: {message_id}\n" if message_id else ""
    return f"""Return-Path: <>
Delivered-To: {returned_to}
From: MAILER-DAEMON@mail.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {returned_to}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"

--B0UND
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered.

--B0UND
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.net

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--B0UND
Content-Type: text/rfc822-headers

{original}From: Acme Security <security@acme.example>
To: {recipient}
Subject: Notice of Data Breach

--B0UND--
""".replace("\n", "\r\n").encode()


def emails(engine) -> dict[str, Message]:
    """Email rows by address."""
    with db.session_scope(engine) as session:
        return {
            m.address: m for m in session.scalars(select(Message).where(Message.channel == "email"))
        }


def events_of(engine, message_id: int) -> list[Event]:
    with db.session_scope(engine) as session:
        return list(
            session.scalars(
                select(Event).where(Event.message_id == message_id, Event.source == "bounce")
            )
        )


# --- VERP, end to end ----------------------------------------------------------------------------


def test_verp_through_the_smtp_sink_and_back(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine,
        campaign_toml(
            tmp_path,
            channels='["email"]',
            fallback='"none"',
            bounce_address='"Bounces@ACME.example"',
        ),
    )
    add_contacts(engine, campaign, 3)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        summary = send_campaign(
            engine, load_settings(), campaign.name, SendOptions(email_rate=0, progress=False)
        )
        received = {r.rcpt_tos[0]: r.mail_from for r in sink.received}
    assert summary.count("sent", "email") == 3
    rows = emails(engine)
    with db.session_scope(engine) as session:
        secret = verp.key(session)
    for address, mail_from in received.items():  # each email its own verifiable sender
        row = rows[address]
        assert mail_from == verp.envelope_sender("Bounces@acme.example", secret, row.id)
        assert mail_from.startswith(f"Bounces+{row.id}-") and mail_from.endswith("@acme.example")
        assert verp.verify(secret, verp.find_tag(mail_from))
    target, other = rows["user0@example.com"], rows["user1@example.com"]
    folder = tmp_path / "bounces"
    folder.mkdir()
    # Returned to message 0's address; it names another recipient (a forwarding alias) and
    # message 1's Message-ID: the tag decides, for message 0 only.
    (folder / "verp.eml").write_bytes(
        dsn(
            "alias@forwarder.example",
            returned_to=received["user0@example.com"],
            message_id=other.provider_message_id,
        )
    )
    # A forged tag for message 1 (right shape, wrong MAC): skipped, never applied.
    forged = f"bounces+{other.id}-{'0' * verp.MAC_HEX}@acme.example"
    (folder / "forged.eml").write_bytes(
        dsn("user1@example.com", returned_to=forged, message_id=other.provider_message_id)
    )
    result = CliRunner().invoke(main, ["bounces", "import", str(folder)])
    assert result.exit_code == 0, result.output
    assert "Matched: 1 by a verified VERP tag, 0 by recipient" in result.output
    assert (
        f"  {folder / 'forged.eml'}, message 1: its VERP tag ({forged}) does not verify"
        in result.output
    )
    rows = emails(engine)
    assert rows["user0@example.com"].status == "bounced"
    assert rows["user1@example.com"].status == "sent"
    assert rows["user2@example.com"].status == "sent"
    (event,) = events_of(engine, target.id)
    assert event.detail["matched_by"] == "verp" and event.kind == "bounced"
    # A verified tag of another campaign's email is skipped when --campaign names one.
    other_file = tmp_path / "other.toml"
    other_file.write_text(
        campaign_toml(tmp_path).read_text().replace('name = "acme-2026-11"', 'name = "other"')
    )
    assert CliRunner().invoke(main, ["campaign", "load", str(other_file)]).exit_code == 0
    again = CliRunner().invoke(
        main, ["bounces", "import", str(folder / "verp.eml"), "--campaign", "other", "--json"]
    )
    data = json.loads(again.output)
    assert data["skipped"] == 1 and data["skipped_items"] == [
        {
            "file": str(folder / "verp.eml"),
            "position": "message 1",
            "reason": "its VERP tag names an email of another campaign (not other)",
        }
    ]


def test_a_tag_from_another_database_does_not_verify(engine, tmp_path):
    with db.session_scope(engine) as session:
        secret = verp.key(session)
    tag = verp.find_tag(verp.envelope_sender("b@x.example", b"another database", 7))
    assert tag is not None and tag.message_id == 7
    assert not verp.verify(secret, tag)
    assert verp.verify(b"another database", tag)


def test_bounce_address_is_validated(tmp_path):
    for value, problem in (
        ('"not-an-address"', "is not an email address"),
        ('"' + "b" * 30 + '@acme.example"', "at most 23 characters"),
    ):
        with pytest.raises(ConfigError, match=f"bounce_address: .*{problem}"):
            campaigns.parse_campaign_file(campaign_toml(tmp_path, bounce_address=value))
    config = campaigns.parse_campaign_file(
        campaign_toml(tmp_path, bounce_address='"bounces@Acme.Example"')
    )
    assert config.bounce_address == "bounces@acme.example"


def test_without_bounce_address_the_envelope_sender_is_the_sender(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 1)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        send_campaign(
            engine, load_settings(), campaign.name, SendOptions(email_rate=0, progress=False)
        )
        assert [r.mail_from for r in sink.received] == ["security@acme.example"]


# --- recipient matching --------------------------------------------------------------------------


def seed_two_campaigns(engine, tmp_path, a_sent: datetime, b_sent: datetime) -> dict[str, int]:
    """Campaigns a and b, each with an email to shared@example.com sent at the given time."""
    ids = {}
    for name, sent_at in (("a", a_sent), ("b", b_sent)):
        path = tmp_path / f"{name}.toml"
        path.write_text(
            campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
            .read_text()
            .replace('name = "acme-2026-11"', f'name = "{name}"')
        )
        with db.session_scope(engine) as session:
            campaign, _ = campaigns.load_campaign(session, path)
            contact = Contact(
                campaign_id=campaign.id, key="k", email="shared@example.com", exposures="card"
            )
            session.add(contact)
            session.flush()
            row = Message(
                campaign_id=campaign.id,
                contact_id=contact.id,
                channel="email",
                status="sent",
                address="shared@example.com",
                sent_at=sent_at,
                provider_message_id=f"<{name}@acme.example>",
            )
            session.add(row)
            session.flush()
            ids[name] = row.id
    return ids


def import_one(engine, path: Path, *, campaign: str | None = None) -> bounces.ImportReport:
    with db.session_scope(engine) as session:
        chosen = campaigns.get_campaign(session, campaign) if campaign else None
        return bounces.import_path(session, path, campaign=chosen, now=NOW)


def status_of(engine, row_id: int) -> str:
    with db.session_scope(engine) as session:
        return session.get(Message, row_id).status


def test_untagged_dsn_matches_only_email_of_the_last_30_days(engine, tmp_path):
    ids = seed_two_campaigns(
        engine, tmp_path, a_sent=NOW - timedelta(days=31), b_sent=NOW - timedelta(days=29)
    )
    path = tmp_path / "dsn.eml"
    # It names a's Message-ID, but a's email is 31 days old: only b's may match.
    path.write_bytes(dsn("shared@example.com", message_id="<a@acme.example>"))
    within_a = import_one(engine, path, campaign="a")
    assert within_a.unmatched == [f"{path}: shared@example.com"] and within_a.bounced == 0
    assert status_of(engine, ids["a"]) == status_of(engine, ids["b"]) == "sent"
    report = import_one(engine, path)
    assert (report.bounced, report.by_recipient) == (1, 1)
    assert status_of(engine, ids["a"]) == "sent" and status_of(engine, ids["b"]) == "bounced"
    (event,) = events_of(engine, ids["b"])
    assert event.detail["matched_by"] == "recipient"
    assert "matched by recipient" in event.detail["note"]
    assert event.at == NOW


def test_campaign_option_limits_recipient_matching(engine, tmp_path):
    ids = seed_two_campaigns(
        engine, tmp_path, a_sent=NOW - timedelta(days=2), b_sent=NOW - timedelta(days=1)
    )
    path = tmp_path / "dsn.eml"
    path.write_bytes(dsn("shared@example.com"))
    report = import_one(engine, path, campaign="a")  # b's is later, but not in campaign a
    assert report.bounced == 1
    assert status_of(engine, ids["a"]) == "bounced" and status_of(engine, ids["b"]) == "sent"


def test_returned_message_id_picks_among_recent_emails_to_the_address(engine, tmp_path):
    ids = seed_two_campaigns(
        engine, tmp_path, a_sent=NOW - timedelta(days=2), b_sent=NOW - timedelta(days=1)
    )
    path = tmp_path / "dsn.eml"
    path.write_bytes(dsn("shared@example.com", message_id="<a@acme.example>"))
    assert import_one(engine, path).bounced == 1
    assert status_of(engine, ids["a"]) == "bounced" and status_of(engine, ids["b"]) == "sent"


# --- clipping, cleaning, and a DSN the database refuses ------------------------------------------


def refuse_error_code(engine, code: str) -> None:
    """A database trigger refusing one error code: a real refusal of one DSN's write."""
    with engine.begin() as conn:
        if db.is_sqlite(engine):
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_code BEFORE UPDATE OF error_code ON messages "
                    f"WHEN NEW.error_code = '{code}' "
                    "BEGIN SELECT RAISE(ABORT, 'error code refused by policy'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_code() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.error_code = '{code}' THEN "
                    "RAISE EXCEPTION 'error code refused by policy'; END IF; RETURN NEW; END "
                    "$$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_code BEFORE UPDATE ON messages "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_code()"
                )
            )


def test_long_values_and_nul_are_clipped_and_a_refused_dsn_is_skipped(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
    )
    add_contacts(engine, campaign, 4)
    with db.session_scope(engine) as session:
        plan(session, session.get(Campaign, campaign.id), ("email",))
    with db.session_scope(engine) as session:  # sent an hour ago, by the real clock
        for row in session.scalars(select(Message)):
            row.status, row.sent_at = "sent", datetime.now(UTC) - timedelta(hours=1)
    refuse_error_code(engine, "5.9.9")
    long_status = "5.1.1 " + "x" * 200  # PostgreSQL: varchar(64) used to abort everything
    folder = tmp_path / "bounces"
    folder.mkdir()
    (folder / "a-long.eml").write_bytes(
        dsn("user0@example.com", status=long_status, diagnostic="550 no\x00 such user " * 200)
    )
    (folder / "b-plain.eml").write_bytes(dsn("user1@example.com"))
    mbox = (
        b"From MAILER-DAEMON Fri Nov 27 10:03:00 2026\n"
        + dsn("user2@example.com").replace(b"\r\n", b"\n")
        + b"\nFrom MAILER-DAEMON Fri Nov 27 10:03:01 2026\n"
        + dsn("user3@example.com", status="5.9.9").replace(b"\r\n", b"\n")
        + b"\n"
    )
    (folder / "c-box.mbox").write_bytes(mbox)
    result = CliRunner().invoke(main, ["bounces", "import", str(folder)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert f"  {folder / 'c-box.mbox'}, message 2: the database refused it" in result.output
    assert "error code refused by policy" in result.output
    assert "user3@example.com" not in result.output  # no contact data in the report
    rows = emails(engine)
    assert {a: m.status for a, m in rows.items()} == {
        "user0@example.com": "bounced",
        "user1@example.com": "bounced",
        "user2@example.com": "bounced",
        "user3@example.com": "sent",
    }
    clipped = rows["user0@example.com"]
    assert clipped.error_code == long_status[:64] and len(clipped.error_code) == 64
    assert "\x00" not in clipped.error_message and len(clipped.error_message) == 1000
    assert events_of(engine, rows["user3@example.com"].id) == []  # rolled back whole
    (event,) = events_of(engine, clipped.id)
    assert event.detail["status_code"] == long_status  # the event keeps up to 1000


def test_unreadable_code_points_never_reach_the_database():
    raw = dsn("user0@example.com").replace(
        b"Final-Recipient: rfc822; user0@example.com",
        b"Final-Recipient: utf-8; us\\x{D800}er\\x{0}0\\x{110000}@example.com",
    )
    (report,) = bounces.parse_dsn(raw, "x").recipients
    assert report.final_recipient == "us\ufffder\ufffd0\ufffd@example.com"
