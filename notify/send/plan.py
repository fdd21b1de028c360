"""Preparing a send: the ``Job`` (campaign, channels, rates, stored templates) and planning,
which creates the first-notice rows that do not exist yet (the SQL is ``send.store``'s).

Planning inserts one message row per (campaign, contact, channel, notice, sequence); the
unique constraint makes a second plan, a second worker or a re-run create nothing new.
Monitoring codes, corrected addresses, the law's skips and reset records are planned here too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import (
    Engine,
)
from sqlalchemy.orm import Session

from notify import campaigns as campaigns_mod
from notify import codes, templates, verp
from notify.campaigns import CampaignConfig
from notify.config import Settings
from notify.db import session_scope
from notify.errors import NotifyError
from notify.models import (
    Campaign,
    utcnow,
)
from notify.rules.business_email import skip_business_credentials
from notify.send.options import SendOptions
from notify.send.store import hash_anti_joins, in_flight_counts, plan_first_notices


@dataclass
class Job:
    """Everything fixed for the duration of a run."""

    campaign: Campaign
    config: CampaignConfig
    notices: templates.Notices
    channels: tuple[str, ...]
    rates: dict[str, float | None]
    concurrency: int
    max_attempts: int
    verp_key: bytes | None = None  # set when the campaign has a bounce_address

    def envelope_sender(self, row_id: int) -> str:
        """MAIL FROM for an email: its own VERP address, or the campaign's sender."""
        if self.verp_key is None or not self.config.bounce_address:
            return self.config.sender_email
        return verp.envelope_sender(self.config.bounce_address, self.verp_key, row_id)

    # Per channel, where its messages go ("smtp:HOST", "twilio", "outbox"): recorded on each.
    transports: dict[str, str] = field(default_factory=dict)


def load_job(engine: Engine, settings: Settings, name: str, options: SendOptions) -> Job:
    """Resolve the campaign, channels, rates and templates; refuse broken templates."""
    with session_scope(engine) as session:
        campaign = campaigns_mod.get_campaign(session, name)
        notices = templates.notices_for(session, campaign)  # the stored version, no folder
        config = campaigns_mod.config_of(campaign)
        verp_key = verp.key(session) if config.bounce_address else None
    problems = notices.check()
    if problems:
        more = (
            f" (and {len(problems) - 1} more; see notify templates check)"
            if len(problems) > 1
            else ""
        )
        raise NotifyError(f"templates: {problems[0]}{more}")
    channels = _channels(config, options)
    return Job(
        campaign=campaign,
        config=config,
        notices=notices,
        channels=channels,
        # Before anything is planned: a channel with nowhere to go is an error, not the
        # outbox (unless asked for).
        transports={channel: settings.transport(channel) for channel in channels},
        rates={
            "email": config.throttle.email_per_second
            if options.email_rate is None
            else options.email_rate,
            "sms": config.throttle.sms_per_second if options.sms_rate is None else options.sms_rate,
        },
        concurrency=options.concurrency or config.throttle.concurrency,
        max_attempts=config.throttle.max_attempts,
        verp_key=verp_key,
    )


def _channels(config: CampaignConfig, options: SendOptions) -> tuple[str, ...]:
    wanted = list(config.channels)
    if config.fallback == "sms" and "sms" not in wanted:
        wanted.append("sms")  # fallback SMS rows are planned as emails fail
    if options.channels:
        unknown = [c for c in options.channels if c not in ("email", "sms")]
        if unknown:
            raise NotifyError(f"--channel: {unknown[0]!r} is not email, sms or all")
        wanted = [c for c in wanted if c in options.channels]
        if not wanted:
            raise NotifyError(
                f"--channel {','.join(options.channels)}: the campaign "
                f"{config.name} does not use it (channels: "
                f"{', '.join(config.channels)})"
            )
    return tuple(wanted)


def plan(session: Session, campaign: Campaign, channels: tuple[str, ...]) -> Counter:
    """Create the first-notice rows that do not exist yet; returns how many, by channel.

    Contacts without an address for a channel get a ``skipped`` row with the reason, so the
    record shows they were considered. Only the campaign's own channels get first notices
    (fallback SMS rows are created as emails fail). A contact whose address on a channel was
    corrected since its last message there, which nothing reached, gets a new message to the
    new address (``requeue.plan_corrections``).
    """
    config = campaigns_mod.config_of(campaign)
    now = utcnow()
    created: Counter = Counter()
    # Monitoring codes first: it takes the campaign lock before any message row is written
    # (the other order could deadlock two planning workers), and a pool too small refuses.
    codes.assign(session, campaign, now)
    restore = hash_anti_joins(session)
    for channel in channels:
        if channel not in config.channels:
            continue
        created[channel] = plan_first_notices(session, campaign.id, channel, now)
    # A corrected address that no message reached yet gets a message of its own.
    from notify.requeue import plan_corrections

    created.update(plan_corrections(session, campaign, channels, now))
    restore()
    if "email" in created:  # California 1798.82(d)(5): not to the business's own mailboxes
        skip_business_credentials(session, campaign, config, now)
    _ensure_resets(session, campaign)
    return created


def _ensure_resets(session: Session, campaign: Campaign) -> None:
    try:
        from notify.resets import tokens as reset_tokens
    except ImportError:  # resets module not installed in this build
        return
    reset_tokens.ensure_resets(session, campaign)


def pending_counts(
    engine: Engine, settings: Settings, name: str, options: SendOptions
) -> dict[str, int]:
    """How many messages a send would attempt now, by channel (plans, then rolls back)."""
    job = load_job(engine, settings, name, options)
    session = Session(engine)
    try:
        with session.begin():
            if options.notice != "reminder":
                plan(session, job.campaign, job.channels)
                session.flush()
            counts = in_flight_counts(session, job.campaign.id, job.channels, options.notice)
            session.rollback()
    finally:
        session.close()
    return {ch: counts.get(ch, 0) for ch in job.channels}
