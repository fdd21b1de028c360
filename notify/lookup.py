"""`notify lookup`: one customer, for support, and the verdict on whether they were told.

Instant at a million contacts: it goes through the key, email and phone indexes, then the
message and event indexes of the few rows found. Nothing iterates over rows in Python.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from notify import exposures, localtime
from notify.campaigns import get_campaign
from notify.models import (
    IN_FLIGHT_STATUSES,
    REACHED_STATUSES,
    Campaign,
    Contact,
    Event,
    Message,
    PasswordReset,
    Status,
    utcnow,
)
from notify.resets.state import PENDING, status_expression
from notify.status import CHANNEL_LABEL, channel_order
from notify.times import iso_utc


def _find_contacts(session: Session, query: str, campaign_id: int | None) -> list[tuple]:
    # The importer's own normalization, so that an address or number typed in any format is
    # compared in the form the import stored. Imported here: `notify status` must not pay for
    # phonenumbers and email-validator.
    from notify.addresses import email_case_variants, email_key, normalize_phone

    query = query.strip()
    conditions = [Contact.key == query]
    email = email_key(query)
    if email:
        conditions.append(Contact.email.in_(email_case_variants(email)))
    phone, _ = normalize_phone(query)
    if phone:
        conditions.append(Contact.phone == phone)
    return _contacts_where(session, or_(*conditions), campaign_id)


def _contacts_where(session: Session, condition, campaign_id: int | None) -> list[tuple]:
    query = (
        select(Contact, Campaign.name)
        .join(Campaign, Campaign.id == Contact.campaign_id)
        .where(condition)
        .order_by(Contact.campaign_id, Contact.id)
        .limit(50)
    )
    if campaign_id is not None:
        query = query.where(Contact.campaign_id == campaign_id)
    return [tuple(row) for row in session.execute(query)]


_iso = iso_utc  # files and --json: UTC ISO-8601 with a Z


def _message_view(message: Message, timeline: list[Event]) -> dict[str, Any]:
    return {
        "id": message.id,
        "channel": message.channel,
        "notice": message.notice,
        "sequence": message.sequence,
        "is_fallback": message.is_fallback,
        "status": message.status,
        "skip_reason": message.skip_reason,
        "address": message.address,
        "transport": message.transport,
        "template": message.template,
        "attempts": message.attempts,
        "provider_message_id": message.provider_message_id,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "first_attempt_at": _iso(message.first_attempt_at),
        "sent_at": _iso(message.sent_at),
        "delivered_at": _iso(message.delivered_at),
        "last_event_at": _iso(message.last_event_at),
        "timeline": [
            {
                "at": _iso(e.at),
                "source": e.source,
                "kind": e.kind,
                "applied": e.applied,
                "detail": e.detail,
            }
            for e in timeline
        ],
    }


def _reset_view(reset: tuple[PasswordReset, str] | None, contact: Contact) -> dict[str, Any] | None:
    """The contact's reset, with its status as the one rule computed it; None without one."""
    if reset is None:
        if "passwords" not in exposures.split(contact.exposures):
            return None
        # Passwords exposed, and no reset record yet (made when notify send first plans the
        # campaign): required all the same, and no link sent.
        return {
            "status": PENDING,
            "completed_at": None,
            "completed_via": None,
            "links_sent": 0,
            "link_expires_at": None,
        }
    record, status = reset
    return {
        "status": status,
        "completed_at": _iso(record.completed_at),
        "completed_via": record.completed_via,
        "links_sent": record.links_sent,
        "link_expires_at": _iso(record.link_expires_at),
    }


def _error_text(message: dict[str, Any]) -> str:
    if message["status"] == Status.SKIPPED:
        return message["skip_reason"] or "skipped"
    parts = [p for p in (message["error_code"], message["error_message"]) if p]
    return " ".join(parts)


def _channel_clause(message: dict[str, Any], zone: tzinfo | None = None) -> str:
    label = CHANNEL_LABEL.get(message["channel"], message["channel"])
    status = message["status"]
    if status in REACHED_STATUSES:
        when = message["delivered_at"] or message["sent_at"]
        return f"{label} {status} on {_human_iso(when, zone)}"
    if status == Status.PENDING:
        return f"{label} pending (not sent yet)"
    if status == Status.SENDING:
        return f"{label} sending (outcome not known yet)"
    why = _error_text(message)
    return f"{label} {status}" + (f" ({why})" if why else "")


