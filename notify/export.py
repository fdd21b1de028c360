"""Compliance exports as CSV: deliveries, the raw event log, and the unreached contacts.

Every export streams: rows are fetched in bounded batches (a server-side cursor on
PostgreSQL, id-keyset pages on SQLite, whose driver would otherwise buffer) and written as
they come, so memory stays flat at any size. The CSV is written to a temporary file next to
the target and renamed over it at the end: a failed export never leaves a half file that
looks like a good one. Cells a spreadsheet would run as formulas are neutralized.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Select,
    String,
    Text,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session

from notify import db
from notify.campaigns import get_campaign
from notify.csvsafe import atomic_csv, neutralize
from notify.models import (
    REACHED_STATUSES,
    Campaign,
    Contact,
    Event,
    Message,
    PasswordReset,
    Status,
    utcnow,
)
from notify.resets.state import has_passwords, iso, status_expression
from notify.times import as_utc

DELIVERY_COLUMNS = (
    "campaign",
    "contact_key",
    "name",
    "channel",
    "address",
    "exposures",
    "template",
    "status",
    "attempts",
    "provider_message_id",
    "error_code",
    "error_message",
    "first_attempt_at",
    "sent_at",
    "delivered_at",
    "last_event_at",
    "content_sha256",
    "reset_status",
    "reset_completed_at",
    # Appended (docs/contracts.md, December): read them by name.
    "transport",  # where the message was handed over: smtp:HOST, twilio or outbox
    "template_version",  # the stored template version the message was rendered from
    "state",
    "country",  # where the contact lives, as imported (notify.rules)
)
EVENT_COLUMNS = (
    "id",
    "at",
    "campaign",
    "contact_key",
    "message_id",
    "channel",
    "source",
    "kind",
    "applied",
    "detail",
)
UNREACHED_COLUMNS = ("key", "name", "email", "phone", "exposures", "country", "state", "why")

BATCH = 5000


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def time_sql(column: Any, sqlite: bool) -> Any:
    """A stored (naive UTC) timestamp as text, without SQLAlchemy's per-value conversion.

    PostgreSQL formats it (``2026-11-27T10:02:03Z``) in the server process; SQLite returns
    its stored text (``2026-11-27 10:02:03.000000``), which :func:`_utc_text` reshapes. Both
    are far cheaper than parsing a million values into datetimes and formatting them back.
    """
    if sqlite:
        return type_coerce(column, String)
    return func.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS"Z"', type_=String)


def _utc_text(value: str | None) -> str | None:
    """SQLite's ``2026-11-27 10:02:03.000000`` -> ``2026-11-27T10:02:03Z``; else as is."""
    if value and value[10:11] == " ":
        return f"{value[:10]}T{value[11:19]}Z"
    return value


def _may_be_formula(cell: Any) -> bool:
    """Cheap first test before ``neutralize``: E.164 phones ("+" and digits) pass at once."""
    return bool(cell) and cell[0] in _STARTS and not (cell[0] == "+" and cell[1:].isdecimal())


_STARTS = frozenset("".join(FORMULA_START))


Progress = Callable[[int], None]
PROGRESS_EVERY = 1000  # rows between two progress calls


def _write_safe(
    writer: Any,
    rows: Iterator[Any],
    out: slice,
    times: Sequence[int],
    suspects: Sequence[int],
    progress: Progress | None = None,
) -> int:
    """Write ``row[out]`` per row with its ``times`` cells in ISO-8601 UTC and its
    ``suspects`` cells (contact and provider text) neutralized when they look like formulas.

    A first-character test keeps nearly every row off ``neutralize``, which keeps a
    million-row export fast.
    """
    count = 0
    for row in rows:
        values = list(row[out])
        for i in times:
            values[i] = _utc_text(values[i])
        for i in suspects:
            if _may_be_formula(values[i]):
                for j in suspects:
                    values[j] = neutralize(values[j])
                break
        writer.writerow(values)
        count += 1
        if progress is not None and not count % PROGRESS_EVERY:
            progress(count)
    return count


def is_sqlite(session: Session) -> bool:
    """SQLite pages by keyset; PostgreSQL streams one statement on a server-side cursor."""
    return session.get_bind().dialect.name == "sqlite"


def campaign_filter(column: Any, campaign_id: int, keyset: bool) -> Any:
    """``column == campaign_id``; for keyset pages written so that SQLite walks the primary
    key in order instead of picking a campaign index and sorting the whole campaign for
    every page (``+ 0`` keeps the term out of index selection)."""
    return (column + 0 == campaign_id) if keyset else (column == campaign_id)


