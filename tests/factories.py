"""Build campaigns and contacts straight through the models, for engine-level tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from notify import campaigns, db
from notify.models import Campaign, Contact, Message, utcnow
from notify.send.plan import plan
from tests.smtp_sink import SmtpSink

EXAMPLE = Path(__file__).resolve().parent.parent / "campaigns" / "example.toml"


def campaign_toml(tmp_path: Path, **changes: str) -> Path:
    """A copy of the example campaign with top-level ``key = value`` lines replaced/added.

    Values are TOML literals (``channels='["email"]'``, ``fallback='"sms"'``); throttle keys
    are given as ``email_per_second="100"`` and land in [throttle].
    """
    throttle_keys = {"email_per_second", "sms_per_second", "concurrency", "max_attempts"}
    lines = EXAMPLE.read_text().splitlines()
    out: list[str] = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if key in changes:
            out.append(f"{key} = {changes[key]}")
        else:
            out.append(line)
    present = {line.split("=", 1)[0].strip() for line in lines}
    top = [f"{k} = {v}" for k, v in changes.items() if k not in present and k not in throttle_keys]
    path = tmp_path / "campaign.toml"
    path.write_text("\n".join(top + out) + "\n")
    return path


def make_campaign(engine, path: Path) -> Campaign:
    """Load the campaign file into the database."""
    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, path)
    return campaign


def add_contacts(
    engine,
    campaign: Campaign,
    count: int,
    *,
    exposures: str = "card",
    phones: bool = True,
    emails: bool = True,
    start: int = 0,
    domain: str = "example.com",
) -> list[str]:
    """Insert ``count`` contacts C-00000.. with email/phone; returns their keys."""
    keys = []
    with db.session_scope(engine) as session:
        for i in range(start, start + count):
            key = f"C-{i:05d}"
            keys.append(key)
            session.add(
                Contact(
                    campaign_id=campaign.id,
                    key=key,
                    name=f"Customer {i}",
                    email=f"user{i}@{domain}" if emails else None,
                    phone=f"+1415555{i:04d}" if phones else None,
                    exposures=exposures,
                    extra={},
                )
            )
    return keys


def count(session: Session, model, *where) -> int:
    from sqlalchemy import func, select

    return session.scalar(select(func.count()).select_from(model).where(*where))


def message_statuses(engine) -> Counter:
    """How many messages are in each status (all campaigns)."""
    with db.session_scope(engine) as session:
        return Counter(session.scalars(select(Message.status)))


def email_campaign(engine, tmp_path: Path, contacts: int, **changes: str) -> Campaign:
    """An email-only campaign without fallback (the example with ``changes``) and ``contacts``
    contacts, for tests that send through one relay."""
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"none"', **changes)
    )
    add_contacts(engine, campaign, contacts)
    return campaign


def sms_campaign(engine, tmp_path: Path, contacts: int, **changes: str) -> Campaign:
    """An SMS-only campaign (the example with ``changes``) and ``contacts`` contacts that
    have a phone number and no email, for tests that send through Twilio."""
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["sms"]', **changes))
    add_contacts(engine, campaign, contacts, emails=False)
    return campaign


def point_at(monkeypatch, double) -> None:
    """Point notify's transport at a test double (SmtpSink or TwilioDouble) for this test,
    through the environment variables the double names."""
    for key, value in double.env().items():
        monkeypatch.setenv(key, value)


@contextmanager
def login_refused(monkeypatch) -> Iterator[SmtpSink]:
    """A relay that requires a login (user ``mailer``, password ``s3cret``) with notify
    pointed at it under the wrong password (``guess``): every connection is refused at
    AUTH, a configuration error, until the test sets NOTIFY_SMTP_PASSWORD right."""
    with SmtpSink(auth={"mailer": "s3cret"}) as sink:
        point_at(monkeypatch, sink)
        monkeypatch.setenv("NOTIFY_SMTP_USERNAME", "mailer")
        monkeypatch.setenv("NOTIFY_SMTP_PASSWORD", "guess")
        yield sink


def leave_in_doubt(session: Session, *where, **values: Any) -> None:
    """Leave the messages ``where`` selects as a worker that died mid-send does: `sending`
    under the lease of "dead-worker", expired a second ago (plus ``values``), so the next
    run must reconcile them before anything is sent again."""
    session.execute(
        update(Message)
        .where(*where)
        .values(
            status="sending",
            lease_owner="dead-worker",
            lease_expires_at=utcnow() - timedelta(seconds=1),
            **values,
        )
    )


def plan_in_doubt(engine, campaign: Campaign, channel: str = "sms") -> None:
    """Plan ``channel`` and leave every message as a first attempt a dead worker began and
    never recorded: in doubt before anything was sent."""
    with db.session_scope(engine) as session:
        plan(session, session.merge(campaign), (channel,))
        leave_in_doubt(session, attempts=1, first_attempt_at=utcnow())
