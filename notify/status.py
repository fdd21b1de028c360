"""`notify status`: a campaign's counts, by channel, by round, reach and resets.

Instant at a million contacts: it reads the counts that triggers maintain (``tallies``,
migration 0004) and counts only the lapsed reset links on their index. Nothing iterates over
rows in Python. Also the shared wording of what users see: channel labels and percentages.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from notify import localtime
from notify.campaigns import get_campaign
from notify.models import (
    CHANNELS,
    MESSAGE_STATUSES,
    REACHED_STATUSES,
    Contact,
    PasswordReset,
    Tally,
    utcnow,
)
from notify.resets.state import lapsed
from notify.times import iso_utc

CHANNEL_LABEL = {"email": "email", "sms": "SMS"}


def percent(part: int, whole: int) -> float:
    """``part`` of ``whole`` in percent, one decimal; 0.0 for an empty whole."""
    return round(100.0 * part / whole, 1) if whole else 0.0


def read_tallies(session: Session, campaign_id: int) -> dict[str, int]:
    """The campaign's maintained counts by name (see :class:`notify.models.Tally`).

    One indexed range read of a few dozen rows (a few hundred on PostgreSQL, one per shard),
    whatever the number of contacts or messages.
    """
    rows = session.execute(
        select(Tally.name, func.sum(Tally.n))
        .where(Tally.campaign_id == campaign_id)
        .group_by(Tally.name)
    )
    return {name: int(n) for name, n in rows}


def _message_counts(tallies: dict[str, int]) -> dict[str, dict[str, int]]:
    """Messages by channel and status, all rounds together."""
    counts: dict[str, dict[str, int]] = {}
    for (_, _), by_channel in _round_counts(tallies).items():
        for channel, by_status in by_channel.items():
            into = counts.setdefault(channel, dict.fromkeys(MESSAGE_STATUSES, 0))
            for status, n in by_status.items():
                into[status] = into.get(status, 0) + n
    return {channel: counts[channel] for channel in sorted(counts, key=channel_order)}


def _round_counts(tallies: dict[str, int]) -> dict[tuple[str, int], dict[str, dict[str, int]]]:
    """Messages by round (notice, sequence), channel and status, from the tallies named
    ``message:{channel}:{status}:{notice}:{sequence}`` (migration 0008_tallies_by_round)."""
    rounds: dict[tuple[str, int], dict[str, dict[str, int]]] = {}
    for name, n in tallies.items():
        if not name.startswith("message:") or not n:
            continue
        _, channel, status, notice, sequence = (name.split(":") + ["notice", "0"])[:5]
        by_channel = rounds.setdefault((notice, int(sequence)), {})
        by_channel.setdefault(channel, dict.fromkeys(MESSAGE_STATUSES, 0))[status] = n
    return {
        key: {ch: rounds[key][ch] for ch in sorted(rounds[key], key=channel_order)}
        for key in sorted(rounds, key=lambda k: (k[0] != "notice", k[1]))
    }


def round_label(notice: str, sequence: int) -> str:
    """``first notice``, ``reminder 1``, ``first notice, sent again 1``: a round in words."""
    if notice == "notice":
        return "first notice" if sequence == 0 else f"first notice, sent again {sequence}"
    return f"{notice} {sequence}"


def _rounds(tallies: dict[str, int]) -> list[dict[str, Any]]:
    """The first notices and each reminder round apart (see :func:`campaign_status`)."""
    out = []
    for (notice, sequence), by_channel in _round_counts(tallies).items():
        out.append(
            {
                "notice": notice,
                "sequence": sequence,
                "label": round_label(notice, sequence),
                "messages": by_channel,
                "totals": {channel: sum(by.values()) for channel, by in by_channel.items()},
                "reached": {
                    channel: sum(by.get(s, 0) for s in REACHED_STATUSES)
                    for channel, by in by_channel.items()
                },
            }
        )
    return out


def channel_order(channel: str) -> int:
    """Sort key: email before SMS (``CHANNELS``' order), anything unknown last."""
    return CHANNELS.index(channel) if channel in CHANNELS else len(CHANNELS)


def _reach_counts(tallies: dict[str, int], contacts: int) -> dict[str, int]:
    """Contacts by reach class: some message sent/delivered; none yet but one pending or
    sending (or no message planned yet); every message ended without reaching."""
    reached = tallies.get("reach:reached", 0)
    not_reached = tallies.get("reach:not_reached", 0)
    return {
        "reached": reached,
        "pending": max(0, contacts - reached - not_reached),
        "not_reached": not_reached,
    }


def _reset_counts(
    session: Session, tallies: dict[str, int], campaign_id: int, now: datetime
) -> dict[str, Any]:
    """Resets by state; ``expired`` (a pending reset whose link has lapsed) depends on the
    clock, so it is counted on ``ix_resets_state``, over the lapsed links only."""
    pending, completed = tallies.get("reset:pending", 0), tallies.get("reset:completed", 0)
    expired = 0
    if pending:
        expired = (
            session.scalar(
                select(func.count())
                .select_from(PasswordReset)
                .where(PasswordReset.campaign_id == campaign_id, lapsed(now))
            )
            or 0
        )
    total = sum(n for name, n in tallies.items() if name.startswith("reset:"))
    counts = {"pending": pending - expired, "completed": completed, "expired": expired}
    report = {"total": total, **counts, "completed_pct": percent(completed, total)}
    if not total and tallies.get("contacts"):
        # Reset records are made when notify send first plans the campaign. Before that,
        # the resets are no less required: count the contacts whose passwords were exposed
        # (one pass over the campaign's contacts, only until the first send).
        required = _password_contacts(session, campaign_id)
        report.update(total=required, pending=required, before_first_send=True)
    return report


def _password_contacts(session: Session, campaign_id: int) -> int:
    exposed = (literal(";") + Contact.exposures + literal(";")).like("%;passwords;%")
    return (
        session.scalar(
            select(func.count())
            .select_from(Contact)
            .where(Contact.campaign_id == campaign_id, exposed)
        )
        or 0
    )


def campaign_status(session: Session, name: str, now: datetime | None = None) -> dict[str, Any]:
    """Counts by channel and status, contacts reached / not reached / pending, and resets.

    ``messages``/``totals`` cover every round; ``rounds`` has the first notices and each
    reminder round apart: ``[{"notice": "notice", "sequence": 0, "label": "first notice",
    "messages": {channel: {status: n}}, "totals": {channel: n}, "reached": {channel: n}},
    {"notice": "reminder", "sequence": 1, "label": "reminder 1", ...}]``. A round is a
    (notice, sequence) pair: the sequence numbers each contact's messages on a channel, so
    reminder 1 is everyone's first reminder (or, after a first notice was sent again, the
    reminder that followed it).

    Read from the counts the database's triggers maintain (migrations 0004, 0008), so the report
    costs the same at a hundred contacts or ten million. Contacts without any message row
    yet (not planned by ``notify send``) count as pending.
    """
    now = now or utcnow()
    campaign = get_campaign(session, name)
    tallies = read_tallies(session, campaign.id)
    contacts = tallies.get("contacts", 0)
    reach = _reach_counts(tallies, contacts)
    messages = _message_counts(tallies)
    return {
        "campaign": campaign.name,
        "contacts": contacts,
        "messages": messages,
        "totals": {channel: sum(by.values()) for channel, by in messages.items()},
        "rounds": _rounds(tallies),
        "as_of": iso_utc(now),
        "reach": {
            **reach,
            "reached_pct": percent(reach["reached"], contacts),
            "not_reached_pct": percent(reach["not_reached"], contacts),
            "pending_pct": percent(reach["pending"], contacts),
        },
        "resets": _reset_counts(session, tallies, campaign.id, now),
    }


def format_status(report: dict[str, Any], zone: tzinfo | None = None) -> list[str]:
    """The status report as aligned text lines for a terminal: one table row per round
    (first notices, then each reminder round) and channel; times in ``zone`` (UTC)."""
    lines = [
        f"Campaign {report['campaign']}: {report['contacts']:,} contacts "
        f"(as of {localtime.show(report.get('as_of'), zone)})"
    ]
    rounds = report.get("rounds") or []
    shown = [s for s in MESSAGE_STATUSES if any(by.get(s) for by in report["messages"].values())]
    if rounds:
        header = ["round", "channel", *shown, "total"]
        table = [header]
        for round_ in rounds:
            for i, (ch, by) in enumerate(round_["messages"].items()):
                table.append(
                    [
                        round_["label"] if i == 0 else "",
                        CHANNEL_LABEL.get(ch, ch),
                        *(f"{by.get(s, 0):,}" for s in shown),
                        f"{round_['totals'][ch]:,}",
                    ]
                )
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])] + [
                c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)
            ]
            lines.append(("  " + "  ".join(cells)).rstrip())
    else:
        lines.append(
            f"  No messages yet (plan and send them with: notify send {report['campaign']})"
        )
    reach = report["reach"]
    lines += [
        f"Reached:     {reach['reached']:,} ({reach['reached_pct']}%)",
        f"Not reached: {reach['not_reached']:,} ({reach['not_reached_pct']}%)",
        f"Pending:     {reach['pending']:,} ({reach['pending_pct']}%)",
    ]
    resets = report["resets"]
    if resets.get("before_first_send") and resets["total"]:
        lines.append(
            f"Resets:      {resets['total']:,} required (passwords exposed), no link "
            "sent yet (links go out with the notices)"
        )
    elif resets["total"]:
        lines.append(
            f"Resets:      {resets['completed']:,} of {resets['total']:,} completed "
            f"({resets['completed_pct']}%), {resets['pending']:,} pending, "
            f"{resets['expired']:,} expired"
        )
    else:
        lines.append("Resets:      none (no contact with exposed passwords)")
    if reach["not_reached"]:
        lines.append(
            f"For postal or substitute notice: notify export unreached "
            f"{report['campaign']} -o unreached.csv"
        )
    return lines
