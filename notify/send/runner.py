"""The send engine: every contact told once per channel, at the campaign's rates, on record.

How "nobody skipped, nobody told twice" holds:

* Planning inserts one message row per (campaign, contact, channel, notice, sequence); the
  unique constraint makes a second plan, a second worker or a re-run create nothing new.
* Workers claim batches of rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
  serializes writers), renewed while the worker lives. A dead worker's lease runs out and its
  rows are taken over.
* ``sending`` is committed (with the attempt count) before the provider is called, and the
  provider's answer is committed before the worker moves on. A row found ``sending`` with an
  expired lease is "in doubt": an email is sent again with the same Message-ID (the only
  repeats possible, at most ``concurrency`` of them); an SMS is first looked up at the
  provider by recipient and time, and adopted if it was sent.
* Transient failures wait in ``sending`` with ``next_attempt_at`` set (exponential backoff,
  at least Retry-After); permanent ones end ``failed`` at once with the provider's code.
* A provider outage (no connection, timeouts, 5xx in a row) pauses the channel instead: what
  was begun goes back without spending an attempt, and one probe at a time (backing off to
  60 s) finds out when the provider is back (:mod:`notify.outage`); after ``--max-outage``
  the run ends with exit status 75 and everything unsent still pending.

Each channel has its own pipeline: a producer that claims rows and ``concurrency`` consumers
that render, wait for a throttle slot and push to the channel's messenger.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
import re
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from notify import bulk, codes, fallback, mime, templates, verp
from notify import campaigns as campaigns_mod
from notify.campaigns import CampaignConfig
from notify.config import LEASE_SECONDS, Settings
from notify.db import is_sqlite, rowcount, session_scope
from notify.errors import NotifyError
from notify.events import row as event_values
from notify.models import (
    IN_FLIGHT_STATUSES,
    REACHED_STATUSES,
    Campaign,
    Contact,
    Event,
    Message,
    Status,
    UTCDateTime,
    utcnow,
)
from notify.outage import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    MAX_OUTAGE,
    ChannelOutage,
    OutageState,
    OutageTooLong,
)
from notify.rules.business_email import skip_business_credentials
from notify.throttle import Throttle
from notify.transports import (
    Messenger,
    Outgoing,
    ProviderDown,
    Result,
    TransportConfigError,
    make_messenger,
)

RETRY_CAP_SECONDS = 300.0
# The furthest ahead of its rate slot a message may start (see Runner._consumers); relays
# wait minutes between commands, so this keeps well inside that.
SLOT_AHEAD = 10.0
# Messages begun in one group commit ahead of their hand-over (see Runner._ahead).
PREPARE_GROUP = 8
PREPARE_SECONDS = 0.25
# An in-doubt SMS is adopted only from a provider message created at or after one of its
# attempts began, less this much for the difference between our clock and the provider's.
ADOPT_SKEW = timedelta(seconds=5)
# How often the engine tells its observer that time passed (progress lines, outage lines).
TICK_SECONDS = 1.0


class SendObserver(Protocol):
    """What the engine tells whoever shows progress (the CLI); called on the event loop."""

    def begin(self, totals: dict[str, int], rates: dict[str, float | None]) -> None:
        """Sending starts: messages to attempt per channel, and each channel's rate."""

    def done(self, channel: str, outcome: str) -> None:
        """One message ended this run: ``sent``, ``reconciled`` or ``failed``."""

    def outage_started(self, state: OutageState) -> None:
        """A channel's provider went down: the channel pauses."""

    def outage_ended(self, state: OutageState, seconds: float) -> None:
        """The provider answered again after ``seconds``: the channel resumes."""

    def tick(self) -> None:
        """About once a second while sending (periodic lines need no thread of their own)."""

    def end(self) -> None:
        """Sending ended (normally or not)."""


@dataclass
class SendOptions:
    """What `notify send` (and `notify remind`) asked for; None means the campaign's value."""

    channels: tuple[str, ...] | None = None
    dry_run: bool = False
    limit: int | None = None
    email_rate: float | None = None  # messages per second; 0 = no limit
    sms_rate: float | None = None
    concurrency: int | None = None
    notice: str | None = None  # None: every pending row (first notices and planned reminders)
    progress: bool = True
    assume_yes: bool = False
    retry_base: float = 1.0  # seconds before the second attempt; doubles each time
    lease_seconds: float = LEASE_SECONDS
    batch_size: int | None = None
    worker_id: str | None = None
    max_outage: float = MAX_OUTAGE  # seconds a provider may stay down before the run ends
    outage_backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX)  # probe delays, seconds
    provider_timeout: float | None = None  # per network step; None: the transport's default
    observer: SendObserver | None = None  # progress and outage lines (the CLI's)


def snake(word: str) -> str:
    """``would send`` -> ``would_send``: JSON keys are snake_case identifiers (docs/cli.md)."""
    return re.sub(r"[^a-z0-9]+", "_", word.lower()).strip("_")


# Why a message is skipped, in the words of summaries: an address missing for the channel
# reads the same on both channels.
SKIP_WORDS = {"no email address": "no address", "no phone number": "no address"}


# How a run's outcomes read in its summary ("2 retried, 34 sent", not "2 retry").
RUN_WORDS = {"retry": "retried"}


