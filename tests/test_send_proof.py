"""Proof before adoption: an SMS in doubt is adopted only from a provider message created at or
after its attempt began, with exactly the body that attempt handed over, and a SID no row
holds; every attempt's content hash is kept in its `sending` event (an email re-sent after a
crash has the hash of each copy on record)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from notify import db
from notify.config import load_settings
from notify.models import Event, Message, utcnow
from notify.send.options import SendOptions
from notify.send.plan import load_job, plan
from notify.send.runner import send_campaign
from notify.send.store import Begin, begin_attempts, claim
from tests.factories import (
    add_contacts,
    campaign_toml,
    leave_in_doubt,
    make_campaign,
    point_at,
    sms_campaign,
)
from tests.smtp_sink import SmtpSink
from tests.test_transport_twilio import messenger, sms
from tests.twilio_double import TwilioDouble

NUMBER = "+14155550000"


def _crashed_attempt(engine, campaign) -> tuple[str, object]:
    """One SMS whose attempt was committed `sending` (with its body's hash) by a worker that
    then died before Twilio answered; returns (the body it handed over, when it began)."""
    job = load_job(engine, load_settings(), campaign.name, SendOptions())
    with db.session_scope(engine) as session:
        plan(session, session.merge(campaign), ("sms",))
    [item] = claim(engine, campaign.id, "sms", "dead-worker", 1, 30.0)
    body = job.notices.render_sms(item.view, notice="notice").text
    began = utcnow()
    with db.session_scope(engine) as session:
        [(ok, _token, _at)] = begin_attempts(
            session,
            [
                Begin(
                    job,
                    item,
                    "dead-worker",
                    30.0,
                    False,
                    None,
                    hashlib.sha256(body.encode()).hexdigest(),
                    began,
                )
            ],
        )
        assert ok
        session.execute(update(Message).values(lease_expires_at=began - timedelta(seconds=1)))
    return body, began


@pytest.mark.parametrize(
    "unrelated", ["other body, after the attempt", "same body, before the attempt"]
)
def test_an_unrelated_sms_to_the_number_is_not_adopted(env, tmp_path, monkeypatch, unrelated):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 1)
    with TwilioDouble() as tw:
        point_at(monkeypatch, tw)
        body, began = _crashed_attempt(engine, campaign)
        if unrelated.startswith("other"):
            foreign = tw.add_message(
                NUMBER, "Acme: your login code is 481516", began + timedelta(seconds=1)
            )
        else:
            foreign = tw.add_message(NUMBER, body, began - timedelta(minutes=1))
        summary = send_campaign(
            engine, load_settings(), campaign.name, SendOptions(sms_rate=0, progress=False)
        )
        messages = tw.messages
    assert summary.count("reconciled") == 0 and summary.count("sent") == 1
    ours = [m for m in messages if m["sid"] != foreign]
    assert len(ours) == 1 and ours[0]["body"] == body and ours[0]["to"] == NUMBER
    with db.session_scope(engine) as session:
        row = session.scalars(select(Message)).one()
        assert (row.status, row.provider_message_id) == ("sent", ours[0]["sid"])


def test_the_exact_sms_is_adopted(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 1)
    with TwilioDouble() as tw:
        point_at(monkeypatch, tw)
        body, began = _crashed_attempt(engine, campaign)
        tw.add_message(NUMBER, "Acme: your login code is 481516", began + timedelta(seconds=1))
        ours = tw.add_message(NUMBER, body, began + timedelta(seconds=1))
        summary = send_campaign(
            engine, load_settings(), campaign.name, SendOptions(sms_rate=0, progress=False)
        )
        assert len(tw.messages) == 2  # nothing sent again
    assert summary.count("reconciled") == 1 and summary.count("sent") == 0
    with db.session_scope(engine) as session:
        row = session.scalars(select(Message)).one()
        assert (row.status, row.provider_message_id) == ("sent", ours)


def test_an_sms_another_row_holds_is_not_adopted(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 1)
    with TwilioDouble() as tw:
        point_at(monkeypatch, tw)
        body, began = _crashed_attempt(engine, campaign)
        taken = tw.add_message(NUMBER, body, began + timedelta(seconds=1))
        # The same text already recorded for another message (another campaign's row).
        other = make_campaign(
            engine, campaign_toml(tmp_path, name='"other-campaign"', channels='["sms"]')
        )
        add_contacts(engine, other, 1, emails=False)
        with db.session_scope(engine) as session:
            plan(session, session.merge(other), ("sms",))
            session.execute(
                update(Message)
                .where(Message.campaign_id == other.id)
                .values(status="sent", provider_message_id=taken)
            )
        summary = send_campaign(
            engine, load_settings(), campaign.name, SendOptions(sms_rate=0, progress=False)
        )
        assert len(tw.messages) == 2
    assert summary.count("reconciled") == 0 and summary.count("sent") == 1


async def test_push_time_lookup_ignores_a_copy_created_before_the_push():
    """A push that timed out looks itself up: a message with the same body created before
    the push began is not it."""
    with TwilioDouble(delay=1.5) as double:
        old = double.add_message(
            "+15005550100", "Acme: your data was exposed.", utcnow() - timedelta(minutes=1)
        )
        async with messenger(double, timeout=0.3) as tw:
            result = await tw.push(sms(1))
        new = [m["sid"] for m in double.messages if m["sid"] != old]
    assert result.outcome == "sent" and result.candidates == tuple(new)
    assert old not in result.candidates


def test_every_copy_of_a_resent_email_has_its_hash_on_record(env, tmp_path, monkeypatch):
    """An email in doubt is sent again with the same Message-ID but a fresh reset link: the
    hash of each copy is kept in its attempt's `sending` event, not only the last one's."""
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
    )
    add_contacts(engine, campaign, 1, exposures="passwords")
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        options = SendOptions(email_rate=0, progress=False)
        send_campaign(engine, load_settings(), campaign.name, options)
        # A crash before `sent` was committed: in doubt, sent again.
        with db.session_scope(engine) as session:
            leave_in_doubt(session, sent_at=None)
        send_campaign(engine, load_settings(), campaign.name, options)
        copies = [r.data for r in sink.received]
        ids = sink.message_ids()
    assert len(copies) == 2 and ids[0] == ids[1] and copies[0] != copies[1]
    with db.session_scope(engine) as session:
        hashes = [
            e.detail["content_sha256"]
            for e in session.scalars(
                select(Event).where(Event.kind == "sending").order_by(Event.id)
            )
        ]
        row = session.scalars(select(Message)).one()
    assert hashes == [hashlib.sha256(copy).hexdigest() for copy in copies]
    assert row.content_sha256 == hashes[1]