def stream_rows(
    session: Session, query: Select, key: Any, batch: int | None = None
) -> Iterator[Any]:
    """Rows of ``query`` ordered by ``key`` (its first column), in bounded memory.

    PostgreSQL: one statement on a server-side cursor. SQLite: keyset pages
    (``key > last ORDER BY key LIMIT batch``), each a short range scan.
    """
    batch = batch or BATCH
    if not is_sqlite(session):
        # Core execution on the session's connection: no ORM row processing per row.
        result = session.connection().execute(
            query.order_by(key).execution_options(stream_results=True, yield_per=batch)
        )
        yield from result
        return
    last = None
    while True:
        page = query.order_by(key).limit(batch)
        if last is not None:
            page = page.where(key > last)
        rows = session.connection().execute(page).all()
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1][0]


def _write(
    engine: Engine,
    name: str,
    path: str | Path,
    header: Sequence[str],
    produce: Callable[[Session, Any, Any], int],
    bom: bool = False,
) -> int:
    """Open one read transaction, look up the campaign, write the CSV; returns row count.

    ``path`` ``-`` writes to standard output (see :func:`notify.csvsafe.atomic_csv`);
    ``bom`` starts it with a UTF-8 byte-order mark (for Excel)."""
    with db.session_scope(engine) as session:
        campaign = get_campaign(session, name)
        with atomic_csv(path, bom) as writer:
            writer.writerow(header)
            return produce(session, campaign, writer)


# --- deliveries --------------------------------------------------------------------------------


def _deliveries_query(campaign: Any, sqlite: bool, now: datetime) -> Select:
    return (
        select(
            Message.id,
            literal(neutralize(campaign.name), String),
            Contact.key,
            Contact.name,
            Message.channel,
            Message.address,
            Contact.exposures,
            Message.template,
            Message.status,
            Message.attempts,
            Message.provider_message_id,
            Message.error_code,
            Message.error_message,
            time_sql(Message.first_attempt_at, sqlite),
            time_sql(Message.sent_at, sqlite),
            time_sql(Message.delivered_at, sqlite),
            time_sql(Message.last_event_at, sqlite),
            Message.content_sha256,
            status_expression(now, absent=None),
            time_sql(PasswordReset.completed_at, sqlite),
            Message.transport,
            Message.template_version,
            Contact.state,
            Contact.country,
        )
        .join(Contact, Contact.id == Message.contact_id)
        .outerjoin(
            PasswordReset,
            and_(
                PasswordReset.campaign_id == Message.campaign_id,
                PasswordReset.contact_id == Message.contact_id,
            ),
        )
        .where(campaign_filter(Message.campaign_id, campaign.id, sqlite))
    )


# Positions in a deliveries row of the cells that may hold formulas (contact and provider
# data; the others are our own vocabulary, numbers or times), and of the times.
_DELIVERY_SUSPECTS = (1, 2, 4, 5, 6, 9, 10, 11, 21, 22)
_DELIVERY_TIMES = (12, 13, 14, 15, 18)