@dataclass
class SendSummary:
    """What one run did, and where the campaign stands afterwards."""

    campaign: str
    dry_run: bool = False
    planned: Counter = field(default_factory=Counter)  # new rows, by channel
    done: Counter = field(default_factory=Counter)  # (channel, outcome) -> n, this run
    totals: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> status -> n
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> reason -> n
    elapsed: float = 0.0
    interrupted: bool = False
    transports: dict[str, str] = field(default_factory=dict)  # channel -> where it went

    def count(self, outcome: str, channel: str | None = None) -> int:
        """How many messages of this run ended in ``outcome`` (sent, failed, retry, ...)."""
        return sum(n for (ch, out), n in self.done.items()
                   if out == outcome and (channel is None or ch == channel))

    def lines(self) -> list[str]:
        """Printable summary, one line per channel plus a headline."""
        head = "Dry run (nothing sent)" if self.dry_run else "Sent"
        if self.interrupted:
            head = "Interrupted; in-flight messages were recorded. Run again to resume"
        out = [f"{head}: campaign {self.campaign} in {self.elapsed:.1f}s."]
        if not self.totals:  # a bare headline read as if something had been sent
            out.append(f"  no messages: the campaign has no contacts yet (import them with: "
                       f"notify contacts import FILE --campaign {self.campaign})")
        for channel in sorted(self.totals):
            if self.dry_run:
                out.append(f"  {channel}: {self.dry_run_text(channel)}")
                continue
            statuses = self.totals[channel]
            total = sum(statuses.values())
            parts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
            run = ", ".join(f"{n} {RUN_WORDS.get(out, out)}"
                            for (ch, out), n in sorted(self.done.items()) if ch == channel)
            out.append(f"  {channel}: {total} messages ({parts}); this run: {run or 'nothing'}")
        return out

    def dry_run_text(self, channel: str) -> str:
        """``203 would be sent, 3 skipped (no address)``: what a send would do on a channel."""
        statuses = self.totals.get(channel, {})
        parts = [f"{self.count('would send', channel):,} would be sent"]
        already = sum(statuses.get(s, 0) for s in REACHED_STATUSES)
        if already:
            parts.append(f"{already:,} already sent")
        reasons: Counter = Counter()
        for reason, n in self.skipped.get(channel, {}).items():
            reasons[SKIP_WORDS.get(reason, reason)] += n
        parts += [f"{n:,} skipped ({reason})" for reason, n in sorted(reasons.items())]
        ended = sum(n for s, n in statuses.items()
                    if s not in REACHED_STATUSES and s not in (*IN_FLIGHT_STATUSES, Status.SKIPPED))
        if ended:
            parts.append(f"{ended:,} failed earlier")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for audit records and --json (snake_case keys all through)."""
        run: dict[str, dict[str, int]] = {}
        for (channel, outcome), n in sorted(self.done.items()):
            run.setdefault(channel, {})[snake(outcome)] = n
        skipped: dict[str, dict[str, int]] = {}
        for channel, reasons in self.skipped.items():
            for reason, n in reasons.items():
                key = snake(SKIP_WORDS.get(reason, reason))
                skipped.setdefault(channel, {})[key] = skipped.get(channel, {}).get(key, 0) + n
        data = {
            "campaign": self.campaign,
            "dry_run": self.dry_run,
            "planned": dict(self.planned),
            "run": run,
            "totals": self.totals,
            "elapsed_s": round(self.elapsed, 3),
            "interrupted": self.interrupted,
            "transports": self.transports,
        }
        if self.dry_run:
            data["skipped"] = skipped
        return data


def skipped_counts(session: Session, campaign_id: int, channels: tuple[str, ...],
                   options: SendOptions) -> dict[str, dict[str, int]]:
    """Skipped messages by channel and reason (of the notices this send covers)."""
    rows = session.execute(
        select(Message.channel, Message.skip_reason, func.count())
        .where(Message.campaign_id == campaign_id, Message.status == Status.SKIPPED,
               Message.channel.in_(channels), *_notice_filter(options))
        .group_by(Message.channel, Message.skip_reason)
    )
    counts: dict[str, dict[str, int]] = {}
    for channel, reason, n in rows:
        counts.setdefault(channel, {})[reason or "no reason given"] = n
    return counts


@dataclass
class Item:
    """One claimed message with what rendering it needs."""

    id: int
    contact_id: int
    channel: str
    notice: str
    sequence: int
    status: str
    attempts: int
    first_attempt_at: datetime | None
    address: str | None
    view: templates.ContactView


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


# ---------------------------------------------------------------- preparing a run


def load_job(engine: Engine, settings: Settings, name: str, options: SendOptions) -> Job:
    """Resolve the campaign, channels, rates and templates; refuse broken templates."""
    with session_scope(engine) as session:
        campaign = campaigns_mod.get_campaign(session, name)
        notices = templates.notices_for(session, campaign)  # the stored version, no folder
        config = campaigns_mod.config_of(campaign)
        verp_key = verp.key(session) if config.bounce_address else None
    problems = notices.check()
    if problems:
        more = f" (and {len(problems) - 1} more; see notify templates check)" \
            if len(problems) > 1 else ""
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
            "email": config.throttle.email_per_second if options.email_rate is None
            else options.email_rate,
            "sms": config.throttle.sms_per_second if options.sms_rate is None
            else options.sms_rate,
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
            raise NotifyError(f"--channel {','.join(options.channels)}: the campaign "
                              f"{config.name} does not use it (channels: "
                              f"{', '.join(config.channels)})")
    return tuple(wanted)


_PLAN_SQL = """
INSERT INTO messages (campaign_id, contact_id, channel, notice, sequence, is_fallback, status,
                      skip_reason, address, attempts, created_at)
SELECT c.campaign_id, c.id, CAST(:channel AS VARCHAR(8)), 'notice', 0, :false,
       CASE WHEN c.{col} IS NULL OR c.{col} = '' THEN 'skipped' ELSE 'pending' END,
       CASE WHEN c.{col} IS NULL OR c.{col} = '' THEN CAST(:reason AS TEXT) END,
       c.{col}, 0, :now
FROM contacts c
WHERE c.campaign_id = :campaign_id
  AND NOT EXISTS (SELECT 1 FROM messages m
                  WHERE m.campaign_id = c.campaign_id AND m.contact_id = c.id
                    AND m.channel = CAST(:channel AS VARCHAR(8)) AND m.notice = 'notice'
                    AND m.sequence = 0)
ON CONFLICT DO NOTHING
"""

_SKIP_EVENTS_SQL = """
INSERT INTO events (campaign_id, message_id, contact_id, at, source, kind, applied, detail)
SELECT m.campaign_id, m.id, m.contact_id, :now, 'plan', 'skipped', :true, :detail
FROM messages m
WHERE m.campaign_id = :campaign_id AND m.channel = :channel AND m.status = 'skipped'
  AND m.created_at = :now
