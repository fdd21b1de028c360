"""The support search: one box for a name, an email, a phone number in any format or a key.

Key, email and phone go through `notify lookup`'s own search and normalization; names are
matched exactly on ``ix_contacts_name`` in the few spellings lists hold (as typed, lower,
UPPER, Title Case), the same trade-off the email search makes: every query is a handful of
index probes, instant at any list size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from notify import lookup
from notify.models import REACHED_STATUSES, Contact, Status, utcnow
from notify.status import CHANNEL_LABEL

MAX_RESULTS = 50


def name_variants(text: str) -> set[str]:
    """Spellings of a typed name that a list may hold: spaces collapsed, as typed, lower,
    UPPER and Title Case (``"ann EXAMPLE"`` finds ``"Ann Example"``)."""
    name = " ".join(text.split())
    if not name:
        return set()
    return {
        name,
        name.lower(),
        name.upper(),
        name.title(),
        re.sub(r"\w+", lambda m: m.group(0).capitalize(), name),
    }


def find(session: Session, query: str) -> list[tuple]:
    """``(Contact, campaign name)`` rows matching the query by key, email or phone (the
    lookup's own search, :func:`notify.lookup._find_contacts`) or by name."""
    found = lookup._find_contacts(session, query, None)
    names = name_variants(query)
    if names and len(found) < MAX_RESULTS:
        seen = {contact.id for contact, _ in found}
        found += [
            row
            for row in lookup._contacts_where(session, Contact.name.in_(names), None)
            if row[0].id not in seen
        ]
    return found[:MAX_RESULTS]


@dataclass
class Verdict:
    """The answer first: ``kind`` (reached, waiting, unreached) and the sentence's parts,
    each a text and, for a time, its ISO-8601 UTC value (rendered in the viewer's zone)."""

    kind: str
    parts: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The sentence with times in UTC (for the audit and for readers without JS)."""
        return "".join(
            text if when is None else lookup._human_iso(when) for text, when in self.parts
        )


def _clause(message: dict[str, Any], lead: str) -> list[tuple[str, str | None]]:
    label = CHANNEL_LABEL.get(message["channel"], message["channel"])
    status = message["status"]
    if status in REACHED_STATUSES:
        return [
            (f"{lead}{label} {status} ", None),
            ("", message["delivered_at"] or message["sent_at"]),
        ]
    if status == Status.PENDING:
        return [(f"{lead}{label} pending (not sent yet)", None)]
    if status == Status.SENDING:
        return [(f"{lead}{label} sending (outcome not known yet)", None)]
    why = lookup._error_text(message)
    return [(f"{lead}{label} {status}" + (f" ({why})" if why else ""), None)]


def verdict(messages: list[dict[str, Any]]) -> Verdict:
    """ "Reached by email on 2 Dec 14:05, SMS delivered 14:06": how (and whether) the
    notice reached the customer, first reaching channel first."""
    if not messages:
        return Verdict(
            "waiting", [("Not contacted yet: no message has been planned for this customer.", None)]
        )
    best = lookup._best_per_channel(messages)
    reached = sorted(
        (m for m in best.values() if m["status"] in REACHED_STATUSES),
        key=lambda m: m["delivered_at"] or m["sent_at"] or "",
    )
    others = [m for m in best.values() if m["status"] not in REACHED_STATUSES]
    if reached:
        first = reached[0]
        label = CHANNEL_LABEL.get(first["channel"], first["channel"])
        parts: list[tuple[str, str | None]] = [
            (f"Reached by {label} on ", None),
            ("", first["delivered_at"] or first["sent_at"]),
        ]
        for message in [*reached[1:], *others]:
            parts += _clause(message, ", ")
        return Verdict("reached", parts)
    in_flight = any(m["status"] in lookup.IN_FLIGHT_STATUSES for m in others)
    parts = [("Not reached yet: " if in_flight else "Not reached: ", None)]
    for i, message in enumerate(others):
        parts += _clause(message, ", " if i else "")
    return Verdict("waiting" if in_flight else "unreached", parts)


def search(session: Session, query: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every matching contact described as `notify lookup` describes it, plus its
    :class:`Verdict` under ``web_verdict``; an empty list when nobody matches."""
    query = query.strip()
    if not query:
        return []
    found = find(session, query)
    if not found:
        return []
    contacts = lookup.describe(session, found, now or utcnow())
    for contact in contacts:
        contact["web_verdict"] = verdict(contact["messages"])
    return contacts
