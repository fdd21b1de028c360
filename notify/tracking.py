"""SMS delivery tracking: Twilio status callbacks, early callbacks, and `notify sync sms`.

Twilio reports an SMS's fate twice over: by POSTing status callbacks to ``notify serve`` and
on request through its API (``sync sms``). Both paths end in :func:`apply_status`, which maps
the Twilio status to ours and moves the message only forward (``events.advance``), so
duplicate and out-of-order reports are harmless: they are kept as events and change nothing.

A callback can arrive before the send engine has stored the SID Twilio answered with (the
callback races the API response). It is then stored as an unapplied *early* event keyed by
the SID, and applied by :func:`apply_early_events` as soon as the SID is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import notify.audit  # noqa: F401  (installs the append-only guard on Event)
from notify import db, events
from notify.models import FAILED_STATUSES, Event, Message, Status, utcnow

if TYPE_CHECKING:  # the transports are only needed by sync_sms, imported there
    from notify.transports.base import Found, Messenger

# Twilio MessageStatus -> our status; None = recorded as an event only. queued/accepted/
# sending only say Twilio holds the message, which the send engine already recorded as
# "sent" when Twilio answered; "read" (RCS/WhatsApp) implies it was delivered.
TWILIO_STATUS_MAP: dict[str, str | None] = {
    "accepted": None,
    "scheduled": None,
    "queued": None,
    "sending": None,
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}

# Short meanings of the delivery error codes support sees most, for `lookup` and exports
# when Twilio sent no ErrorMessage (status callbacks usually carry only the code).
TWILIO_ERRORS: dict[str, str] = {
    "21211": "invalid 'To' number",
    "21408": "region not enabled",
    "21610": "opted out",
    "21612": "cannot route to this number",
    "21614": "not a mobile number",
    "30001": "queue overflow",
    "30002": "account suspended",
    "30003": "unreachable handset",
    "30004": "message blocked",
    "30005": "unknown handset",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by carrier",
    "30008": "unknown error",
    "30032": "toll-free number not verified",
    "30034": "unregistered 10DLC sender",
}

_STATUS_RE = re.compile(r"^[a-z_]{1,32}$")
_SID_RE = re.compile(r"^[A-Za-z0-9]{2,64}$")


class CallbackError(ValueError):
    """A status callback whose fields are missing or malformed (answered 400)."""


@dataclass(frozen=True)
class StatusReport:
    """One provider report about one SMS: from a callback or from the API."""

    sid: str
    provider_status: str
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def from_callback(cls, params: Any) -> StatusReport:
        """Read Twilio's form fields (MessageSid/SmsSid, MessageStatus/SmsStatus, ErrorCode)."""
        sid = (params.get("MessageSid") or params.get("SmsSid") or "").strip()
        status = (params.get("MessageStatus") or params.get("SmsStatus") or "").strip().lower()
        if not _SID_RE.match(sid):
            raise CallbackError("MessageSid is missing or malformed")
        if not _STATUS_RE.match(status):
            raise CallbackError("MessageStatus is missing or malformed")
        code = (params.get("ErrorCode") or "").strip() or None
        if code is not None and (len(code) > 16 or not code.isalnum()):
            raise CallbackError("ErrorCode is malformed")
        message = (params.get("ErrorMessage") or "").strip()[:500] or None
        return cls(sid, status, code, message)

    def detail(self) -> dict[str, Any]:
        """What the event keeps of the report (no phone numbers: they are on the message)."""
        data: dict[str, Any] = {"sid": self.sid, "provider_status": self.provider_status}
        if self.error_code:
            data["error_code"] = self.error_code
        if self.error_message:
            data["error_message"] = self.error_message
        return data


def describe_error(code: str | None, message: str | None = None) -> str | None:
    """A short human meaning of a provider error: its own message, else a known one."""
    if message:
        return message
    return TWILIO_ERRORS.get(code or "")


def mapped_status(provider_status: str) -> str | None:
    """Our status for a Twilio status, or None when it only deserves an event."""
    return TWILIO_STATUS_MAP.get(provider_status)


def _touch(message: Message, at: datetime) -> None:
    message.last_event_at = max(message.last_event_at or at, at)