"""


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
    restore = _hash_anti_joins(session)
    for channel in channels:
        if channel not in config.channels:
            continue
        col = "email" if channel == "email" else "phone"
        reason = "no email address" if channel == "email" else "no phone number"
        params = {"channel": channel, "campaign_id": campaign.id, "reason": reason,
                  "now": now, "false": False, "true": True}
        stmt = text(_PLAN_SQL.format(col=col)).bindparams(bindparam("now", type_=UTCDateTime()))
        created[channel] = rowcount(session.execute(stmt, params))
        skip = text(_SKIP_EVENTS_SQL).bindparams(bindparam("now", type_=UTCDateTime()))
        session.execute(skip, {**params, "detail": f'{{"reason": "{reason}"}}'})
    # A corrected address that no message reached yet gets a message of its own.
    from notify.requeue import plan_corrections

    created.update(plan_corrections(session, campaign, channels, now))
    restore()
    if "email" in created:  # California 1798.82(d)(5): not to the business's own mailboxes
        skip_business_credentials(session, campaign, config, now)
    _ensure_resets(session, campaign)
    return created


def _hash_anti_joins(session: Session):
    """Keep PostgreSQL off nested loops for the plan's NOT EXISTS; returns the undo.

    With statistics that say messages is (nearly) empty, as they do until autovacuum has
    analyzed the rows the first worker just planned, PostgreSQL picks a nested loop that
    compares every contact with every existing row: a worker joining or resuming a planned
    campaign then spent 40 s at 20,000 contacts, hours at a million. A hash anti join is
    linear. Transaction-local, so an error needs no undo.
    """
    if is_sqlite(session.get_bind()):
        return lambda: None
    before = session.scalar(text("SELECT current_setting('enable_nestloop')"))
    session.execute(text("SELECT set_config('enable_nestloop', 'off', true)"))
    return lambda: session.execute(text("SELECT set_config('enable_nestloop', :v, true)"),
                                   {"v": before})


def _ensure_resets(session: Session, campaign: Campaign) -> None:
    try:
        from notify.resets import tokens as reset_tokens
    except ImportError:  # resets module not installed in this build
        return
    reset_tokens.ensure_resets(session, campaign)


def status_totals(session: Session, campaign_id: int) -> dict[str, dict[str, int]]:
    """Counts of message rows by channel and status."""
    rows = session.execute(
        select(Message.channel, Message.status, func.count())
        .where(Message.campaign_id == campaign_id)
        .group_by(Message.channel, Message.status)
    )
    totals: dict[str, dict[str, int]] = {}
    for channel, status, n in rows:
        totals.setdefault(channel, {})[status] = n
    return totals


def pending_counts(engine: Engine, settings: Settings, name: str,
                   options: SendOptions) -> dict[str, int]:
    """How many messages a send would attempt now, by channel (plans, then rolls back)."""
    job = load_job(engine, settings, name, options)
    session = Session(engine)
    try:
        with session.begin():
            if options.notice != "reminder":
                plan(session, job.campaign, job.channels)
                session.flush()
            rows = session.execute(
                select(Message.channel, func.count())
                .where(Message.campaign_id == job.campaign.id,
                       Message.status.in_(IN_FLIGHT_STATUSES),
                       Message.channel.in_(job.channels),
                       *_notice_filter(options))
                .group_by(Message.channel)
            )
            counts = dict(rows.all())
            session.rollback()
    finally:
        session.close()
    return {ch: counts.get(ch, 0) for ch in job.channels}


def _notice_filter(options: SendOptions) -> list:
    return [Message.notice == options.notice] if options.notice else []


# ---------------------------------------------------------------- claiming work


_messages = Message.__table__
_contacts = Contact.__table__


def claim(engine: Engine, campaign_id: int, channel: str, worker: str, count: int,
          lease_seconds: float, notice: str | None = None) -> list[Item]:
    """Lease up to ``count`` claimable rows of one channel to ``worker``; oldest first.

    Claimable: pending or sending (in doubt or waiting to retry), not leased by a live
    worker, and due; in-doubt rows and due retries go before new ones. ``SKIP LOCKED`` lets
    concurrent workers take disjoint batches.
    """
    now = utcnow()
    m = _messages.c  # Core, not the ORM: nothing to synchronize, and less work per claim
    conditions = [
        m.campaign_id == campaign_id,
        m.channel == channel,
        or_(m.lease_expires_at.is_(None), m.lease_expires_at < now),
        or_(m.next_attempt_at.is_(None), m.next_attempt_at <= now),
    ]
    if notice:
        conditions.append(m.notice == notice)
    until = now + timedelta(seconds=lease_seconds)
    with Session(engine) as session, session.begin():
        ids: list[int] = []
        # One status at a time, each a range of ix_messages_queue in id order: a single scan
        # in id order over both statuses walks past every row already sent, on every claim,
        # so the cost of a claim would grow with the campaign.
        for status in (Status.SENDING, Status.PENDING):
            if len(ids) < count:
                ids += _lease(session, [*conditions, m.status == status],
                              count - len(ids), worker, until)
        if not ids:
            return []
        # Plain columns, not ORM objects: a claim loads hundreds of rows on the hot path.
        rows = session.connection().execute(
            select(*_CLAIM_MESSAGE, *_CLAIM_CONTACT)
            .join_from(_messages, _contacts, _contacts.c.id == _messages.c.contact_id)
            .where(_messages.c.id.in_(ids))
            .order_by(_messages.c.id)
        ).all()
        return [
            Item(id=r.id, contact_id=r.contact_id, channel=r.channel, notice=r.notice,
                 sequence=r.sequence, status=r.status, attempts=r.attempts,
                 first_attempt_at=r.first_attempt_at, address=r.address,
                 view=templates.ContactView.from_model(r))
            for r in rows
        ]


_CLAIM_MESSAGE = tuple(_messages.c[n] for n in (
    "id", "contact_id", "channel", "notice", "sequence", "status", "attempts",
    "first_attempt_at", "address"))
# The columns ContactView.from_model reads (their names do not clash with the above).
_CLAIM_CONTACT = tuple(_contacts.c[n] for n in (
    "key", "name", "email", "phone", "exposures", "extra", "country", "state", "locale",
    "enrollment_code"))


def _lease(session: Session, conditions: list, count: int, worker: str,
           until: datetime) -> list[int]:
    """Lease up to ``count`` rows matching ``conditions`` (lowest ids first); their ids."""
    m = _messages.c
    candidates = select(m.id).where(and_(*conditions)).order_by(m.id).limit(count)
    target: ColumnElement[bool]
    if is_sqlite(session.get_bind()):
        target = m.id.in_(candidates.scalar_subquery())
    else:
        # Lock the batch exactly once. As `id IN (subquery)` PostgreSQL may plan a nested
        # loop that re-runs the locking subquery for every row of messages (it does on a
        # table not yet analyzed): quadratic, and it keeps rows locked that it then does not
        # claim, so other workers' status updates wait for the whole statement.
        picked = (candidates.with_for_update(skip_locked=True)
                  .cte("claimable").prefix_with("MATERIALIZED"))
        target = m.id == picked.c.id
    return list(session.connection().execute(
        update(_messages)
        .where(target)
        .values(lease_owner=worker, lease_expires_at=until)
        .returning(m.id)
    ).scalars())


def outstanding(engine: Engine, campaign_id: int, channel: str,
                notice: str | None = None) -> float | None:
    """None when the channel has nothing left to do; else seconds until something may be.

    Rows leased by other live workers, and rows waiting to retry, keep a run going: `notify
    send` returns only when nothing is pending or leased.
    """
    now = utcnow()
    with Session(engine) as session:
        query = select(func.count(), func.min(Message.lease_expires_at),
                       func.min(Message.next_attempt_at)).where(
            Message.campaign_id == campaign_id,
            Message.channel == channel,
            Message.status.in_(IN_FLIGHT_STATUSES),
        )
        if notice:
            query = query.where(Message.notice == notice)
        n, lease_min, retry_min = session.execute(query).one()
    if not n:
        return None
    soonest = [t for t in (lease_min, retry_min) if t is not None and t > now]
    if not soonest:
        return 0.1
    return max(0.05, min(1.0, (min(soonest) - now).total_seconds()))


def release(engine: Engine, worker: str) -> None:
    """Give back every row this worker still leases (a clean stop leaves none in flight)."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(Message).where(Message.lease_owner == worker)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def renew(engine: Engine, worker: str, lease_seconds: float) -> None:
    """Extend this worker's leases: it is alive."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(Message)
            .where(Message.lease_owner == worker, Message.status.in_(IN_FLIGHT_STATUSES))
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )


# ---------------------------------------------------------------- recording (writer thread)


def _event(session: Session, item: Item, campaign_id: int, kind: str, source: str,
           now: datetime, detail: dict | None = None) -> None:
    session.execute(insert(Event).values(
        campaign_id=campaign_id, message_id=item.id, contact_id=item.contact_id, at=now,
        source=source, kind=kind, applied=True, detail=detail,
    ))


_BEGIN = bulk.Statement(
    "UPDATE messages SET status = 'sending', attempts = attempts + 1, transport = :transport, "
    "first_attempt_at = COALESCE(first_attempt_at, :now), next_attempt_at = NULL, "
    "last_event_at = :now, lease_expires_at = :until "
    "WHERE id = :id AND lease_owner = :worker AND status IN ('pending', 'sending')",
    now=UTCDateTime(), until=UTCDateTime())
_INSERT_EVENT = bulk.insert_into(Event.__table__, *(
    name for name in Event.__table__.c.keys() if name not in ("id", "replay_key")))


@dataclass
class Begin:
    """One message about to be handed to its provider."""

    job: Job
    item: Item
    worker: str
    lease_seconds: float
    want_token: bool
    # Rendered before the commit: the reset token in its link, and the hash of exactly what
    # will be handed over (email: the whole message; SMS: the body), kept in the `sending`
    # event of each attempt: the proof an in-doubt SMS is adopted by, and the record of
    # every copy of a re-sent email.
    token: str | None = None
    content_sha256: str | None = None
    now: datetime | None = None  # when the attempt began (taken before rendering)


def begin_attempts(session: Session, begins: list[Begin]
                   ) -> list[tuple[bool, str | None, datetime]]:
    """Commit `sending` (and issue reset tokens) for a group, before the provider is called.

    Returns (ok, raw token, attempt time) per message; not ok when the lease was lost to
    another worker or the row is already final, and then it must not be sent. A message
    rendered with ``Begin.token`` gets that token stored (or None when the reset was
    completed meanwhile: then its event carries no hash, and the caller renders it again).
    """
    default = utcnow()
    nows = {b.item.id: b.now or default for b in begins}
    params = [{"id": b.item.id, "worker": b.worker, "now": nows[b.item.id],
               "until": nows[b.item.id] + timedelta(seconds=b.lease_seconds),
               "transport": b.job.transports.get(b.item.channel)} for b in begins]
    conn = session.connection()
    updated = _BEGIN.execute(conn, params)
    ok_ids = {b.item.id for b in begins}
    if updated != len(begins):  # rare: find which rows this statement really moved
        moved: set[int] = set()
        for now in set(nows.values()):
            moved |= set(session.scalars(select(Message.id).where(
                Message.id.in_([i for i in ok_ids if nows[i] == now]),
                Message.lease_owner == begins[0].worker,
                Message.status == Status.SENDING, Message.last_event_at == now)))
        ok_ids = moved
    linked = [b for b in begins if b.item.id in ok_ids and b.want_token]
    tokens: dict[int, str | None] = {}
    if linked:
        from notify.resets import tokens as reset_tokens

        issued = reset_tokens.issue_tokens(
            session, linked[0].job.campaign, [(b.item.contact_id, b.item.id) for b in linked],
            now=nows[linked[0].item.id],
            raw_tokens=[b.token or reset_tokens.new_token() for b in linked])
        tokens = {b.item.id: token for b, token in zip(linked, issued, strict=True)}
    events = []
    for b in begins:
        if b.item.id not in ok_ids:
            continue
        detail = {"attempt": b.item.attempts + 1, "worker": b.worker,
                  "transport": b.job.transports.get(b.item.channel)}
        if b.content_sha256 and (not b.want_token or tokens.get(b.item.id) == b.token):
            detail["content_sha256"] = b.content_sha256
        events.append(_event_row(b.job.campaign.id, b.item, Status.SENDING, "send",
                                 nows[b.item.id], detail))
    _INSERT_EVENT.execute(conn, events)
    # A reminder exists only to carry a fresh link: if the reset was completed since it was
    # planned, there is nothing to remind of.
    done = [b for b in linked if b.item.notice == "reminder" and tokens.get(b.item.id) is None]
    for b in done:
        _skip_completed(session, b, nows[b.item.id])
        ok_ids.discard(b.item.id)
    return [(b.item.id in ok_ids, tokens.get(b.item.id), nows[b.item.id]) for b in begins]


def _record_content(session: Session, job: Job, item: Item, content_sha256: str) -> None:
    """The hash of what an attempt hands over, when it is not the one its `sending` event
    could carry (the message was rendered again without its reset link)."""
    _event(session, item, job.campaign.id, "content", "send", utcnow(),
           {"attempt": item.attempts + 1, "content_sha256": content_sha256})


def _attempt_proofs(engine: Engine, message_id: int) -> list[tuple[datetime, str]]:
    """(when the attempt began, hash of what it handed over) for every attempt on record."""
    with Session(engine) as session:
        rows = session.execute(
            select(Event.at, Event.detail).where(Event.message_id == message_id,
                                                 Event.kind.in_(("sending", "content")))
        ).all()
    proofs = []
    for at, detail in rows:
        digest = (detail or {}).get("content_sha256") if isinstance(detail, dict) else None
        if digest:
            proofs.append((at, digest))
    return proofs


def _skip_completed(session: Session, begin: Begin, now: datetime) -> None:
    session.execute(
        update(Message).where(Message.id == begin.item.id)
        .values(status=Status.SKIPPED, skip_reason="reset completed", last_event_at=now,
                lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(insert(Event).values(**_event_row(
        begin.job.campaign.id, begin.item, Status.SKIPPED, "send", now,
        {"reason": "reset completed"})))


def _event_row(campaign_id: int, item: Item, kind: str, source: str, now: datetime,
               detail: dict | None) -> dict:
    return event_values(campaign_id, item.id, item.contact_id, kind, source, now, detail)


_SENT = bulk.Statement(
    "UPDATE messages SET status = 'sent', sent_at = :sent_at, provider_message_id = :pid, "
    "last_event_at = :now, lease_owner = NULL, lease_expires_at = NULL, "
    "next_attempt_at = NULL, error_code = NULL, error_message = NULL, "
    "template = COALESCE(:template, template), "
    "template_version = COALESCE(:template_version, template_version), "
    "content_sha256 = COALESCE(:content_sha256, content_sha256) "
    "WHERE id = :id AND status IN ('pending', 'sending')",
    now=UTCDateTime(), sent_at=UTCDateTime())


@dataclass
class Sent:
    """A provider's acceptance of one message, to record."""

    job: Job
    item: Item
    provider_id: str | None
    provider_status: str | None
    content: dict
    source: str = "send"
    sent_at: datetime | None = None