def _human_iso(value: str | None, zone: tzinfo | None = None) -> str:
    """``2026-11-27 10:02 UTC`` (or in ``zone``: ``2026-11-27 11:02 CET``): how support
    reads a time."""
    return localtime.show(value, zone, empty="an unknown time")


def _best_per_channel(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per channel, the message that best answers "did it reach them": a reaching one
    (earliest), else the latest attempt."""
    best: dict[str, dict[str, Any]] = {}
    for message in messages:
        current = best.get(message["channel"])
        if current is None:
            best[message["channel"]] = message
            continue
        reached_now = message["status"] in REACHED_STATUSES
        reached_before = current["status"] in REACHED_STATUSES
        if reached_now and not reached_before:
            best[message["channel"]] = message
        elif reached_now == reached_before and not reached_now:
            best[message["channel"]] = message  # later row = later attempt
    return best


def verdict(messages: list[dict[str, Any]], zone: tzinfo | None = None) -> str:
    """One line answering "did we reach this customer, how, and when?" (times in ``zone``,
    UTC by default: the --json verdict is always UTC)."""
    if not messages:
        return "Not contacted yet: no message planned (notify send has not run for them)."
    best = _best_per_channel(messages)
    ordered = sorted(best.values(), key=lambda m: channel_order(m["channel"]))
    reached = sorted(
        (m for m in ordered if m["status"] in REACHED_STATUSES),
        key=lambda m: m["delivered_at"] or m["sent_at"] or "",
    )
    others = [m for m in ordered if m["status"] not in REACHED_STATUSES]
    if reached:
        first = reached[0]
        label = CHANNEL_LABEL.get(first["channel"], first["channel"])
        when = _human_iso(first["delivered_at"] or first["sent_at"], zone)
        head = f"Reached by {label} on {when} ({first['status']})"
        rest = [f"also {_channel_clause(m, zone)}" for m in reached[1:]]
        return "; ".join([head, *rest, *(_channel_clause(m, zone) for m in others)])
    if any(m["status"] in IN_FLIGHT_STATUSES for m in others):
        return "Not reached yet: " + "; ".join(_channel_clause(m, zone) for m in others)
    return "NOT reached: " + "; ".join(_channel_clause(m, zone) for m in others)


def lookup(
    session: Session, query: str, campaign: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Contacts matching ``query`` (key, email in any case, phone in any format).

    Each comes with its exposures, every message with its event timeline, its reset state,
    and a one-line ``verdict``. Nothing matching is an answer too (``matches`` 0): see
    :func:`no_match_text` for how to say it.
    """
    now = now or utcnow()
    campaign_id = get_campaign(session, campaign).id if campaign else None
    found = _find_contacts(session, query, campaign_id)
    if not found:
        return {"query": query, "campaign": campaign, "matches": 0, "contacts": []}
    return {"query": query, "matches": len(found), "contacts": describe(session, found, now)}


def describe(session: Session, found: list[tuple], now: datetime) -> list[dict[str, Any]]:
    """Per found ``(Contact, campaign name)``: its verdict, exposures, messages with their
    timelines, and reset state (what `notify lookup` and the web search show)."""
    contact_ids = [contact.id for contact, _ in found]
    messages = list(
        session.scalars(
            select(Message)
            .where(Message.contact_id.in_(contact_ids))
            .order_by(Message.contact_id, Message.channel, Message.sequence, Message.id)
        )
    )
    timelines: dict[int | None, list[Event]] = defaultdict(list)
    if messages:
        for event in session.scalars(
            select(Event)
            .where(Event.message_id.in_([m.id for m in messages]))
            .order_by(Event.at, Event.id)
        ):
            timelines[event.message_id].append(event)
    # By (campaign_id, contact_id): the only index on password_resets (uq_resets_contact).
    # The status comes from the one reset-status rule, in the query, judged at ``now``.
    resets = {
        r.contact_id: (r, status)
        for r, status in session.execute(
            select(PasswordReset, status_expression(now)).where(
                or_(
                    *(
                        and_(
                            PasswordReset.campaign_id == contact.campaign_id,
                            PasswordReset.contact_id == contact.id,
                        )
                        for contact, _ in found
                    )
                )
            )
        )
    }
    by_contact: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        by_contact[message.contact_id].append(_message_view(message, timelines[message.id]))
    results = []
    for contact, campaign_name in found:
        views = by_contact[contact.id]
        results.append(
            {
                "verdict": verdict(views),
                "reached": any(m["status"] in REACHED_STATUSES for m in views),
                "campaign": campaign_name,
                "key": contact.key,
                "name": contact.name,
                "email": contact.email,
                "phone": contact.phone,
                "exposures": exposures.split(contact.exposures),
                "country": contact.country,
                "state": contact.state,
                "messages": views,
                "reset": _reset_view(resets.get(contact.id), contact),
            }
        )
    return results


def no_match_text(result: dict[str, Any], database: str) -> str:
    """What to tell support when no contact matches: that this database has no record of
    the person, which is not "they were not notified" (they may be in another database,
    under another spelling, or in a list not imported)."""
    where = f" in campaign {result['campaign']!r}" if result.get("campaign") else ""
    return (
        f"No contact in {database}{where} matches {result['query'].strip()!r} (searched "
        "key, email and phone): this database has no record of them; check the "
        "spelling, or the database (--db or NOTIFY_DATABASE_URL)."
    )


def _describe_event(event: dict[str, Any], zone: tzinfo | None = None) -> str:
    detail = event.get("detail") or {}
    extras = [
        f"{k}={v}"
        for k, v in detail.items()
        if k
        in (
            "provider_status",
            "error_code",
            "error_message",
            "status_code",
            "diagnostic",
            "reason",
            "because",
            "early_event_id",
            "file",
        )
    ]
    note = "" if event["applied"] else " (recorded only)"
    return f"{_human_iso(event['at'], zone)}  {event['source']:<9} {event['kind']}{note}" + (
        f"  {' '.join(extras)}" if extras else ""
    )


def format_lookup(result: dict[str, Any], zone: tzinfo | None = None) -> list[str]:
    """The lookup result as text: per contact the verdict first, then the details; times in
    ``zone`` (UTC by default)."""
    lines: list[str] = []
    for contact in result["contacts"]:
        if lines:
            lines.append("")
        lines.append(verdict(contact["messages"], zone))
        who = contact["name"] or contact["key"]
        addresses = ", ".join(a for a in (contact["email"], contact["phone"]) if a) or "-"
        lines.append(
            f"Contact: {who} (key {contact['key']}, campaign {contact['campaign']}) - {addresses}"
        )
        where = ", ".join(x for x in (contact["state"], contact["country"]) if x)
        lines.append(
            f"Exposures: {', '.join(contact['exposures']) or '-'}"
            + (f"  Location: {where}" if where else "")
        )
        lines.append("Reset: " + _format_reset(contact["reset"], zone))
        lines.append("Messages:" if contact["messages"] else "Messages: none")
        for message in contact["messages"]:
            lines.extend(_format_message(message, zone))
    return lines


def _format_reset(reset: dict[str, Any] | None, zone: tzinfo | None = None) -> str:
    if reset is None:
        return "not required (passwords were not exposed)"
    if reset["status"] == "pending" and not reset["links_sent"]:
        return "required (passwords exposed), no link sent yet"
    text = f"{reset['status']}, {reset['links_sent']} link(s) sent"
    if reset["completed_at"]:
        text += f", completed {_human_iso(reset['completed_at'], zone)}"
        if reset["completed_via"]:
            text += f" via {reset['completed_via']}"
    elif reset["link_expires_at"]:
        text += f", link expires {_human_iso(reset['link_expires_at'], zone)}"
    return text


def _format_message(message: dict[str, Any], zone: tzinfo | None = None) -> list[str]:
    label = CHANNEL_LABEL.get(message["channel"], message["channel"])
    kind = message["notice"] + (f" {message['sequence']}" if message["sequence"] else "")
    if message["is_fallback"]:
        kind += ", fallback"
    head = f"  {label} {kind}: {message['status']} to {message['address'] or '-'}"
    if message["transport"]:
        head += f" via {message['transport']}"
    why = _error_text(message) if message["status"] not in REACHED_STATUSES else ""
    if why:
        head += f" ({why})"
    head += f"; attempts {message['attempts']}"
    if message["provider_message_id"]:
        head += f"; id {message['provider_message_id']}"
    return [head, *(f"      {_describe_event(e, zone)}" for e in message["timeline"])]