def apply_status(
    session: Session,
    message: Message,
    report: StatusReport,
    *,
    source: str,
    at: datetime | None = None,
    extra: dict[str, Any] | None = None,
    replay_key: str | None = None,
) -> bool:
    """Record ``report`` on ``message`` and move its status forward if it says so.

    Always appends exactly one event. Returns True when the status changed. Error code and
    message are stored only when the message actually became failed/undelivered, so the
    row never shows an error contradicting its status.
    """
    at = at or utcnow()
    detail = {**report.detail(), **(extra or {})}
    status = mapped_status(report.provider_status)
    if status is None:
        events.record(
            session,
            source=source,
            kind=report.provider_status,
            message=message,
            detail=detail,
            at=at,
            applied=False,
            replay_key=replay_key,
        )
        _touch(message, at)
        return False
    moved = events.advance(
        session, message, status, source=source, detail=detail, at=at, replay_key=replay_key
    )
    if moved and status in FAILED_STATUSES:
        message.error_code = report.error_code
        message.error_message = describe_error(report.error_code, report.error_message)
    return moved


def find_sms(session: Session, sid: str, *, lock: bool = True) -> Message | None:
    """The SMS whose provider id is ``sid`` (row-locked on PostgreSQL against lost updates)."""
    query = (
        select(Message)
        .where(Message.provider_message_id == sid, Message.channel == "sms")
        .order_by(Message.id)
        .limit(1)
    )
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def replay_key(params: Any) -> str:
    """SHA-256 of a callback's parameters (names and values, order-free): the same callback
    sent again, by Twilio's retries or by someone replaying a captured request, has the same
    key, and is stored once (``events.replay_key`` is unique)."""
    pairs = sorted((str(name), str(value)) for name, value in params.items())
    canonical = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def seen_before(session: Session, key: str) -> bool:
    """True when a callback with this :func:`replay_key` is already stored."""
    return session.scalar(select(Event.id).where(Event.replay_key == key).limit(1)) is not None


def handle_callback(
    session: Session, report: StatusReport, key: str | None = None
) -> dict[str, Any]:
    """Apply one verified status callback; unknown SIDs are kept as early events.

    Returns a small JSON-able outcome: ``{"message_id", "status", "changed"}``,
    ``{"early": True}``, or ``{"replay": True}`` when a callback with the same ``key``
    (:func:`replay_key`) is already stored: it then changes nothing.
    """
    if key is not None and seen_before(session, key):
        return {"replay": True}
    message = find_sms(session, report.sid)
    if message is None:
        events.record(
            session,
            source="webhook",
            kind=report.provider_status,
            applied=False,
            provider_message_id=report.sid,
            detail=report.detail(),
            replay_key=key,
        )
        return {"early": True}
    changed = apply_status(session, message, report, source="webhook", replay_key=key)
    return {"message_id": message.id, "status": message.status, "changed": changed}