def record_sent(session: Session, sents: list[Sent]) -> list[None]:
    """Commit `sent` with the provider's id for a group (one executemany)."""
    now = utcnow()
    conn = session.connection()
    # In contact order: the status triggers update each contact's reach row, and workers that
    # lock those rows in one order cannot deadlock each other (email and SMS of one contact
    # may be recorded by two workers at once).
    updated = _SENT.execute(conn, [
        {"id": x.item.id, "now": now, "sent_at": x.sent_at or now, "pid": x.provider_id,
         "template": x.content.get("template"),
         "template_version": x.content.get("template_version"),
         "content_sha256": x.content.get("content_sha256")}
        for x in sorted(sents, key=lambda x: x.item.contact_id)])
    _count_links(session, sents, updated, now)
    events = []
    for x in sents:
        detail = {"provider_id": x.provider_id}
        if x.provider_status:
            detail["provider_status"] = x.provider_status
        events.append(_event_row(x.job.campaign.id, x.item, Status.SENT, x.source, now, detail))
    _INSERT_EVENT.execute(conn, events)
    _apply_early(session, {x.provider_id: x.item.id for x in sents
                           if x.item.channel == "sms" and x.provider_id})
    return [None] * len(sents)


def _count_links(session: Session, sents: list[Sent], updated: int, now: datetime) -> None:
    """Count the reset links of the messages this group just recorded as handed over.

    Only messages that can carry a link are looked up (passwords exposed, a reset_url), and
    only those this statement moved to `sent` (rarely not all: then the moved ones are read).
    """
    linked = [x.item.id for x in sents
              if x.job.config.reset_url and templates.needs_reset(x.item.view)]
    if not linked:
        return
    if updated != len(sents):
        linked = list(session.scalars(select(Message.id).where(
            Message.id.in_(linked), Message.status == Status.SENT, Message.last_event_at == now)))
    from notify.resets import tokens as reset_tokens

    reset_tokens.count_links_sent(session, linked)


def _apply_early(session: Session, message_ids: dict[str, int]) -> None:
    """Apply status callbacks that arrived before these SMS ids were stored.

    Rare (a callback must beat our own commit), so one indexed query per group finds the
    ids that have any, and only those messages are loaded.
    """
    if not message_ids:
        return
    from notify import tracking

    waiting = session.scalars(
        select(Event.provider_message_id).distinct().where(
            Event.provider_message_id.in_(list(message_ids)),
            Event.message_id.is_(None), Event.applied.is_(False))
    ).all()
    for sid in waiting:
        if sid is None:  # not among the ids asked for: never NULL
            continue
        message = session.get(Message, message_ids[sid])
        if message is not None:
            tracking.apply_early_events(session, message)


def _record_retry(session: Session, job: Job, item: Item, result: Result, delay: float,
                  content: dict, handed_over: bool = True) -> None:
    """Due again after ``delay``. A message that never reached the provider (the transport's
    setup failed first) gives its attempt back: it was begun, not tried."""
    now = utcnow()
    given_back = {} if handed_over else {"attempts": Message.attempts - 1}
    session.execute(
        update(Message).where(Message.id == item.id)
        .values(next_attempt_at=now + timedelta(seconds=delay), lease_owner=None,
                lease_expires_at=None, error_code=result.error_code,
                error_message=(result.error_message or "")[:2000], last_event_at=now,
                **given_back, **content)
        .execution_options(synchronize_session=False)
    )
    detail = {"code": result.error_code, "message": (result.error_message or "")[:500],
              "retry_in_s": round(delay, 3), "attempt": item.attempts + 1}
    if not handed_over:
        detail["handed_over"] = False
    _event(session, item, job.campaign.id, "retry", "send", now, detail)


