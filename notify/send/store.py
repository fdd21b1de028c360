"""The send engine's SQL, as listmonk's Store: planning, claiming, leasing and recording.

* Planning: the SELECT of the first-notice rows per channel, which ``events.create_messages``
  inserts with the ``skipped`` events (``plan_first_notices``), the counts a run reports.
* Claiming and leasing: workers claim batches of rows with a lease (``FOR UPDATE SKIP
  LOCKED`` on PostgreSQL; SQLite serializes writers), renewed while the worker lives
  (``renew``); a dead worker's lease runs out and its rows are taken over.
* Recording, on the recorder's writer thread: ``sending`` is committed (with the attempt
  count) before the provider is called (``begin_attempts``), and the provider's answer
  (``record_sent``, ``record_retry``, ``record_failed``, ``record_put_back``) before the worker
  moves on. Each is an ``events.Transition`` (the UPDATE of the row); ``events.change``
  applies it to a group and writes each row's event in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Engine,
    and_,
    bindparam,
    column,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from notify import events, fallback, templates
from notify.db import is_sqlite
from notify.models import (
    IN_FLIGHT_STATUSES,
    Contact,
    Event,
    Message,
    Status,
    UTCDateTime,
    utcnow,
)
from notify.send.options import SendOptions
from notify.transports import (
    Result,
)

if TYPE_CHECKING:
    from notify.send.plan import Job


def skipped_counts(
    session: Session, campaign_id: int, channels: tuple[str, ...], options: SendOptions
) -> dict[str, dict[str, int]]:
    """Skipped messages by channel and reason (of the notices this send covers)."""
    rows = session.execute(
        select(Message.channel, Message.skip_reason, func.count())
        .where(
            Message.campaign_id == campaign_id,
            Message.status == Status.SKIPPED,
            Message.channel.in_(channels),
            *notice_filter(options.notice),
        )
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


# A contact's first notice on one channel: ``skipped`` with the reason where it has no
# address there. The NOT EXISTS keeps a re-plan from offering every row to the INSERT.
_FIRST_NOTICES = """
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
"""


def plan_first_notices(session: Session, campaign_id: int, channel: str, now: datetime) -> int:
    """Create the channel's first-notice rows that do not exist yet (``skipped`` with the
    reason where the contact has no address for it; only those get an event now, the
    others' first event is their attempt); returns how many rows were created."""
    col = "email" if channel == "email" else "phone"
    reason = "no email address" if channel == "email" else "no phone number"
    rows = (
        text(_FIRST_NOTICES.format(col=col))
        .bindparams(
            bindparam("now", now, type_=UTCDateTime()),
            channel=channel,
            campaign_id=campaign_id,
            reason=reason,
            false=False,
        )
        .columns(*(column(name) for name in events.MESSAGE_COLUMNS))
    )
    return events.create_messages(
        session,
        rows,
        campaign_id=campaign_id,
        at=now,
        source="plan",
        detail={"reason": reason},
        logged=(Status.SKIPPED,),
    )


def hash_anti_joins(session: Session):
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
    return lambda: session.execute(
        text("SELECT set_config('enable_nestloop', :v, true)"), {"v": before}
    )


def in_flight_counts(
    session: Session, campaign_id: int, channels: tuple[str, ...], notice: str | None
) -> dict[Any, int]:
    """Messages still to attempt (pending or sending) by channel, of ``notice`` if given."""
    return dict(
        session.execute(
            select(Message.channel, func.count())
            .where(
                Message.campaign_id == campaign_id,
                Message.status.in_(IN_FLIGHT_STATUSES),
                Message.channel.in_(channels),
                *notice_filter(notice),
            )
            .group_by(Message.channel)
        ).all()
    )