def _early_events(session: Session, sid: str) -> list[Event]:
    query = (
        select(Event)
        .where(
            Event.provider_message_id == sid,
            Event.message_id.is_(None),
            Event.applied.is_(False),
        )
        .order_by(Event.id)
        # Two processes applying the same early event would only log a duplicate (advance
        # is forward-only), but skipping locked rows avoids even that on PostgreSQL.
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def apply_early_events(session: Session, message: Message) -> int:
    """Apply the callbacks that arrived before ``message``'s provider id was stored.

    The send engine calls this right after storing a provider id, in the same transaction.
    Each early event is linked to the message and marked applied (the one change the
    append-only guard allows), and its report is applied with its original receipt time.
    Returns how many early events were applied.
    """
    if not message.provider_message_id or message.channel != "sms":
        return 0
    early = _early_events(session, message.provider_message_id)
    if early:
        # The caller may have changed the row with a Core UPDATE: apply to what is stored.
        session.refresh(message)
    for event in early:
        event.message_id = message.id
        event.contact_id = message.contact_id
        event.campaign_id = message.campaign_id
        event.applied = True
        detail = event.detail or {}
        report = StatusReport(
            sid=message.provider_message_id,
            provider_status=detail.get("provider_status", event.kind),
            error_code=detail.get("error_code"),
            error_message=detail.get("error_message"),
        )
        apply_status(
            session,
            message,
            report,
            source=event.source,
            at=event.at,
            extra={"early_event_id": event.id},
        )
    if early:
        session.flush()
    return len(early)


def recheck_early(session: Session, sid: str) -> int:
    """After storing an early event: apply it now if the SID got stored meanwhile (race)."""
    message = find_sms(session, sid)
    return apply_early_events(session, message) if message is not None else 0


def apply_pending_early_events(session: Session, campaign_id: int) -> int:
    """Sweep: apply early events whose SID is now stored on one of the campaign's SMS."""
    sids = session.scalars(
        select(Event.provider_message_id)
        .join(Message, Message.provider_message_id == Event.provider_message_id)
        .where(
            Event.message_id.is_(None),
            Event.applied.is_(False),
            Message.campaign_id == campaign_id,
            Message.channel == "sms",
        )
        .distinct()
    ).all()
    applied = 0
    for sid in sids:
        if sid is not None:  # the join on equality never yields NULL
            applied += recheck_early(session, sid)
    return applied


# --- notify sync sms ----------------------------------------------------------------------


@dataclass
class SyncReport:
    """What `notify sync sms` checked and changed."""

    checked: int = 0
    changed: Counter = field(default_factory=Counter)  # new status -> count
    unchanged: int = 0
    not_found: int = 0
    errors: int = 0
    early_applied: int = 0
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Counts for --json output and the audit record."""
        return {
            "checked": self.checked,
            "changed": sum(self.changed.values()),
            "by_status": dict(sorted(self.changed.items())),
            "unchanged": self.unchanged,
            "not_found": self.not_found,
            "errors": self.errors,
            "early_applied": self.early_applied,
        }


SYNC_STATUSES = (Status.SENDING, Status.SENT)


def _sync_batch(session: Session, campaign_id: int, after_id: int, size: int) -> list[tuple]:
    """Next (id, provider id) page of SMS that are not final yet, in id order."""
    rows = session.execute(
        select(Message.id, Message.provider_message_id)
        .where(
            Message.campaign_id == campaign_id,
            Message.status.in_(SYNC_STATUSES),
            Message.channel == "sms",
            Message.id > after_id,
            Message.provider_message_id.is_not(None),
        )
        .order_by(Message.id)
        .limit(size)
    )
    return [tuple(row) for row in rows]


async def _fetch_all(
    messenger: Messenger, rows: Iterable[tuple], concurrency: int
) -> list[tuple[int, str, Found | None | Exception]]:
    """Ask the provider about each SMS, at most ``concurrency`` requests at a time."""
    from notify.transports.base import TransportConfigError

    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(row_id: int, sid: str):
        async with gate:
            try:
                return row_id, sid, await messenger.fetch_status(sid)
            except TransportConfigError:
                raise  # wrong credentials: stop the run, do not count 10,000 errors
            except Exception as exc:  # one lookup failing must not stop the others
                return row_id, sid, exc

    return await asyncio.gather(*(one(row_id, sid) for row_id, sid in rows))


def _record_found(session: Session, results: list[tuple], report: SyncReport) -> None:
    for row_id, sid, found in results:
        report.checked += 1
        if isinstance(found, Exception):
            report.errors += 1
            if len(report.error_samples) < 3:
                report.error_samples.append(f"{sid}: {found}")
            continue
        if found is None:
            report.not_found += 1
            continue
        message = session.scalar(select(Message).where(Message.id == row_id).with_for_update())
        status = mapped_status(found.status)
        # Only what changed is recorded: re-polling an unchanged SMS adds no event.
        if message is None or status is None or not events.can_move(message.status, status):
            report.unchanged += 1
            continue
        update = StatusReport(sid, found.status, found.error_code, found.error_message)
        if apply_status(session, message, update, source="sync"):
            report.changed[status] += 1


async def sync_sms(
    engine: Engine,
    campaign_id: int,
    messenger: Messenger,
    *,
    concurrency: int = 10,
    batch_size: int = 200,
) -> SyncReport:
    """Poll the provider for every SMS of the campaign not final yet; record what changed.

    Works in id-keyset pages (bounded memory), each page's results committed in one
    transaction, so an interrupted sync keeps what it learned. Early callbacks whose SID is
    now stored are applied first.
    """
    report = SyncReport()
    with db.session_scope(engine) as session:
        report.early_applied = apply_pending_early_events(session, campaign_id)
    after_id = 0
    while True:
        with db.session_scope(engine) as session:
            rows = _sync_batch(session, campaign_id, after_id, batch_size)
        if not rows:
            return report
        after_id = rows[-1][0]
        results = await _fetch_all(messenger, rows, concurrency)
        with db.session_scope(engine) as session:
            _record_found(session, results, report)