def _write_deliveries(
    session: Session,
    campaign,
    writer,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> int:
    query = _deliveries_query(campaign, is_sqlite(session), now or utcnow())
    rows = stream_rows(session, query, Message.id)
    return _write_safe(
        writer,
        rows,
        slice(1, 1 + len(DELIVERY_COLUMNS)),
        _DELIVERY_TIMES,
        _DELIVERY_SUSPECTS,
        progress,
    )


def export_deliveries(
    engine: Engine,
    campaign: str,
    path: str | Path,
    now: datetime | None = None,
    progress: Progress | None = None,
    bom: bool = False,
) -> int:
    """One CSV row per message of the campaign (docs/contracts.md columns); returns the row count.

    `now` decides which pending reset links count as expired (tests inject it); `progress`
    is called with the rows written so far every PROGRESS_EVERY rows."""
    return _write(
        engine,
        campaign,
        path,
        DELIVERY_COLUMNS,
        lambda session, found, writer: _write_deliveries(session, found, writer, now, progress),
        bom,
    )


def progress_total(engine: Engine, campaign: str, what: str) -> int | None:
    """How far an export's progress goes, from the counts the triggers keep (instant):
    ``deliveries`` writes one row per message, ``unreached`` looks at every contact; the
    others are not counted in advance (None)."""
    from notify.status import read_tallies

    if what not in ("deliveries", "unreached"):
        return None
    with db.session_scope(engine) as session:
        tallies = read_tallies(session, get_campaign(session, campaign).id)
    if what == "unreached":
        return tallies.get("contacts", 0)
    return sum(n for name, n in tallies.items() if name.startswith("message:"))


# --- events ------------------------------------------------------------------------------------


def _events_query(campaign: Any, sqlite: bool) -> Select:
    detail = type_coerce(Event.detail, Text)  # the stored JSON text, not decoded
    return (
        select(
            Event.id,
            time_sql(Event.at, sqlite),
            literal(neutralize(campaign.name), String),
            Contact.key,
            Event.message_id,
            Message.channel,
            Event.source,
            Event.kind,
            case((Event.applied, "true"), else_="false"),
            detail,
        )
        .outerjoin(Contact, Contact.id == Event.contact_id)
        .outerjoin(Message, Message.id == Event.message_id)
        .where(Event.campaign_id == campaign.id)  # ix_events_campaign (campaign_id, id)
    )


_EVENT_SUSPECTS = (3, 6, 7, 9)


def _write_events(session: Session, campaign, writer, progress: Progress | None = None) -> int:
    rows = stream_rows(session, _events_query(campaign, is_sqlite(session)), Event.id)
    return _write_safe(writer, rows, slice(0, len(EVENT_COLUMNS)), (1,), _EVENT_SUSPECTS, progress)


def export_events(
    engine: Engine,
    campaign: str,
    path: str | Path,
    progress: Progress | None = None,
    bom: bool = False,
) -> int:
    """The campaign's raw event log, oldest first; returns the row count."""
    return _write(
        engine,
        campaign,
        path,
        EVENT_COLUMNS,
        lambda session, found, writer: _write_events(session, found, writer, progress),
        bom,
    )


# --- unreached ---------------------------------------------------------------------------------


def _contact_pages(session: Session, campaign_id: int, batch: int) -> Iterator[Sequence[Any]]:
    """The campaign's contacts in id-keyset pages (both databases: each page needs a second
    query for its messages anyway)."""
    keyset = is_sqlite(session)
    last = 0
    while True:
        page = session.execute(
            select(
                Contact.id,
                Contact.key,
                Contact.name,
                Contact.email,
                Contact.phone,
                Contact.exposures,
                Contact.country,
                Contact.state,
            )
            .where(campaign_filter(Contact.campaign_id, campaign_id, keyset), Contact.id > last)
            .order_by(Contact.id)
            .limit(batch)
        ).all()
        if not page:
            return
        yield page
        last = page[-1][0]


def _channel_reason(
    status: str, code: str | None, error: str | None, skip_reason: str | None
) -> str:
    if status == Status.SKIPPED:
        return f"skipped ({skip_reason})" if skip_reason else "skipped"
    details = " ".join(p for p in (code, error) if p)
    return f"{status} ({details})" if details else status


def _why(messages: list[tuple]) -> str | None:
    """None when some message reached the contact; else the last status per channel."""
    last: dict[str, tuple] = {}
    for row in messages:
        if row[1] in REACHED_STATUSES:
            return None
        last[row[0]] = row  # rows come in (channel, sequence, id) order: the latest wins
    if not last:
        return "no message planned yet"
    return "; ".join(
        f"{channel}: {_channel_reason(*row[1:])}" for channel, row in sorted(last.items())
    )


def _write_unreached(session: Session, campaign, writer, progress: Progress | None = None) -> int:
    rows = 0
    read = 0
    for page in _contact_pages(session, campaign.id, BATCH):  # read at call time (tests)
        by_contact: dict[int, list[tuple]] = {row[0]: [] for row in page}
        for contact_id, *rest in session.execute(
            select(
                Message.contact_id,
                Message.channel,
                Message.status,
                Message.error_code,
                Message.error_message,
                Message.skip_reason,
            )
            .where(Message.contact_id.in_(list(by_contact)), Message.campaign_id == campaign.id)
            .order_by(Message.contact_id, Message.channel, Message.sequence, Message.id)
        ):
            by_contact[contact_id].append(tuple(rest))
        for contact_id, key, person, email, phone, kinds, country, state in page:
            why = _why(by_contact[contact_id])
            if why is None:
                continue
            writer.writerow(
                tuple(
                    neutralize(v) for v in (key, person, email, phone, kinds, country, state, why)
                )
            )
            rows += 1
        read += len(page)
        if progress is not None:
            progress(read)  # contacts looked at: the unreached are not known in advance
    return rows


def export_unreached(
    engine: Engine,
    campaign: str,
    path: str | Path,
    progress: Progress | None = None,
    bom: bool = False,
) -> int:
    """Contacts that no channel reached (no message sent or delivered), with why.

    ``progress`` is called with the number of contacts looked at after each page."""
    return _write(
        engine,
        campaign,
        path,
        UNREACHED_COLUMNS,
        lambda session, found, writer: _write_unreached(session, found, writer, progress),
        bom,
    )


def export_codes(
    engine: Engine,
    campaign: str,
    path: str | Path,
    progress: Progress | None = None,
    bom: bool = False,
) -> int:
    """Who got which credit-monitoring enrollment code (see :mod:`notify.codes`)."""
    from notify import codes

    return codes.export_codes(engine, campaign, path, progress=progress, bom=bom)


# --- resets ------------------------------------------------------------------------------------

RESET_COLUMNS = (
    "campaign",
    "contact_key",
    "email",
    "phone",
    "reset_status",
    "reset_completed_at",
    "links_sent",
    "link_expires_at",
)


def export_resets(
    session: Session,
    campaign: Campaign,
    path: str | Path,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write who must reset (and who did) as CSV; returns the number of rows.

    Columns: campaign, contact_key, email, phone, reset_status (pending|completed|expired),
    reset_completed_at, links_sent, link_expires_at. Every contact with exposed passwords is
    listed, even before a reset record exists. Streamed in batches, written to a temporary
    file renamed into place at the end, so a reader never sees half a file.
    """
    return _write_rows(path, RESET_COLUMNS, reset_rows(session, campaign, now), progress)


def reset_rows(
    session: Session, campaign: Campaign, now: datetime | None = None
) -> Iterator[tuple]:
    """The rows of :func:`export_resets` (cells not yet neutralized), streamed from the
    database: the CLI writes them to a file, the web view to a download."""
    now = as_utc(now or utcnow())
    query = (
        select(
            Contact.key,
            Contact.email,
            Contact.phone,
            status_expression(now),
            PasswordReset.completed_at,
            PasswordReset.links_sent,
            PasswordReset.link_expires_at,
        )
        .select_from(Contact)
        .outerjoin(
            PasswordReset,
            and_(
                PasswordReset.campaign_id == Contact.campaign_id,
                PasswordReset.contact_id == Contact.id,
            ),
        )
        .where(
            Contact.campaign_id == campaign.id, or_(PasswordReset.id.is_not(None), has_passwords())
        )
        .order_by(Contact.id)
        .execution_options(yield_per=1000)
    )
    return (
        (campaign.name, key, email, phone, status, iso(done), sent or 0, iso(expires))
        for key, email, phone, status, done, sent, expires in session.execute(query)
    )


def _write_rows(
    path: str | Path,
    header: Iterable[str],
    rows: Iterable[Iterable[Any]],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write rows (cells neutralized) atomically (:func:`notify.csvsafe.atomic_csv`: a temp
    file in the same folder, renamed into place once complete, or ``-`` for standard
    output); returns the row count. ``progress`` gets the rows written every 1000 rows."""
    with atomic_csv(path) as writer:
        writer.writerow(list(header))
        return _write_neutralized(writer, rows, progress)


def _write_neutralized(
    writer: Any, rows: Iterable[Iterable[Any]], progress: Progress | None = None
) -> int:
    """Write every row with each cell neutralized to a csv writer; returns the row count.
    ``progress`` gets the rows written every PROGRESS_EVERY rows."""
    count = 0
    for row in rows:
        writer.writerow([neutralize(cell) for cell in row])
        count += 1
        if progress is not None and not count % PROGRESS_EVERY:
            progress(count)
    return count


# --- to any csv writer (the web view's downloads) ----------------------------------------------

EXPORTS = ("deliveries", "unreached", "resets", "events")


def write_export(
    session: Session, what: str, campaign: Any, writer: Any, now: datetime | None = None
) -> int:
    """Write export ``what`` (one of EXPORTS) of ``campaign`` to a csv writer: the header,
    then every row, exactly as `notify export WHAT` / `notify resets export` write their
    files (same code), so a download is byte-equal to the command's file. Returns rows."""
    if what == "resets":
        writer.writerow(RESET_COLUMNS)
        return _write_neutralized(writer, reset_rows(session, campaign, now))
    if what == "deliveries":
        writer.writerow(DELIVERY_COLUMNS)
        return _write_deliveries(session, campaign, writer, now)
    if what == "events":
        writer.writerow(EVENT_COLUMNS)
        return _write_events(session, campaign, writer)
    if what == "unreached":
        writer.writerow(UNREACHED_COLUMNS)
        return _write_unreached(session, campaign, writer)
    raise ValueError(f"unknown export {what!r}")
