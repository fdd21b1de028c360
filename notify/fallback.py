"""Email -> SMS fallback: when an email failed for good, queue an SMS if the campaign says so."""

from __future__ import annotations

from sqlalchemy import literal, null, select, true
from sqlalchemy.orm import Session

from notify import events
from notify.campaigns import CampaignConfig
from notify.models import FAILED_STATUSES, Contact, Message, Status, UTCDateTime, utcnow


def plan_fallback(session: Session, config: CampaignConfig, email: Message) -> Message | None:
    """Create the pending fallback SMS for a failed/bounced email, once; None if not wanted.

    Applies only when ``fallback = "sms"``, SMS is not already a campaign channel, and the
    contact has a phone. The unique (contact, channel, notice, sequence) row makes it once.
    """
    if config.fallback != "sms" or "sms" in config.channels or email.channel != "email":
        return None
    if email.status not in FAILED_STATUSES:
        return None
    contact = session.get(Contact, email.contact_id)
    if contact is None:
        return None
    return queue_sms(session, config, email, contact, f"email {email.id} {email.status}")


def queue_sms(
    session: Session, config: CampaignConfig, email: Message, contact: Contact, because: str
) -> Message | None:
    """The pending SMS that carries ``email``'s notice instead, with its ``pending`` event;
    None when the campaign has no SMS fallback, the contact no phone, or it exists already.

    The one place a fallback row is made (a failed or bounced email, or one the law says
    not to send): the unique (contact, channel, notice, sequence) row makes it once.
    """
    if config.fallback != "sms" or "sms" in config.channels or not contact.phone:
        return None
    now = utcnow()
    row = select(
        literal(email.campaign_id),
        literal(email.contact_id),
        literal("sms"),
        literal(email.notice),
        literal(email.sequence),
        literal(True),
        literal(Status.PENDING),
        null(),
        literal(contact.phone),
        literal(0),
        literal(now, UTCDateTime()),
    ).where(true())  # SQLite reads INSERT ... SELECT ... ON CONFLICT only after a WHERE
    created = events.create_messages(
        session,
        row,
        campaign_id=email.campaign_id,
        at=now,
        source="fallback",
        detail={"because": because},
    )
    if not created:
        return None
    return session.scalar(
        select(Message).where(
            Message.campaign_id == email.campaign_id,
            Message.contact_id == email.contact_id,
            Message.channel == "sms",
            Message.notice == email.notice,
            Message.sequence == email.sequence,
        )
    )
