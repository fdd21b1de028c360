"""California 1798.82(d)(5): a credentials notice is never emailed to an account the business
furnished; other channels, or the unreached export, carry it."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import select

from notify import db, export
from notify.config import load_settings
from notify.models import Contact, Event, Message
from notify.send.options import SendOptions
from notify.send.runner import send_campaign
from tests.factories import campaign_toml, make_campaign

NAME = "acme-2026-11"
PEOPLE = [  # key, state, exposures, email, phone
    ("ca-biz", "CA", "passwords", "ana@corp.acme.example", "+14155550101"),
    ("ca-biz-nophone", "CA", "passwords", "bo@Corp.Acme.Example", None),
    ("ny-biz", "NY", "passwords", "cy@corp.acme.example", "+14155550103"),
    ("ca-id", "CA", "identity;passwords", "di@corp.acme.example", "+14155550104"),
    ("ca-home", "CA", "passwords", "ed@example.com", "+14155550105"),
]


def setup(engine, tmp_path, **changes):
    changes.setdefault("business_email_domains", '["corp.acme.example"]')
    path = campaign_toml(tmp_path, **changes)
    campaign = make_campaign(engine, path)
    with db.session_scope(engine) as session:
        session.add_all(
            Contact(
                campaign_id=campaign.id,
                key=k,
                email=e.lower(),
                phone=p,
                country="US",
                state=s,
                exposures=x,
                extra={},
            )
            for k, s, x, e, p in PEOPLE
        )
    send_campaign(
        engine, load_settings(), NAME, SendOptions(email_rate=0, sms_rate=0, progress=False)
    )


def by_key(engine) -> dict[tuple[str, str], Message]:
    with db.session_scope(engine) as session:
        rows = session.execute(
            select(Contact.key, Message).join(Message, Message.contact_id == Contact.id)
        ).all()
        session.expunge_all()
        return {(key, m.channel): m for key, m in rows}


def test_credentials_email_to_a_business_mailbox_is_skipped_and_sms_carries_it(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    setup(engine, tmp_path)
    found = by_key(engine)
    for key in ("ca-biz", "ca-biz-nophone"):
        email = found[(key, "email")]
        assert email.status == "skipped" and email.attempts == 0
        assert "1798.82(d)(5)" in email.skip_reason and "corp.acme.example" in email.skip_reason
    assert found[("ca-biz", "sms")].status == "sent"
    for key in ("ny-biz", "ca-id", "ca-home"):  # other states, more than credentials, home mail
        assert found[(key, "email")].status == "sent", key
    mails = "".join(p.read_text() for p in (Path(env["NOTIFY_OUTBOX"]) / "email").glob("*.eml"))
    assert "ana@corp.acme.example" not in mails and "bo@corp.acme.example" not in mails
    with db.session_scope(engine) as session:
        event = session.scalar(
            select(Event).where(
                Event.message_id == found[("ca-biz", "email")].id, Event.kind == "skipped"
            )
        )
        assert "1798.82(d)(5)" in event.detail["reason"]
    out = tmp_path / "unreached.csv"
    export.export_unreached(engine, NAME, out)
    with open(out, newline="") as handle:
        rows = {r["key"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"ca-biz-nophone"}
    assert "1798.82(d)(5)" in rows["ca-biz-nophone"]["why"]


def test_with_sms_as_fallback_only_the_skipped_email_queues_the_sms(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    setup(engine, tmp_path, channels='["email"]', fallback='"sms"')
    found = by_key(engine)
    assert found[("ca-biz", "email")].status == "skipped"
    assert found[("ca-biz", "sms")].is_fallback and found[("ca-biz", "sms")].status == "sent"
    assert ("ca-home", "sms") not in found and ("ny-biz", "sms") not in found


def test_reminders_follow_the_same_rule(env, tmp_path):
    """A domain added after the first notices went out: the reminders to it are skipped."""
    from datetime import timedelta

    from notify.campaigns import get_campaign
    from notify.models import utcnow
    from notify.resets.reminders import plan_reminders

    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    setup(engine, tmp_path, business_email_domains='["other.example"]')
    assert by_key(engine)[("ca-biz", "email")].status == "sent"
    make_campaign(engine, campaign_toml(tmp_path, business_email_domains='["corp.acme.example"]'))
    with db.session_scope(engine) as session:
        planned = plan_reminders(
            session,
            get_campaign(session, NAME),
            timedelta(0),
            2,
            ["email"],
            now=utcnow() + timedelta(days=4),
        )
        assert planned == 5  # every contact here has a password to reset
    with db.session_scope(engine) as session:
        rows = session.execute(
            select(Contact.key, Message)
            .join(Message, Message.contact_id == Contact.id)
            .where(Message.notice == "reminder", Message.channel == "email")
        ).all()
        reminders = {key: (m.status, m.skip_reason or "") for key, m in rows}
    assert reminders["ca-home"][0] == "pending" and reminders["ny-biz"][0] == "pending"
    assert reminders["ca-id"][0] == "pending"  # more than credentials
    for key in ("ca-biz", "ca-biz-nophone"):
        assert reminders[key][0] == "skipped" and "1798.82(d)(5)" in reminders[key][1]