def _record_put_back(session: Session, job: Job, item: Item, result: Result, content: dict,
                     handed_over: bool, in_doubt: bool, kind: str) -> None:
    """Due again at once, the attempt given back: the provider was down (``kind``
    "outage") or the transport's setup is wrong ("retry"), nothing about this message.

    A message claimed new that surely did not reach the provider is ``pending`` again, as
    if never begun; one that may have (``in_doubt``), or was in doubt or retrying before,
    stays ``sending`` (an SMS is then looked up before it is sent again).
    """
    now = utcnow()
    values: dict[str, Any] = {"attempts": Message.attempts - 1}
    if item.status == Status.PENDING and not in_doubt:
        values.update(status=Status.PENDING, first_attempt_at=None)
    session.execute(
        update(Message).where(Message.id == item.id, Message.attempts > 0)
        .values(next_attempt_at=None, lease_owner=None, lease_expires_at=None,
                error_code=result.error_code,
                error_message=(result.error_message or "")[:2000], last_event_at=now,
                **values, **content)
        .execution_options(synchronize_session=False)
    )
    detail = {"code": result.error_code, "message": (result.error_message or "")[:500],
              "attempt": item.attempts + 1, "attempt_spent": False,
              "handed_over": handed_over}
    if in_doubt:
        detail["in_doubt"] = True
    _event(session, item, job.campaign.id, kind, "send", now, detail)


def _refund_attempts(session: Session, job: Job, ids: list[int]) -> None:
    """Give back the attempts that 5xx answers spent before they proved an outage."""
    now = utcnow()
    rows = session.execute(
        update(Message)
        .where(Message.id.in_(ids), Message.status == Status.SENDING, Message.attempts > 0)
        .values(attempts=Message.attempts - 1, next_attempt_at=None)
        .returning(Message.id, Message.contact_id)
        .execution_options(synchronize_session=False)
    ).all()
    for message_id, contact_id in rows:
        session.execute(insert(Event).values(
            campaign_id=job.campaign.id, message_id=message_id, contact_id=contact_id, at=now,
            source="send", kind="outage", applied=True,
            detail={"attempt_given_back": True,
                    "reason": "the provider's 5xx answers turned out to be an outage"}))


