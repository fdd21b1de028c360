"""Second chances: a corrected address, and `notify requeue` after final failures.

A message row is the record of what happened to one attempt at telling someone; it is never
reset. Another chance is a new row on the same channel with the next sequence, to the
contact's current address, which the next `notify send` sends:

* **corrections** (planned by every `notify send`): the contact's address on a channel
  differs from the one its last message there went to, and no message on that channel
  reached it (all skipped, failed, bounced or undelivered);
* **requeue** (`notify requeue`): the last message on a channel ended failed, undelivered or
  bounced (optionally only one status, or one provider error code).

Sequences are per (contact, channel) across first notices and reminders: the new row takes
the last one's sequence + 1, as `resets.reminders.plan_reminders` does, so a requeued or corrected
message never takes the number of a reminder (and reminders, which follow a reached
message, see the new row as the latest). Only the last message of a channel with nothing
in flight or reached qualifies, so running either again plans nothing twice; the unique
constraint ``uq_messages_once`` settles concurrent runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, bindparam, column, text
from sqlalchemy.orm import Session

from notify import events
from notify.campaigns import config_of
from notify.errors import NotifyError
from notify.models import (
    CHANNELS,
    FAILED_STATUSES,
    UNREACHED_STATUSES,
    Campaign,
    UTCDateTime,
    utcnow,
)

# Final statuses that did not reach the person.
UNREACHED = UNREACHED_STATUSES
REQUEUABLE = FAILED_STATUSES
ADDRESS_COLUMN = {"email": "email", "sms": "phone"}

# The last message of a (contact, channel) in one of :statuses, with nothing after it and
# nothing in flight or reached on that channel, joined to its contact's current address.
# NOT EXISTS goes through ix_messages_contact; the statuses through ix_messages_queue.
_LAST_UNREACHED = """
FROM messages m JOIN contacts c ON c.id = m.contact_id
WHERE m.campaign_id = :campaign_id AND m.channel = :channel
  AND m.status IN :statuses
  AND c.{col} IS NOT NULL AND c.{col} <> ''
  {extra}
  AND NOT EXISTS (SELECT 1 FROM messages o
                  WHERE o.contact_id = m.contact_id AND o.campaign_id = m.campaign_id
                    AND o.channel = m.channel
                    AND (o.sequence > m.sequence
                         OR o.status IN ('pending', 'sending', 'sent', 'delivered')))
"""

# The next message after each of those (``events.create_messages`` inserts it).
_NEXT = (
    """
SELECT m.campaign_id, m.contact_id, m.channel, m.notice, m.sequence + 1, m.is_fallback,
       'pending', NULL, c.{col}, 0, :now
"""
    + _LAST_UNREACHED
)

_COUNT = "SELECT m.status, count(*) " + _LAST_UNREACHED + " GROUP BY m.status"

# A different address: compared as stored (both sides are the importer's normal form).
_CORRECTED = "AND (m.address IS NULL OR m.address <> c.{col})"


def _statement(sql: str, col: str, extra: str = "") -> TextClause:
    stmt = text(sql.format(col=col, extra=extra.format(col=col)))
    stmt = stmt.bindparams(bindparam("statuses", expanding=True))
    return stmt.bindparams(bindparam("now", type_=UTCDateTime())) if ":now" in sql else stmt


def _plan_next(
    session: Session,
    campaign_id: int,
    col: str,
    extra: str,
    params: dict[str, Any],
    source: str,
    detail: dict[str, Any],
) -> int:
    """Create the next message after each last unreached one :data:`_LAST_UNREACHED`
    selects (with ``extra`` conditions); how many."""
    rows = (
        _statement(_NEXT, col, extra)
        .bindparams(**params)
        .columns(*(column(name) for name in events.MESSAGE_COLUMNS))
    )
    return events.create_messages(
        session, rows, campaign_id=campaign_id, at=params["now"], source=source, detail=detail
    )


def plan_corrections(
    session: Session, campaign: Campaign, channels: tuple[str, ...], now: datetime | None = None
) -> Counter:
    """Plan a message to each corrected address nobody reached yet; how many, by channel.

    Called by `notify send` when it plans (see the module docstring for the rule). Only the
    campaign's own channels: a fallback SMS follows its email.
    """
    config = config_of(campaign)
    now = now or utcnow()
    created: Counter = Counter()
    for channel in channels:
        if channel not in config.channels:
            continue
        params = {
            "campaign_id": campaign.id,
            "channel": channel,
            "statuses": list(UNREACHED),
            "now": now,
        }
        created[channel] = _plan_next(
            session,
            campaign.id,
            ADDRESS_COLUMN[channel],
            _CORRECTED,
            params,
            "plan",
            {"planned": "correction", "reason": "address changed"},
        )
    return created


@dataclass
class RequeueResult:
    """What `notify requeue` planned (or would plan, on a dry run)."""

    campaign: str
    dry_run: bool
    by_channel: dict[str, Counter] = field(default_factory=dict)  # channel -> old status -> n

    @property
    def total(self) -> int:
        """Messages requeued (or that would be)."""
        return sum(sum(c.values()) for c in self.by_channel.values())

    def as_dict(self) -> dict:
        """JSON-ready counts (also the audit record's)."""
        return {
            "campaign": self.campaign,
            "dry_run": self.dry_run,
            "requeued": self.total,
            "by_channel": {ch: dict(c) for ch, c in self.by_channel.items() if c},
        }


def requeue(
    session: Session,
    campaign: Campaign,
    *,
    channel: str | None = None,
    status: str | None = None,
    error_code: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RequeueResult:
    """Give final failures another chance: a new pending message after each (see module).

    ``channel``, ``status`` (failed, undelivered or bounced) and ``error_code`` narrow the
    choice. The failed rows keep their status: they are the record of what happened. The
    new rows go to the contact's current address and are sent by the next `notify send`.
    """
    config = config_of(campaign)
    if status is not None and status not in REQUEUABLE:
        raise NotifyError(f"--status: {status!r} is not one of {', '.join(REQUEUABLE)}")
    if channel is not None and channel not in CHANNELS:
        raise NotifyError(f"--channel: {channel!r} is not one of {', '.join(CHANNELS)}")
    used = [*config.channels, *(["sms"] if config.fallback == "sms" else [])]
    if channel is not None and channel not in used:
        raise NotifyError(
            f"--channel {channel}: the campaign {campaign.name} does not use it "
            f"(channels: {', '.join(used)})"
        )
    channels = [channel] if channel else [ch for ch in CHANNELS if ch in used]
    statuses = [status] if status else list(REQUEUABLE)
    extra = "AND m.error_code = :error_code" if error_code is not None else ""
    now = now or utcnow()
    result = RequeueResult(campaign=campaign.name, dry_run=dry_run)
    for ch in channels:
        col = ADDRESS_COLUMN[ch]
        params: dict[str, Any] = {
            "campaign_id": campaign.id,
            "channel": ch,
            "statuses": statuses,
            "now": now,
        }
        if error_code is not None:
            params["error_code"] = error_code
        result.by_channel[ch] = Counter(
            dict(session.execute(_statement(_COUNT, col, extra), params).all())
        )
        if dry_run or not result.by_channel[ch]:
            continue
        _plan_next(session, campaign.id, col, extra, params, "requeue", {"planned": "requeue"})
    return result
