"""`notify sync sms`: polls Twilio (the double, through the real twilio client)."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from notify import campaigns, db, events, tracking
from notify.cli import main
from notify.config import Settings
from notify.models import AuditRecord, Contact, Event, Message
from notify.transports import Outgoing, make_messenger
from tests.twilio_double import TwilioDouble

NAME = "acme-2026-11"
PHONES = ["+14155550101", "+14155550102", "+14155550103", "+14155550104", "+14155550105"]


@pytest.fixture
def double():
    with TwilioDouble() as tw:
        yield tw


def create_at_twilio(tw: TwilioDouble, config) -> list[str]:
    """Send the SMS through the real twilio client to the double; their SIDs."""
    settings = Settings(
        twilio_account_sid=tw.account_sid, twilio_auth_token=tw.auth_token, twilio_api_url=tw.url
    )

    async def send() -> list[str]:
        async with make_messenger("sms", settings, config, 2) as messenger:
            results = [
                await messenger.push(
                    Outgoing(row_id=n, channel="sms", to=phone, body="Notice of Data Breach")
                )
                for n, phone in enumerate(PHONES)
            ]
        assert all(r.outcome == "sent" for r in results), results
        return [r.provider_id for r in results]

    return asyncio.run(send())


def seed(engine, campaign_file, sids: list[str]) -> dict[str, int]:
    rows = {}
    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, campaign_file)
        for n, (phone, sid) in enumerate(zip(PHONES, sids, strict=True)):
            contact = Contact(campaign_id=campaign.id, key=f"k{n}", phone=phone, exposures="card")
            session.add(contact)
            session.flush()
            status = "delivered" if n == 4 else "sent"  # final: never polled
            message = Message(
                campaign_id=campaign.id,
                contact_id=contact.id,
                channel="sms",
                status=status,
                address=phone,
                provider_message_id=sid,
            )
            session.add(message)
            session.flush()
            rows[sid] = message.id
        unknown = Contact(
            campaign_id=campaign.id, key="ghost", phone="+14155550199", exposures="card"
        )
        session.add(unknown)
        session.flush()
        ghost = Message(
            campaign_id=campaign.id,
            contact_id=unknown.id,
            channel="sms",
            status="sending",
            address=unknown.phone,
            provider_message_id="SM" + "f" * 32,
        )
        session.add(ghost)
        session.flush()
        rows["ghost"] = ghost.id
    return rows


def statuses(engine, rows) -> dict[str, tuple]:
    with db.session_scope(engine) as session:
        return {
            sid: (m.status, m.error_code)
            for sid, row in rows.items()
            for m in [session.get(Message, row)]
        }


def sync_events(engine) -> list[tuple]:
    with db.session_scope(engine) as session:
        return [
            (e.message_id, e.kind)
            for e in session.scalars(select(Event).where(Event.source == "sync").order_by(Event.id))
        ]


def test_sync_records_what_changed(env, campaign_file, double, monkeypatch):
    for key, value in double.env().items():
        monkeypatch.setenv(key, value)
    config = campaigns.parse_campaign_file(campaign_file)
    sids = create_at_twilio(double, config)
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    rows = seed(engine, campaign_file, sids)
    double.advance_sync(sids[0], "delivered")
    double.advance_sync(sids[1], "undelivered", 30003)
    double.advance_sync(sids[2], "failed", 21610)
    # sids[3] stays "queued" at Twilio; sids[4] is already final here.
    runner = CliRunner()
    result = runner.invoke(
        main, ["--actor", "ops", "sync", "sms", NAME, "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert data == {
        "campaign": NAME,
        "checked": 5,
        "changed": 3,
        "by_status": {"delivered": 1, "failed": 1, "undelivered": 1},
        "unchanged": 1,
        "not_found": 1,
        "errors": 0,
        "early_applied": 0,
    }
    got = statuses(engine, rows)
    assert got[sids[0]] == ("delivered", None)
    assert got[sids[1]] == ("undelivered", "30003")
    assert got[sids[2]] == ("failed", "21610")
    assert got[sids[3]] == ("sent", None) and got[sids[4]] == ("delivered", None)
    assert got["ghost"] == ("sending", None)
    assert sorted(sync_events(engine)) == sorted(
        [(rows[sids[0]], "delivered"), (rows[sids[1]], "undelivered"), (rows[sids[2]], "failed")]
    )
    with db.session_scope(engine) as session:
        audit = session.scalar(select(AuditRecord).where(AuditRecord.command == "sync sms"))
        assert audit.actor == "ops" and audit.counts["changed"] == 3
        assert audit.arguments["transport"] == "twilio"
        assert "auth" not in json.dumps(audit.arguments).lower()
    # Nothing changed since: a second sync adds no event.
    again = runner.invoke(main, ["sync", "sms", NAME], catch_exceptions=False)
    assert "changed none; 1 unchanged; 1 unknown to the provider; 0 lookup errors" in again.output
    assert len(sync_events(engine)) == 3
    # Later Twilio delivers the last one.
    double.advance_sync(sids[3], "sent")
    double.advance_sync(sids[3], "delivered")
    third = runner.invoke(main, ["sync", "sms", NAME], catch_exceptions=False)
    assert "changed 1 delivered" in third.output
    assert statuses(engine, rows)[sids[3]] == ("delivered", None)


def test_sync_applies_early_callbacks_first(engine, campaign_file, double):
    config = campaigns.parse_campaign_file(campaign_file)
    sids = create_at_twilio(double, config)
    rows = seed(engine, campaign_file, sids)
    with db.session_scope(engine) as session:
        # A callback stored before the send engine stored the SID, never applied (race).
        events.record(
            session,
            source="webhook",
            kind="delivered",
            applied=False,
            provider_message_id=sids[3],
            detail={"sid": sids[3], "provider_status": "delivered"},
        )
    settings = Settings(
        twilio_account_sid=double.account_sid,
        twilio_auth_token=double.auth_token,
        twilio_api_url=double.url,
    )

    async def run():
        async with make_messenger("sms", settings, config, 2) as messenger:
            return await tracking.sync_sms(engine, 1, messenger, concurrency=2)

    report = asyncio.run(run())
    assert report.early_applied == 1
    assert statuses(engine, rows)[sids[3]] == ("delivered", None)
    with db.session_scope(engine) as session:
        early = session.scalar(select(Event).where(Event.provider_message_id == sids[3]))
        assert (early.applied, early.message_id) == (True, rows[sids[3]])


def test_sync_with_wrong_credentials_is_one_line_error(env, campaign_file, double, monkeypatch):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", double.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token")
    monkeypatch.setenv("NOTIFY_TWILIO_API_URL", double.url)
    config = campaigns.parse_campaign_file(campaign_file)
    sids = create_at_twilio(double, config)
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    seed(engine, campaign_file, sids)
    result = CliRunner().invoke(main, ["sync", "sms", NAME])
    assert result.exit_code == 1
    assert result.output.startswith("Error: Twilio refused account")
    assert "wrong-token" not in result.output and "Traceback" not in result.output
    with db.session_scope(engine) as session:
        audit = session.scalar(select(AuditRecord).where(AuditRecord.command == "sync sms"))
        assert audit.outcome == "error"


def test_sync_unknown_campaign(env):
    db.connect(env["NOTIFY_DATABASE_URL"])  # an existing database without that campaign
    result = CliRunner().invoke(main, ["sync", "sms", "nope"])
    assert result.exit_code == 1 and "unknown campaign 'nope'" in result.output


def test_a_sync_whose_every_lookup_failed_exits_1(env, campaign_file, double, monkeypatch):
    """Twilio unreachable: the run learned nothing, and says so with a failing status."""
    import socket

    sids = create_at_twilio(double, campaigns.parse_campaign_file(campaign_file))
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    seed(engine, campaign_file, sids)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    for key, value in double.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NOTIFY_TWILIO_API_URL", f"http://127.0.0.1:{port}")
    for args in ([], ["--json"]):
        result = CliRunner().invoke(main, ["sync", "sms", NAME, *args])
        assert result.exit_code == 1, result.output
        assert result.output.splitlines()[-1] == (
            "Error: every lookup at twilio failed; "
            "nothing changed: run notify sync sms "
            "again once it answers"
        )
    assert sync_events(engine) == []