def in_flight_messages(
    session: Session,
    campaign_id: int,
    channels: tuple[str, ...],
    notice: str | None,
    limit: int | None,
) -> Any:
    """The messages still to attempt with their contacts, oldest first (the dry run's)."""
    query = (
        select(Message, Contact)
        .join(Contact, Contact.id == Message.contact_id)
        .where(
            Message.campaign_id == campaign_id,
            Message.status.in_(IN_FLIGHT_STATUSES),
            Message.channel.in_(channels),
            *notice_filter(notice),
        )
        .order_by(Message.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return session.execute(query)


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


def notice_filter(notice: str | None) -> list:
    """Only messages of ``notice`` (``notice`` or ``reminder``) when given."""
    return [Message.notice == notice] if notice else []


_messages = Message.__table__


_contacts = Contact.__table__


def claim(
    engine: Engine,
    campaign_id: int,
    channel: str,
    worker: str,
    count: int,
    lease_seconds: float,
    notice: str | None = None,
) -> list[Item]:
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
                ids += _lease(
                    session, [*conditions, m.status == status], count - len(ids), worker, until
                )
        if not ids:
            return []
        # Plain columns, not ORM objects: a claim loads hundreds of rows on the hot path.
        rows = (
            session.connection()
            .execute(
                select(*_CLAIM_MESSAGE, *_CLAIM_CONTACT)
                .join_from(_messages, _contacts, _contacts.c.id == _messages.c.contact_id)
                .where(_messages.c.id.in_(ids))
                .order_by(_messages.c.id)
            )
            .all()
        )
        return [
            Item(
                id=r.id,
                contact_id=r.contact_id,
                channel=r.channel,
                notice=r.notice,
                sequence=r.sequence,
                status=r.status,
                attempts=r.attempts,
                first_attempt_at=r.first_attempt_at,
                address=r.address,
                view=templates.ContactView.from_model(r),
            )
            for r in rows
        ]


_CLAIM_MESSAGE = tuple(
    _messages.c[n]
    for n in (
        "id",
        "contact_id",
        "channel",
        "notice",
        "sequence",
        "status",
        "attempts",
        "first_attempt_at",
        "address",
    )
)


# The columns ContactView.from_model reads (their names do not clash with the above).
_CLAIM_CONTACT = tuple(
    _contacts.c[n]
    for n in (
        "key",
        "name",
        "email",
        "phone",
        "exposures",
        "extra",
        "country",
        "state",
        "locale",
        "enrollment_code",
    )
)


def _lease(
    session: Session, conditions: list, count: int, worker: str, until: datetime
) -> list[int]:
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
        picked = (
            candidates.with_for_update(skip_locked=True)
            .cte("claimable")
            .prefix_with("MATERIALIZED")
        )
        target = m.id == picked.c.id
    return list(
        session.connection()
        .execute(
            update(_messages)
            .where(target)
            .values(lease_owner=worker, lease_expires_at=until)
            .returning(m.id)
        )
        .scalars()
    )


def outstanding(
    engine: Engine, campaign_id: int, channel: str, notice: str | None = None
) -> float | None:
    """None when the channel has nothing left to do; else seconds until something may be.

    Rows leased by other live workers, and rows waiting to retry, keep a run going: `notify
    send` returns only when nothing is pending or leased.
    """
    now = utcnow()
    with Session(engine) as session:
        query = select(
            func.count(), func.min(Message.lease_expires_at), func.min(Message.next_attempt_at)
        ).where(
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
            update(Message)
            .where(Message.lease_owner == worker)
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


def _step(
    job: Job,
    item: Item,
    now: datetime,
    detail: dict[str, Any] | None,
    values: dict[str, Any] | None = None,
    source: str = "send",
    kind: str | None = None,
) -> events.Step:
    """The change of one claimed message, for :func:`events.change`."""
    return events.Step(
        job.campaign.id, item.id, item.contact_id, now, source, detail, values or {}, kind=kind
    )


# What an attempt rendered (template, its version, the hash of what was handed over), kept
# on the row when given.
_CONTENT = (
    "template = COALESCE(:template, template), "
    "template_version = COALESCE(:template_version, template_version), "
    "content_sha256 = COALESCE(:content_sha256, content_sha256)"
)


def _content(content: dict) -> dict[str, Any]:
    return {name: content.get(name) for name in ("template", "template_version", "content_sha256")}


_BEGIN = events.Transition(
    Status.SENDING,
    "status = 'sending', attempts = attempts + 1, transport = :transport, "
    "first_attempt_at = COALESCE(first_attempt_at, :now), next_attempt_at = NULL, "
    "last_event_at = :now, lease_expires_at = :until",
    status=Status.SENDING,
    guard="AND lease_owner = :worker AND status IN ('pending', 'sending')",
    until=UTCDateTime(),
)


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


def begin_attempts(
    session: Session, begins: list[Begin]
) -> list[tuple[bool, str | None, datetime]]:
    """Commit `sending` (and issue reset tokens) for a group, before the provider is called.

    Returns (ok, raw token, attempt time) per message; not ok when the lease was lost to
    another worker or the row is already final, and then it must not be sent. A message
    rendered with ``Begin.token`` gets that token stored (or None when the reset was
    completed meanwhile: then its event carries no hash, and the caller renders it again).
    """
    default = utcnow()
    nows = {b.item.id: b.now or default for b in begins}
    tokens: dict[int, str | None] = {}
    steps = []
    for b in begins:
        transport = b.job.transports.get(b.item.channel)
        now = nows[b.item.id]
        detail = {"attempt": b.item.attempts + 1, "worker": b.worker, "transport": transport}
        values = {
            "worker": b.worker,
            "until": now + timedelta(seconds=b.lease_seconds),
            "transport": transport,
        }
        steps.append(_step(b.job, b.item, now, detail, values))

    def issue_tokens(begun: set[int]) -> None:
        # Only for the attempts that really began; a hash goes into the event only when the
        # token it was rendered with is the one stored.
        linked = [b for b in begins if b.item.id in begun and b.want_token]
        if linked:
            from notify.resets import tokens as reset_tokens

            issued = reset_tokens.issue_tokens(
                session,
                linked[0].job.campaign,
                [(b.item.contact_id, b.item.id) for b in linked],
                now=nows[linked[0].item.id],
                raw_tokens=[b.token or reset_tokens.new_token() for b in linked],
            )
            tokens.update({b.item.id: t for b, t in zip(linked, issued, strict=True)})
        for b, step in zip(begins, steps, strict=True):
            if b.content_sha256 and (not b.want_token or tokens.get(b.item.id) == b.token):
                assert step.detail is not None
                step.detail["content_sha256"] = b.content_sha256

    ok_ids = events.change(session, _BEGIN, steps, before_events=issue_tokens)
    # A reminder exists only to carry a fresh link: if the reset was completed since it was
    # planned, there is nothing to remind of.
    done = [
        b
        for b in begins
        if b.item.id in ok_ids
        and b.want_token
        and b.item.notice == "reminder"
        and tokens.get(b.item.id) is None
    ]
    for b in done:
        _skip_completed(session, b, nows[b.item.id])
        ok_ids.discard(b.item.id)
    return [(b.item.id in ok_ids, tokens.get(b.item.id), nows[b.item.id]) for b in begins]


def record_content(session: Session, job: Job, item: Item, content_sha256: str) -> None:
    """The hash of what an attempt hands over, when it is not the one its `sending` event
    could carry (the message was rendered again without its reset link)."""
    events.record(
        session,
        source="send",
        kind="content",
        campaign_id=job.campaign.id,
        contact_id=item.contact_id,
        message_id=item.id,
        detail={"attempt": item.attempts + 1, "content_sha256": content_sha256},
    )


def attempt_proofs(engine: Engine, message_id: int) -> list[tuple[datetime, str]]:
    """(when the attempt began, hash of what it handed over) for every attempt on record."""
    with Session(engine) as session:
        rows = session.execute(
            select(Event.at, Event.detail).where(
                Event.message_id == message_id, Event.kind.in_(("sending", "content"))
            )
        ).all()
    proofs = []
    for at, detail in rows:
        digest = (detail or {}).get("content_sha256") if isinstance(detail, dict) else None
        if digest:
            proofs.append((at, digest))
    return proofs


_SKIP_COMPLETED = events.Transition(
    Status.SKIPPED,
    "status = 'skipped', skip_reason = 'reset completed', last_event_at = :now, "
    "lease_owner = NULL, lease_expires_at = NULL",
    status=Status.SKIPPED,
)


def _skip_completed(session: Session, begin: Begin, now: datetime) -> None:
    events.change(
        session,
        _SKIP_COMPLETED,
        [_step(begin.job, begin.item, now, {"reason": "reset completed"})],
    )


_SENT = events.Transition(
    Status.SENT,
    "status = 'sent', sent_at = :sent_at, provider_message_id = :pid, "
    "last_event_at = :now, lease_owner = NULL, lease_expires_at = NULL, "
    "next_attempt_at = NULL, error_code = NULL, error_message = NULL, " + _CONTENT,
    status=Status.SENT,
    guard="AND status IN ('pending', 'sending')",
    log_unchanged=True,
    sent_at=UTCDateTime(),
)


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
    steps = []
    for x in sents:
        detail = {"provider_id": x.provider_id}
        if x.provider_status:
            detail["provider_status"] = x.provider_status
        values = {"sent_at": x.sent_at or now, "pid": x.provider_id, **_content(x.content)}
        steps.append(_step(x.job, x.item, now, detail, values, source=x.source))
    recorded = events.change(session, _SENT, steps)
    _count_links(session, [x for x in sents if x.item.id in recorded])
    _apply_early(
        session,
        {x.provider_id: x.item.id for x in sents if x.item.channel == "sms" and x.provider_id},
    )
    return [None] * len(sents)


def _count_links(session: Session, sents: list[Sent]) -> None:
    """Count the reset links of the messages this group just recorded as handed over (only
    messages that can carry one: passwords exposed, a reset_url)."""
    linked = [
        x.item.id for x in sents if x.job.config.reset_url and templates.needs_reset(x.item.view)
    ]
    if not linked:
        return
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
        select(Event.provider_message_id)
        .distinct()
        .where(
            Event.provider_message_id.in_(list(message_ids)),
            Event.message_id.is_(None),
            Event.applied.is_(False),
        )
    ).all()
    for sid in waiting:
        if sid is None:  # not among the ids asked for: never NULL
            continue
        message = session.get(Message, message_ids[sid])
        if message is not None:
            tracking.apply_early_events(session, message)


# The provider's answer, kept on the row while it waits (a retry, a put-back).
_ERROR = "error_code = :code, error_message = :error"


def _error(code: str | None, message: str | None) -> dict[str, Any]:
    return {"code": code, "error": (message or "")[:2000]}


def _error_detail(code: str | None, message: str | None) -> dict[str, Any]:
    """The provider's answer as its event keeps it (the message shorter than on the row)."""
    return {"code": code, "message": (message or "")[:500]}


_RETRY = events.Transition(
    "retry",
    "next_attempt_at = :next, lease_owner = NULL, lease_expires_at = NULL, "
    f"last_event_at = :now, attempts = attempts - :given_back, {_ERROR}, {_CONTENT}",
    next=UTCDateTime(),
)


def record_retry(
    session: Session,
    job: Job,
    item: Item,
    result: Result,
    delay: float,
    content: dict,
    handed_over: bool = True,
) -> None:
    """Due again after ``delay``. A message that never reached the provider (the transport's
    setup failed first) gives its attempt back: it was begun, not tried."""
    now = utcnow()
    detail: dict[str, Any] = {
        **_error_detail(result.error_code, result.error_message),
        "retry_in_s": round(delay, 3),
        "attempt": item.attempts + 1,
    }
    if not handed_over:
        detail["handed_over"] = False
    values = {
        "next": now + timedelta(seconds=delay),
        "given_back": 0 if handed_over else 1,
        **_error(result.error_code, result.error_message),
        **_content(content),
    }
    events.change(session, _RETRY, [_step(job, item, now, detail, values)])


_PUT_BACK = events.Transition(
    None,
    "status = CASE WHEN :as_new THEN 'pending' ELSE status END, "
    "first_attempt_at = CASE WHEN :as_new THEN NULL ELSE first_attempt_at END, "
    "attempts = attempts - 1, next_attempt_at = NULL, lease_owner = NULL, "
    f"lease_expires_at = NULL, last_event_at = :now, {_ERROR}, {_CONTENT}",
    guard="AND attempts > 0",
    log_unchanged=True,
    as_new=Boolean(),
)


def record_put_back(
    session: Session,
    job: Job,
    item: Item,
    result: Result,
    content: dict,
    handed_over: bool,
    in_doubt: bool,
    kind: str,
) -> None:
    """Due again at once, the attempt given back: the provider was down (``kind``
    "outage") or the transport's setup is wrong ("retry"), nothing about this message.

    A message claimed new that surely did not reach the provider is ``pending`` again, as
    if never begun; one that may have (``in_doubt``), or was in doubt or retrying before,
    stays ``sending`` (an SMS is then looked up before it is sent again).
    """
    detail: dict[str, Any] = {
        **_error_detail(result.error_code, result.error_message),
        "attempt": item.attempts + 1,
        "attempt_spent": False,
        "handed_over": handed_over,
    }
    if in_doubt:
        detail["in_doubt"] = True
    values = {
        "as_new": item.status == Status.PENDING and not in_doubt,
        **_error(result.error_code, result.error_message),
        **_content(content),
    }
    step = _step(job, item, utcnow(), detail, values, kind=kind)
    step.applied = True  # the attempt is given back even where nothing was left to give
    events.change(session, _PUT_BACK, [step])


_REFUND = events.Transition(
    "outage",
    "attempts = attempts - 1, next_attempt_at = NULL, last_event_at = :now",
    guard="AND status = 'sending' AND attempts > 0",
)


def refund_attempts(session: Session, job: Job, ids: list[int]) -> None:
    """Give back the attempts that 5xx answers spent before they proved an outage."""
    now = utcnow()
    detail = {
        "attempt_given_back": True,
        "reason": "the provider's 5xx answers turned out to be an outage",
    }
    contacts = session.execute(
        select(Message.id, Message.contact_id).where(Message.id.in_(ids))
    ).all()
    steps = [
        events.Step(job.campaign.id, message_id, contact_id, now, "send", detail)
        for message_id, contact_id in contacts
    ]
    events.change(session, _REFUND, steps)


def unlease(engine: Engine, message_id: int, worker: str) -> None:
    """Give one claimed message back, not begun (due again at once)."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(Message)
            .where(Message.id == message_id, Message.lease_owner == worker)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


_FAILED = events.Transition(
    Status.FAILED,
    "status = 'failed', last_event_at = :now, lease_owner = NULL, lease_expires_at = NULL, "
    f"next_attempt_at = NULL, {_ERROR}, {_CONTENT}",
    status=Status.FAILED,
)


def record_failed(
    session: Session, job: Job, item: Item, code: str | None, message: str | None, content: dict
) -> None:
    """``failed`` for good (a permanent refusal, attempts used up, a template error), then
    the fallback SMS when the campaign has one."""
    detail = {**_error_detail(code, message), "attempts": item.attempts + 1}
    values = {**_error(code, message), **_content(content)}
    events.change(session, _FAILED, [_step(job, item, utcnow(), detail, values)])
    row = session.get(Message, item.id)
    if row is not None:
        session.refresh(row)
        fallback.plan_fallback(session, job.config, row)


def known_provider_ids(engine: Engine, ids: list[str]) -> set[str]:
    """Which of these provider ids a message already holds (an SMS adopts only a free one)."""
    if not ids:
        return set()
    with Session(engine) as session:
        return set(
            session.scalars(
                select(Message.provider_message_id).where(Message.provider_message_id.in_(ids))
            )
        )
