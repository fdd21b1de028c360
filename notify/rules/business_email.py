"""California Civ. Code 1798.82(d)(5): a credentials notice never goes to the email account
the business furnished.

When a breach is of login credentials only (the contact's only exposure is ``passwords``)
and the contact lives in a jurisdiction with that rule (``credentials_not_to_business_email``
in the data: California), an email to an address at one of the campaign's
``business_email_domains`` would go to the very account that may be compromised. Such a
message is planned ``skipped`` with the reason; the contact's other channels carry the
notice (an SMS, or the fallback SMS when the campaign has one), and a contact with no other
channel appears in ``notify export unreached`` for notice by other means.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from notify import events, fallback
from notify import rules as rules_mod
from notify.campaigns import CampaignConfig
from notify.models import Campaign, Contact, Message, Status

REASON = (
    "California Civ. Code 1798.82(d)(5): a credentials notice is never emailed to an "
    "account the business furnished ({domain})"
)


def _domain_of(email: str) -> str:
    return email.rsplit("@", 1)[-1].lower()


def skip_business_credentials(
    session: Session, campaign: Campaign, config: CampaignConfig, since: datetime
) -> int:
    """Skip the pending emails planned at or after ``since`` that the rule forbids; returns
    how many. Queues the fallback SMS where the campaign uses fallback instead of SMS."""
    domains = set(config.business_email_domains)
    if not domains:
        return 0
    protected = {
        code for code, j in rules_mod.load_rules().items() if j.credentials_not_to_business_email
    }
    rows = session.execute(
        select(Message, Contact)
        .join(Contact, Contact.id == Message.contact_id)
        .where(
            Message.campaign_id == campaign.id,
            Message.channel == "email",
            Message.status == Status.PENDING,
            Message.attempts == 0,
            Message.created_at >= since,
            Contact.exposures == "passwords",
            or_(*(Contact.email.like(f"%@{d}") for d in domains)),
        )
    ).all()
    skipped = 0
    for message, contact in rows:
        domain = _domain_of(message.address or contact.email or "")
        if (
            domain not in domains
            or rules_mod.residence(contact.country, contact.state) not in protected
        ):
            continue
        reason = REASON.format(domain=domain)
        message.skip_reason = reason
        events.advance(session, message, Status.SKIPPED, source="plan", detail={"reason": reason})
        skipped += 1
        fallback.queue_sms(
            session, config, message, contact, f"email {message.id} skipped (1798.82(d)(5))"
        )
    return skipped
