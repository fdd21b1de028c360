"""The support search: one box for a name, an email, a phone number in any format or a key.

Key, email and phone go through `notify lookup`'s own search and normalization. A name is
found by its exact spelling in any case from ``ix_contacts_name`` (a handful of index probes):
what every search does, in well under 100 ms at a million contacts.

Asked for (``parts``: the page offers it for any query that can be part of a name), a name is
also matched by part: "schmidt" and "anna schm" find "Anna Schmidt" (every typed word, in the
order typed, anywhere in the name; ``%`` and ``_`` are literal). No index helps that, so it
scans the contacts (0.1 to 0.6 s at a million), bounded twice: it stops at ``MAX_RESULTS``
matches (the page then says "narrow your search") and after ``SCAN_SECONDS`` (the page then
says it searched only part of the list, never "Not in this breach"). Until the part match
has run, a name that matched nothing is not called "Not in this breach" either.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from notify import lookup
from notify.models import REACHED_STATUSES, Campaign, Contact, Status, utcnow
from notify.status import CHANNEL_LABEL

MAX_RESULTS = 50
# How long the part-of-a-name scan may run: a whole scan of a million contacts fits (0.1 to
# 0.6 s on a busy machine, see bench/web_search_bench.py); a bigger list or a slower database
# stops and says so instead of holding the page.
SCAN_SECONDS = 2.0
MORE = "more"  # Matches.note: more than MAX_RESULTS matched
STOPPED = "stopped"  # Matches.note: the scan ran out of time before the end of the list


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


def name_pattern(text: str) -> str | None:
    """The LIKE pattern for a typed name part: every word, in order, anywhere (``"anna
    schm"`` gives ``%anna%schm%``), with ``\\``, ``%`` and ``_`` escaped so they are
    literal; None when the text cannot be part of a name (no letter, or an email address)."""
    if "@" in text or not any(c.isalpha() for c in text):
        return None
    words = [re.sub(r"([\\%_])", r"\\\1", word) for word in text.split()]
    return "%" + "%".join(words) + "%"


@dataclass
class Matches:
    """``(Contact, campaign name)`` rows, and ``note`` (MORE, STOPPED or None)."""

    rows: list[tuple] = field(default_factory=list)
    note: str | None = None
    # The query can be part of a name and was not matched as one (only exact spellings).
    part_unsearched: bool = False


class _TooSlow(Exception):
    pass


@contextmanager
def _time_limit(session: Session, seconds: float) -> Iterator[None]:
    """Raise _TooSlow when a statement inside runs longer than ``seconds``: SQLite checks a
    progress handler; PostgreSQL sets statement_timeout in a savepoint (so the cancelled
    statement does not abort the search's transaction, which still writes the audit)."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        raw = connection.connection.driver_connection
        assert raw is not None
        deadline = time.monotonic() + seconds
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            yield
        except OperationalError as exc:
            if "interrupted" not in str(exc.orig):
                raise
            raise _TooSlow() from exc
        finally:
            raw.set_progress_handler(None, 0)
        return
    try:
        with session.begin_nested():
            session.execute(
                select(func.set_config("statement_timeout", str(int(seconds * 1000)), True))
            )
            yield
            session.execute(select(func.set_config("statement_timeout", "0", True)))
    except OperationalError as exc:
        if "statement timeout" not in str(exc.orig):
            raise
        raise _TooSlow() from exc


def _name_part_rows(session: Session, pattern: str, seconds: float) -> list[tuple]:
    """Up to MAX_RESULTS + 1 contacts whose name matches ``pattern`` in any case.

    No ORDER BY in SQL: the scan stops at the limit instead of sorting every match."""
    name = Contact.name
    dialect = session.get_bind().dialect.name
    # SQLite's LIKE ignores case already (ASCII letters only): lower() on each row only slows
    # it. PostgreSQL: lower() on both sides and LIKE scans a third faster than ILIKE.
    matches = (
        name.like(pattern, escape="\\")
        if dialect == "sqlite"
        else func.lower(name).like(func.lower(pattern), escape="\\")
    )
    query = (
        select(Contact, Campaign.name)
        .join(Campaign, Campaign.id == Contact.campaign_id)
        .where(matches)
        .limit(MAX_RESULTS + 1)
    )
    with _time_limit(session, seconds):
        rows = [tuple(row) for row in session.execute(query)]
    return sorted(rows, key=lambda row: (row[0].campaign_id, row[0].id))


def find(
    session: Session, query: str, seconds: float | None = None, parts: bool = False
) -> Matches:
    """Contacts matching the query by key, email or phone (the lookup's own search,
    :func:`notify.lookup._find_contacts`), else by name: exact spellings first (index), then,
    when ``parts`` is asked for, names holding the typed words (a bounded scan)."""
    found = Matches(lookup._find_contacts(session, query, None))
    by_address = bool(found.rows)  # a key, an address or a number: no name scan
    names = name_variants(query)
    if names and len(found.rows) < MAX_RESULTS:
        seen = {contact.id for contact, _ in found.rows}
        found.rows += [
            row
            for row in lookup._contacts_where(session, Contact.name.in_(names), None)
            if row[0].id not in seen
        ]
    pattern = None if by_address else name_pattern(query)
    if pattern and not parts:
        found.part_unsearched = True
    elif pattern:
        seen = {contact.id for contact, _ in found.rows}
        try:
            within = _name_part_rows(session, pattern, SCAN_SECONDS if seconds is None else seconds)
        except _TooSlow:
            found.note = STOPPED
        else:
            found.rows += [row for row in within if row[0].id not in seen]
            if len(within) > MAX_RESULTS:
                found.note = MORE
    if len(found.rows) > MAX_RESULTS:
        found.note = found.note or MORE
    found.rows = found.rows[:MAX_RESULTS]
    return found


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


def search(
    session: Session, query: str, now: datetime | None = None, parts: bool = False
) -> list[dict[str, Any]]:
    """Every matching contact described as `notify lookup` describes it, plus its
    :class:`Verdict` under ``web_verdict``; an empty list when nobody matches."""
    return answer(session, query, now, parts=parts).contacts


@dataclass
class Answer:
    """What the search page shows: the contacts described, and the Matches' ``note``."""

    contacts: list[dict[str, Any]]
    note: str | None = None
    part_unsearched: bool = False  # the page offers the part-of-a-name search


def answer(
    session: Session,
    query: str,
    now: datetime | None = None,
    seconds: float | None = None,
    parts: bool = False,
) -> Answer:
    """The search with its note: :func:`search`, plus whether more matched (MORE) or the
    name scan stopped early (STOPPED), so the page never calls a cut-short search complete,
    and whether the query could still match part of a name (``parts`` not asked for)."""
    query = query.strip()
    if not query:
        return Answer([])
    found = find(session, query, seconds, parts)
    if not found.rows:
        return Answer([], found.note, found.part_unsearched)
    contacts = lookup.describe(session, found.rows, now or utcnow())
    for contact in contacts:
        contact["web_verdict"] = verdict(contact["messages"])
    return Answer(contacts, found.note, found.part_unsearched)