def _unlease(engine: Engine, message_id: int, worker: str) -> None:
    """Give one claimed message back, not begun (due again at once)."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(Message).where(Message.id == message_id, Message.lease_owner == worker)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def _record_failed(session: Session, job: Job, item: Item, code: str | None,
                   message: str | None, content: dict) -> None:
    now = utcnow()
    session.execute(
        update(Message).where(Message.id == item.id)
        .values(status=Status.FAILED, error_code=code, error_message=(message or "")[:2000],
                last_event_at=now, lease_owner=None, lease_expires_at=None,
                next_attempt_at=None, **content)
        .execution_options(synchronize_session=False)
    )
    _event(session, item, job.campaign.id, Status.FAILED, "send", now,
           {"code": code, "message": (message or "")[:500], "attempts": item.attempts + 1})
    row = session.get(Message, item.id)
    if row is not None:
        session.refresh(row)
        fallback.plan_fallback(session, job.config, row)


def _known_provider_ids(engine: Engine, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    with Session(engine) as session:
        return set(session.scalars(
            select(Message.provider_message_id).where(Message.provider_message_id.in_(ids))
        ))


# ---------------------------------------------------------------- the run


class Runner:
    """One worker's run over one campaign: a pipeline per channel."""

    def __init__(self, engine: Engine, settings: Settings, job: Job, options: SendOptions
                 ) -> None:
        self.engine = engine
        self.settings = settings
        self.job = job
        self.options = options
        self.worker = options.worker_id or (
            f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
        self.summary = SendSummary(campaign=job.campaign.name)
        self.stop = asyncio.Event()
        self.claimed = 0
        self.fatal: NotifyError | None = None
        self.failure: BaseException | None = None  # a bug or a lost database: stop, re-raise
        self.finished: set[str] = set()
        self.outages: dict[str, ChannelOutage] = {}
        self.observer = options.observer
        self.sms_from = settings.sms_from or job.config.sms_from or None
        if "sms" in job.channels and not self.sms_from:
            raise NotifyError("no SMS sender: set sms_from in the campaign or NOTIFY_SMS_FROM")

    def _batch_size(self, channel: str) -> int:
        if self.options.batch_size:
            return self.options.batch_size
        size = max(50, self.job.concurrency * 4)
        rate = self.job.rates.get(channel)
        if rate:  # about 15 s of work at that rate: leases stay short to take over
            size = min(size, max(self.job.concurrency * 2, int(rate * 15)))
        return min(size, 500)

    def _remaining(self) -> int | None:
        if self.options.limit is None:
            return None
        return max(0, self.options.limit - self.claimed)

    async def run(self) -> SendSummary:
        """Send until nothing is pending or leased for the chosen channels (or stopped)."""
        started = time.monotonic()
        # Each resource is released as soon as it exists, in the reverse order of its start
        # (the ticker and progress first; the leases and signal handlers last).
        async with AsyncExitStack() as stack:
            self._install_signals()
            stack.callback(self._restore_signals)
            stack.push_async_callback(asyncio.to_thread, release, self.engine, self.worker)
            self.recorder = _recorder(self.engine)
            stack.push_async_callback(asyncio.to_thread, self.recorder.close)
            messengers: dict[str, Messenger] = {}
            for ch in self.job.channels:
                messengers[ch] = make_messenger(ch, self.settings, self.job.config,
                                                self.job.concurrency,
                                                timeout=self.options.provider_timeout)
                stack.push_async_callback(messengers[ch].close)
            stack.callback(asyncio.create_task(self._heartbeat()).cancel)
            low, high = self.options.outage_backoff
            self.outages = {
                ch: ChannelOutage(ch, messengers[ch].provider, backoff_min=low,
                                  backoff_max=high, max_outage=self.options.max_outage,
                                  on_start=self._outage_started, on_end=self._outage_ended)
                for ch in self.job.channels
            }
            if self.observer is not None:
                stack.callback(self.observer.end)
                totals = await asyncio.to_thread(_totals_to_send, self)
                self.observer.begin(totals, {ch: self.job.rates.get(ch) or None
                                             for ch in self.job.channels})
            stack.callback(asyncio.create_task(self._tick()).cancel)
            outcomes = await asyncio.gather(
                *(self._pipeline(ch, messengers[ch]) for ch in self.job.channels),
                return_exceptions=True)  # the teardown runs only once all have ended
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    self._fail(outcome)
        if self.failure is not None:
            raise self.failure
        if self.fatal is not None:
            raise self.fatal
        self.summary.elapsed = time.monotonic() - started
        self.summary.interrupted = self.stop.is_set() and not self._limit_reached()
        with session_scope(self.engine) as session:
            self.summary.totals = status_totals(session, self.job.campaign.id)
        return self.summary

    def _limit_reached(self) -> bool:
        remaining = self._remaining()
        return remaining is not None and remaining <= 0

    async def _pipeline(self, channel: str, messenger) -> None:
        """Claim, prepare and hand over one channel's messages, each stage its own task(s).

        The preparer commits `sending` (and reset links) for a few messages at a time and
        renders them, while the consumers hand earlier ones to the provider: the commit of
        one message's attempt is not on the critical path of another's hand-over.
        """
        claimed: asyncio.Queue[Item | None] = asyncio.Queue()
        n_consumers = self._consumers(channel)
        ahead = self._ahead(channel, n_consumers)
        # Prepared messages are committed `sending`, in flight: keep only a few waiting.
        ready: asyncio.Queue[_Ready | None] = asyncio.Queue(maxsize=ahead)
        throttle = Throttle(self.engine, self.job.campaign.id, channel,
                            self.job.rates.get(channel))
        preparer = asyncio.create_task(self._prepare(channel, claimed, ready, n_consumers,
                                                     ahead))
        outage = self.outages[channel]
        consumers = [asyncio.create_task(self._consume(claimed, ready, messenger, throttle,
                                                       outage))
                     for _ in range(n_consumers)]
        try:
            await self._produce(channel, claimed)
        except Exception as exc:  # e.g. a claim the database refused: stop every channel
            self._fail(exc)
        finally:
            claimed.put_nowait(None)
            await preparer
            await asyncio.gather(*consumers)
            await messenger.flush()
            self.finished.add(channel)

    def _ahead(self, channel: str, n_consumers: int) -> int:
        """How many messages may be begun before a consumer is free to hand them over.

        Enough to hide a group commit at full speed; at a set rate, no more than a quarter
        second's worth, so a stop (which still hands them over) ends promptly.
        """
        ahead = min(PREPARE_GROUP, n_consumers)
        rate = self.job.rates.get(channel)
        if rate:
            ahead = min(ahead, math.ceil(rate * PREPARE_SECONDS))
        return max(1, ahead)

    def _consumers(self, channel: str) -> int:
        """``--concurrency``, but no more than the rate lets start within SLOT_AHEAD seconds.

        A consumer waits for its rate slot in the middle of its SMTP transaction (after RCPT);
        at a slow rate, many consumers would keep the relay waiting long enough to time out.
        """
        rate = self.job.rates.get(channel)
        if not rate:
            return self.job.concurrency
        return max(1, min(self.job.concurrency, math.ceil(rate * SLOT_AHEAD)))

    def _fallback_may_come(self, channel: str) -> bool:
        """True while the email pipeline runs and its failures may still queue SMS."""
        config = self.job.config
        return (channel == "sms" and config.fallback == "sms" and "sms" not in config.channels
                and "email" in self.job.channels and "email" not in self.finished)

    async def _produce(self, channel: str, queue: asyncio.Queue) -> None:
        size = self._batch_size(channel)
        while not self.stop.is_set():
            remaining = self._remaining()
            if remaining == 0:
                return
            # Keep one batch queued ahead so consumers never starve between claims.
            if queue.qsize() >= size:
                await asyncio.sleep(0.01)
                continue
            want = size if remaining is None else min(size, remaining)
            batch = await asyncio.to_thread(
                claim, self.engine, self.job.campaign.id, channel, self.worker, want,
                self.options.lease_seconds, self.options.notice)
            if batch:
                self.claimed += len(batch)
                for item in batch:
                    queue.put_nowait(item)
                continue
            await queue.join()
            wait = await asyncio.to_thread(outstanding, self.engine, self.job.campaign.id,
                                           channel, self.options.notice)
            if wait is None:
                if not self._fallback_may_come(channel):
                    return
                wait = 0.2
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def _prepare(self, channel: str, claimed: asyncio.Queue, ready: asyncio.Queue,
                       n_consumers: int, ahead: int) -> None:
        """Begin and render claimed messages in small groups; queue them for the consumers.

        Ends (telling every consumer to end) at the producer's end-of-work marker. Once the
        run is stopping, claimed messages are left unstarted: their leases are released.
        """
        cancelled = False
        outage = self.outages[channel]
        items: list[Item] = []  # taken from the queue, not yet begun
        end = False
        try:
            while True:
                probe = None
                if not items and not end:
                    taken = await _take_some(claimed, ahead)
                    end = taken[-1] is None
                    items = [i for i in taken if i is not None]
                if items and not self.stop.is_set():
                    # While the provider is down, nothing is begun but one probe at a time.
                    try:
                        probe = await outage.admit(self.stop)
                    except OutageTooLong as exc:
                        self._give_up(exc)
                        probe = None
                if self.stop.is_set():
                    for _ in items:
                        claimed.task_done()
                    items = []
                elif items:
                    group = items[:1] if probe is not None else items
                    items = items[len(group):]
                    try:
                        await self._prepare_group(group, claimed, ready, probe)
                    except Exception as exc:
                        self._fail(exc)
                        for _ in items:
                            claimed.task_done()
                        await _drain(claimed, end)  # the producer waits on every item
                        return
                if end and not items:
                    claimed.task_done()
                    return
        except asyncio.CancelledError:
            cancelled = True  # torn down: the consumers are being cancelled too
            raise
        finally:
            if not cancelled:
                for _ in range(n_consumers):
                    await ready.put(None)

    def _fail(self, exc: BaseException) -> None:
        """Stop the run on an unexpected error; :meth:`run` raises it once all is closed."""
        if self.failure is None:
            self.failure = exc
        self.stop.set()

    def _give_up(self, exc: NotifyError) -> None:
        """End the run with ``exc`` (an outage that lasted too long): begun messages go back
        unspent, unstarted ones are released, and :meth:`run` raises it at the end."""
        self.fatal = self.fatal or exc
        self.stop.set()

    def _outage_started(self, state: OutageState) -> None:
        if self.observer is not None:
            self.observer.outage_started(state)

    def _outage_ended(self, state: OutageState, seconds: float) -> None:
        if self.observer is not None:
            self.observer.outage_ended(state, seconds)

    async def _tick(self) -> None:
        """Tell the observer time passed, and end the run when an outage lasted too long
        even while no message waits to probe (e.g. all were put back and are not yet due)."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self._check_outages()
            if self.observer is not None:
                self.observer.tick()

    def _check_outages(self) -> None:
        for outage in self.outages.values():
            expired = outage.too_long()
            if expired is not None:
                self._give_up(expired)

    async def _prepare_group(self, items: list[Item], claimed: asyncio.Queue,
                             ready: asyncio.Queue, probe: int | None = None) -> None:
        """Begin and render ``items``; each ends queued for a consumer (which marks it done)
        or marked done here, even when this raises (the producer waits for every one).

        ``probe``: the outage ticket of the one item sent to find out whether the provider
        is back (it is settled here when the item never reaches a consumer)."""
        left = list(items)
        queued = False
        try:
            # An SMS in doubt is first looked up at the provider; its consumer does it all.
            for item in [i for i in left if _in_doubt_sms(i)]:
                await ready.put(_Ready(item, probe=probe))
                queued = True
                left.remove(item)
            begun = await self._begin(list(left))
            for item, prepared in zip(list(left), begun, strict=True):
                left.remove(item)
                if prepared is None:  # lost to another worker, final, or template failed
                    claimed.task_done()
                else:
                    prepared.probe = probe
                    await ready.put(prepared)  # then its consumer marks it done
                    queued = True
        finally:
            for _ in left:
                claimed.task_done()
            if not queued and probe is not None:
                self.outages[items[0].channel].settle(probe)

    async def _begin(self, items: list[Item]) -> list[_Ready | None]:
        """Render ``items`` and commit their attempts (`sending`, with each one's content
        hash and reset link) in one group; what to hand over, or None per item.

        Rendering comes first so that the commit carries the hash of exactly what will be
        handed over. None: the template failed (recorded `failed`), or the row was lost to
        another worker or is final (nothing to do).
        """
        now = utcnow()
        drafts: list[tuple[Item, Begin, Outgoing, dict]] = []
        results: dict[int, _Ready | None] = {}
        for item in items:
            draft = await self._draft(item, now)
            if draft is None:
                results[item.id] = None
            else:
                drafts.append(draft)
        begun = await self.recorder.batched_all(begin_attempts, [d[1] for d in drafts])
        for (item, begin, outgoing, content), (ok, token, _at) in zip(drafts, begun,
                                                                     strict=True):
            if not ok:
                results[item.id] = None
            elif begin.want_token and token != begin.token:
                # The reset was completed since the claim: the notice goes without a link.
                results[item.id] = await self._without_link(item)
            else:
                results[item.id] = _Ready(item, outgoing, content)
        return [results[item.id] for item in items]

    async def _draft(self, item: Item, now: datetime
                     ) -> tuple[Item, Begin, Outgoing, dict] | None:
        """One message rendered for the attempt beginning ``now`` (with a fresh reset link
        when it carries one); None when the template failed (then recorded `failed`)."""
        job = self.job
        want = templates.needs_reset(item.view) and bool(job.config.reset_url)
        token = None
        if want:
            from notify.resets import tokens as reset_tokens

            token = reset_tokens.new_token()
        first = item.first_attempt_at
        if item.first_attempt_at is None:
            item.first_attempt_at = now  # the Date of the email: its first attempt
        try:
            outgoing, content = self._render(item, token)
        except NotifyError as exc:
            item.first_attempt_at = first
            await self.recorder.call(_record_failed, job, item, "template", str(exc), {})
            self._done(item, "failed")
            return None
        begin = Begin(job, item, self.worker, self.options.lease_seconds, want, token,
                      content["content_sha256"], now)
        return item, begin, outgoing, content

    async def _without_link(self, item: Item) -> _Ready | None:
        """Render a begun message again without its reset link, and record the hash of that
        content for its attempt (before it is handed over)."""
        try:
            outgoing, content = self._render(item, None)
        except NotifyError as exc:
            await self.recorder.call(_record_failed, self.job, item, "template", str(exc), {})
            self._done(item, "failed")
            return None
        await self.recorder.call(_record_content, self.job, item, content["content_sha256"])
        return _Ready(item, outgoing, content)

    async def _consume(self, claimed: asyncio.Queue, ready: asyncio.Queue, messenger,
                       throttle: Throttle, outage: ChannelOutage) -> None:
        while True:
            prepared = await ready.get()
            if prepared is None:
                return
            try:
                if prepared.outgoing is None:
                    await self._deliver(prepared, messenger, throttle, outage)
                else:
                    await self._hand_over(prepared, messenger, throttle, outage)
            except Exception as exc:
                self._fail(exc)  # this consumer goes on taking (and dropping) its share
            finally:
                outage.settle(prepared.probe)  # a probe that got no answer: probe again
                claimed.task_done()

    async def _deliver(self, ready: _Ready, messenger, throttle: Throttle,
                       outage: ChannelOutage) -> None:
        """Reconcile, begin, render and hand over one message (an SMS in doubt)."""
        item = ready.item
        if self.stop.is_set() or outage.hold_back(ready.probe):
            await asyncio.to_thread(_unlease, self.engine, item.id, self.worker)
            return  # not started: due again at once (at the end of the outage)
        if _in_doubt_sms(item):
            try:
                reconciled = await self._reconciled(item, messenger)
            except ProviderDown as exc:
                # The lookup could not reach the provider: the outage rule, not a stop.
                outage.report(exc.kind, str(exc), item.id, ready.probe)
                await asyncio.to_thread(_unlease, self.engine, item.id, self.worker)
                return
            outage.report(None, None)  # the provider answered
            if reconciled:
                return
        prepared = (await self._begin([item]))[0]
        if prepared is not None:
            prepared.probe = ready.probe
            await self._hand_over(prepared, messenger, throttle, outage)

    async def _hand_over(self, prepared: _Ready, messenger, throttle: Throttle,
                         outage: ChannelOutage) -> None:
        """Push one begun message through its messenger, then record the answer.

        A begun message is committed `sending`: it is handed over even while the run is
        stopping (it is in flight), unless the transport's setup is known to be wrong or
        its provider is down (then it goes back without spending its attempt).
        """
        job, item, content = self.job, prepared.item, prepared.content
        outgoing = prepared.outgoing
        if self.failure is not None:
            return  # its answer could not be recorded: it stays in doubt (resent later)
        if self.fatal is not None or outage.hold_back(prepared.probe):
            kind = "outage" if outage.active or isinstance(self.fatal, OutageTooLong) \
                else "retry"
            state = outage.state
            error = self.fatal if self.fatal is not None else (
                state.error if state is not None else None)
            back = Result(outcome="retry", error_code="config" if kind == "retry"
                          else "outage", error_message=str(error))
            await self.recorder.call(_record_put_back, job, item, back, content, False,
                                     False, kind)
            return
        if outgoing is None:  # never rendered: nothing to hand over
            return
        handed_over = False

        async def ready() -> None:  # the messenger's last step before hand-over
            nonlocal handed_over
            await throttle.acquire()
            handed_over = True

        outgoing.ready = ready
        try:
            result = await messenger.push(outgoing)
        except TransportConfigError as exc:
            # Wrong credentials or relay setup: every message would fail the same way. Put
            # this one back (due now) and stop the run with the reason.
            back = Result(outcome="retry", error_code="config", error_message=str(exc))
            await self.recorder.call(_record_put_back, job, item, back, content,
                                     handed_over, False, "retry")
            self.fatal = self.fatal or exc
            self.stop.set()
            return
        finally:
            if handed_over:
                throttle.release()
        if result.candidates:
            result = await self._adoptable(result)
        if outage.report(result.outage, result.error_message, item.id, prepared.probe):
            # The provider is down: this message goes back unspent (and so do the earlier
            # 5xx answers of the streak that turned out to be an outage).
            await self.recorder.call(_record_put_back, job, item, result, content,
                                     handed_over, result.in_doubt, "outage")
            refund = outage.refund()
            if refund:
                await self.recorder.call(_refund_attempts, job, refund)
            return
        if result.outcome == "retry" and result.error_code == "429":
            # Too fast for the provider: slow the whole channel, not just this message.
            throttle.pause(result.retry_after or 1.0)
        await self._record(item, result, content)

    async def _adoptable(self, result: Result) -> Result:
        """A timed-out SMS push found at the provider: adopt the first matching SID no row
        holds; when every match belongs to another row, this one is still in doubt."""
        known = await asyncio.to_thread(_known_provider_ids, self.engine,
                                        list(result.candidates))
        for sid in result.candidates:
            if sid not in known:
                return Result("sent", provider_id=sid, provider_status=result.provider_status,
                              error_message=result.error_message)
        return Result("retry", error_code="timeout", outage="connection", in_doubt=True,
                      error_message="timed out; the matching SMS at the provider belongs "
                                    "to another message")

    def _render(self, item: Item, token: str | None) -> tuple[Outgoing, dict]:
        job = self.job
        reset_url = None
        if token:
            from notify.resets import tokens as reset_tokens

            reset_url = reset_tokens.reset_url(job.config, token)
        to = item.address
        if to is None:  # planning gives every row an address (rows without one are skipped)
            raise NotifyError(f"message {item.id} has no address")
        rendered: templates.RenderedEmail | templates.RenderedSms
        if item.channel == "email":
            rendered = job.notices.render_email(item.view, notice=item.notice,
                                                reset_url=reset_url)
            message_id = mime.message_id_for(job.config, job.campaign.id, item.id)
            # Date = the first attempt, so a re-send after a crash is the same message.
            data = mime.build_email(job.config, rendered, to, message_id,
                                    when=item.first_attempt_at or utcnow())
            outgoing = Outgoing(row_id=item.id, channel="email", to=to, data=data,
                                message_id=message_id, sender=job.envelope_sender(item.id))
            digest = hashlib.sha256(data).hexdigest()
        else:
            rendered = job.notices.render_sms(item.view, notice=item.notice,
                                              reset_url=reset_url)
            outgoing = Outgoing(row_id=item.id, channel="sms", to=to,
                                body=rendered.text, sender=self.sms_from)
            digest = hashlib.sha256(rendered.text.encode()).hexdigest()
        content = {"template": f"{rendered.template}/{item.notice}",
                   "template_version": rendered.version, "content_sha256": digest}
        return outgoing, content

    async def _record(self, item: Item, result: Result, content: dict) -> None:
        job = self.job
        if result.outcome == "sent":
            provider_id = result.provider_id
            await self.recorder.batched(
                record_sent, Sent(job, item, provider_id, result.provider_status, content))
            self._done(item, "sent")
        elif result.outcome == "retry" and item.attempts + 1 < self._attempt_cap(result):
            delay = self._backoff(item.attempts + 1, result.retry_after)
            await self.recorder.call(_record_retry, job, item, result, delay, content)
            self._done(item, "retry", final=False)
        else:
            await self.recorder.call(_record_failed, job, item, result.error_code,
                                     result.error_message, content)
            self._done(item, "failed")

    def _attempt_cap(self, result: Result) -> int:
        # Being told to slow down says nothing about the message: allow more of those.
        if result.error_code == "429":
            return self.job.max_attempts * 4
        return self.job.max_attempts

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(RETRY_CAP_SECONDS, self.options.retry_base * (2 ** (attempt - 1)))
        delay *= random.uniform(1.0, 1.2)  # spread retries of a burst apart
        return max(delay, retry_after or 0.0)

    async def _reconciled(self, item: Item, messenger) -> bool:
        """True when the provider already has this in-doubt SMS (then it is adopted).

        Proof before adoption: only a message created at or after one of this row's attempts
        began (less ADOPT_SKEW for clocks), whose body is exactly what that attempt handed
        over (its hash in the attempt's `sending` event), and whose SID no row holds. An
        unrelated text to the same number (a login code, another campaign) is never taken
        for the notice: then the notice is sent.
        """
        proofs = await asyncio.to_thread(_attempt_proofs, self.engine, item.id)
        if not proofs:
            return False  # nothing on record to prove a match with
        since = min(at for at, _ in proofs) - ADOPT_SKEW
        found = await messenger.find_sent(item.address, since)
        matching = [f for f in found if f.body is not None and f.created_at is not None
                    and _proves(f, proofs)]
        known = await asyncio.to_thread(
            _known_provider_ids, self.engine, [f.provider_id for f in matching])
        fresh = sorted((f for f in matching if f.provider_id not in known),
                       key=lambda f: f.created_at)
        if not fresh:
            return False
        match = fresh[0]
        await self.recorder.batched(
            record_sent, Sent(self.job, item, match.provider_id, match.status, {}, "reconcile",
                              match.created_at))
        self._done(item, "reconciled")
        return True

    def _done(self, item: Item, outcome: str, final: bool = True) -> None:
        self.summary.done[(item.channel, outcome)] += 1
        if self.observer is not None and final:
            self.observer.done(item.channel, outcome)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.options.lease_seconds / 3)
            try:
                await asyncio.to_thread(renew, self.engine, self.worker,
                                        self.options.lease_seconds)
            except Exception:  # a missed renewal is retried; the lease still has time
                continue

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        self._signals = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._request_stop)
                self._signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _restore_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)

    def _request_stop(self) -> None:
        if not self.stop.is_set():
            print("\nStopping: finishing and recording the messages in flight...",
                  file=sys.stderr)
        self.stop.set()


@dataclass
class _Ready:
    """A claimed message and, once begun and rendered, what to hand over."""

    item: Item
    outgoing: Outgoing | None = None
    content: dict = field(default_factory=dict)
    probe: int | None = None  # the outage probe ticket it carries, if any


def _proves(found, proofs: list[tuple[datetime, str]]) -> bool:
    """True when ``found`` (a provider message) is exactly what one of the attempts handed
    over, created at or after that attempt began (less ADOPT_SKEW)."""
    digest = hashlib.sha256(found.body.encode()).hexdigest()
    created = _aware(found.created_at)
    return any(digest == expected and created >= _aware(began) - ADOPT_SKEW
               for began, expected in proofs)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _in_doubt_sms(item: Item) -> bool:
    """An SMS attempted before (a crash, a lost answer, a retry): the provider may already
    have it. Its attempt count may be 0 (given back after an outage), its status says."""
    return item.channel == "sms" and item.status == Status.SENDING \
        and item.first_attempt_at is not None


async def _take_some(queue: asyncio.Queue, most: int) -> list:
    """The next item (waiting for it), and whatever else is already queued, up to ``most``."""
    items = [await queue.get()]
    while len(items) < most and items[-1] is not None and not queue.empty():
        items.append(queue.get_nowait())
    return items


async def _drain(queue: asyncio.Queue, ended: bool) -> None:
    """Mark every item as done, up to and including the end marker (unless seen already)."""
    if ended:
        queue.task_done()
        return
    while True:
        item = await queue.get()
        queue.task_done()
        if item is None:
            return


def _recorder(engine: Engine):
    from notify.recorder import Recorder

    return Recorder(engine)


def _totals_to_send(runner: Runner) -> dict[str, int]:
    """Messages this run is to attempt, per channel (for the observer's progress)."""
    with Session(runner.engine) as session:
        counts = dict(session.execute(
            select(Message.channel, func.count()).where(
                Message.campaign_id == runner.job.campaign.id,
                Message.status.in_(IN_FLIGHT_STATUSES),
                Message.channel.in_(runner.job.channels),
                *_notice_filter(runner.options),
            ).group_by(Message.channel)).all())
    totals = {ch: counts.get(ch, 0) for ch in runner.job.channels}
    if runner.options.limit is not None:
        left = runner.options.limit
        for ch in totals:
            totals[ch] = min(totals[ch], left)
    return totals


# ---------------------------------------------------------------- entry points


def _dry_run(engine: Engine, job: Job, options: SendOptions) -> SendSummary:
    """Plan and render everything that would be sent, then roll it all back."""
    started = time.monotonic()
    summary = SendSummary(campaign=job.campaign.name, dry_run=True)
    # A link as long as a real one, so SMS segment counts are what sending will see.
    placeholder = templates.reset_link(job.config, templates.sample_token())
    session = Session(engine)
    try:
        with session.begin():
            if options.notice != "reminder":
                summary.planned = plan(session, job.campaign, job.channels)
                session.flush()
            query = (
                select(Message, Contact).join(Contact, Contact.id == Message.contact_id)
                .where(Message.campaign_id == job.campaign.id,
                       Message.status.in_(IN_FLIGHT_STATUSES),
                       Message.channel.in_(job.channels), *_notice_filter(options))
                .order_by(Message.id)
            )
            if options.limit is not None:
                query = query.limit(options.limit)
            for message, contact in session.execute(query):
                view = templates.ContactView.from_model(contact)
                url = placeholder if templates.needs_reset(view) else None
                if message.channel == "email":
                    job.notices.render_email(view, notice=message.notice, reset_url=url)
                else:
                    job.notices.render_sms(view, notice=message.notice, reset_url=url)
                summary.done[(message.channel, "would send")] += 1
            summary.totals = status_totals(session, job.campaign.id)
            summary.skipped = skipped_counts(session, job.campaign.id, job.channels, options)
            session.rollback()
    finally:
        session.close()
    summary.elapsed = time.monotonic() - started
    return summary


async def run_campaign(engine: Engine, settings: Settings, name: str,
                       options: SendOptions) -> SendSummary:
    """Plan the campaign's rows and send everything pending (async entry point)."""
    job = await asyncio.to_thread(load_job, engine, settings, name, options)
    if options.dry_run:
        summary = await asyncio.to_thread(_dry_run, engine, job, options)
        summary.transports = dict(job.transports)
        return summary
    planned: Counter = Counter()
    if options.notice != "reminder":  # reminders are planned by resets.reminders
        with session_scope(engine) as session:
            planned = plan(session, job.campaign, job.channels)
    runner = Runner(engine, settings, job, options)
    summary = await runner.run()
    summary.planned = planned
    summary.transports = dict(job.transports)
    return summary


def send_campaign(engine: Engine, settings: Settings, name: str,
                  options: SendOptions | None = None) -> SendSummary:
    """Plan and send a campaign to completion; safe to run again, and in several processes."""
    # The event loop keeps the rate; hand it the GIL within 1 ms of the recorder thread
    # holding it (Python's default, 5 ms, is a whole slot at 200/s).
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, 0.001))
    try:
        return asyncio.run(run_campaign(engine, settings, name, options or SendOptions()))
    finally:
        sys.setswitchinterval(previous)


__all__ = [
    "SendOptions", "SendSummary", "send_campaign", "run_campaign", "plan", "claim",
    "pending_counts", "status_totals",
]
