"""SMS through the real twilio client against the Twilio double: codes, 429s, reconciling."""

from __future__ import annotations

from sqlalchemy import select

from notify import db
from notify.config import load_settings
from notify.models import Message
from notify.send.options import SendOptions
from notify.send.runner import send_campaign
from tests.factories import leave_in_doubt, plan_in_doubt, point_at, sms_campaign
from tests.twilio_double import TwilioDouble


def test_permanent_codes_fail_at_once_and_429_is_retried(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 12)
    with TwilioDouble(
        invalid={"+14155550003"}, opted_out={"+14155550004"}, rate=4, burst=1, retry_after=1
    ) as tw:
        point_at(monkeypatch, tw)
        summary = send_campaign(
            engine,
            load_settings(),
            campaign.name,
            SendOptions(sms_rate=0, concurrency=4, retry_base=0.05, progress=False),
        )
        accepted = [m["to"] for m in tw.messages]
        assert tw.rejected_429 > 0  # the double pushed back, and nothing was lost
    assert sorted(accepted) == sorted(f"+1415555{i:04d}" for i in range(12) if i not in (3, 4))
    assert len(accepted) == len(set(accepted))
    assert summary.count("failed") == 2
    with db.session_scope(engine) as session:
        failed = {
            m.address: m.error_code
            for m in session.scalars(select(Message).where(Message.status == "failed"))
        }
        assert failed == {"+14155550003": "21211", "+14155550004": "21610"}
        sent = session.scalars(select(Message).where(Message.status == "sent")).all()
        assert all(m.provider_message_id.startswith("SM") for m in sent)


def test_sms_in_doubt_is_reconciled_not_resent(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 3)
    with TwilioDouble() as tw:
        point_at(monkeypatch, tw)
        settings = load_settings()
        send_campaign(engine, settings, campaign.name, SendOptions(sms_rate=0, progress=False))
        assert len(tw.messages) == 3
        # Simulate a crash after Twilio accepted the SMS but before `sent` was committed:
        # the row is back in `sending` with an expired lease and no provider id.
        with db.session_scope(engine) as session:
            leave_in_doubt(
                session,
                Message.address == "+14155550001",
                provider_message_id=None,
                sent_at=None,
            )
        summary = send_campaign(
            engine, settings, campaign.name, SendOptions(sms_rate=0, progress=False)
        )
        assert len(tw.messages) == 3  # not sent again
        sid = next(m["sid"] for m in tw.messages if m["to"] == "+14155550001")
    assert summary.count("reconciled") == 1
    with db.session_scope(engine) as session:
        row = session.scalars(select(Message).where(Message.address == "+14155550001")).one()
        assert (row.status, row.provider_message_id) == ("sent", sid)


def test_sms_in_doubt_that_never_left_is_sent_once(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 1)
    with TwilioDouble() as tw:
        point_at(monkeypatch, tw)
        settings = load_settings()
        plan_in_doubt(engine, campaign)
        summary = send_campaign(
            engine, settings, campaign.name, SendOptions(sms_rate=0, progress=False)
        )
        assert len(tw.messages) == 1
    assert summary.count("sent") == 1 and summary.count("reconciled") == 0
