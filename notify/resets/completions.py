"""Reset completions: a link token, or the contact's key or email, marks the reset done.

Completions arrive three ways, all through :func:`complete`: a link token (the identity
provider's webhook, ``notify.server``), or the contact's key or email (the webhook or the
``resets complete`` file, :func:`import_completions`, read and its rejects written as
``contacts import`` does: ``tabular``, ``rejects``). Any unexpired, unrevoked token of the
contact completes the reset, once, and revokes the others. Errors never change anything:
every check runs before the first write.

Campaign resolution for the webhook: a token identifies its campaign by itself; for ``key`` or
``email`` the body may name a ``campaign``; without it, the key or email must match a contact
with exposed passwords in exactly one campaign (several campaigns -> 400, none -> 404).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Row,
    bindparam,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from notify import events, tabular
from notify.addresses import email_key
from notify.db import insert_ignoring_duplicates
from notify.errors import NotifyError
from notify.exposures import squash
from notify.models import (
    Campaign,
    Contact,
    PasswordReset,
    ResetToken,
    UTCDateTime,
    utcnow,
)
from notify.rejects import RejectsFile, check_rejects_path
from notify.resets.state import COMPLETED, PENDING, exposes_passwords, iso
from notify.resets.tokens import hash_token, reset_of
from notify.times import as_utc, parse_iso

_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16,512}$")
_BATCH = 500


# A completion is judged at receipt: the provider's ``completed_at`` may run ahead of our
# clock by this much (clock skew), and before the link's issue by as much.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class CompletionResult:
    """Outcome of one completion: an HTTP-style status and a message without secrets."""

    status: int
    message: str
    campaign: str | None = None
    contact_key: str | None = None
    completed_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    def body(self) -> dict[str, Any]:
        """The webhook's JSON answer (never the token)."""
        if self.ok:
            return {
                "status": COMPLETED,
                "campaign": self.campaign,
                "contact_key": self.contact_key,
                "completed_at": iso(self.completed_at),
            }
        return {"status": "error", "error": self.message}


@dataclass
class _Target:
    campaign: Campaign
    contact_id: int
    contact_key: str
    reset: PasswordReset
    token: ResetToken | None = None


def failure(status: int, message: str) -> CompletionResult:
    """A refused completion: nothing was written."""
    return CompletionResult(status=status, message=message)


def complete(
    session: Session,
    campaign: Campaign | None,
    *,
    token: str | None = None,
    key: str | None = None,
    email: str | None = None,
    completed_at: datetime,
    source: str,
    received_at: datetime | None = None,
) -> CompletionResult:
    """Mark a contact's reset completed, by link token, key or email; once.

    Status 200 completed; 400 bad request (not exactly one of token/key/email, ambiguous
    match); 404 unknown; 409 already completed or link revoked/used; 410 link expired at
    ``completed_at``. Nothing is written unless the result is 200. ``campaign`` may be None:
    a token finds its own, a key/email must match in exactly one campaign. ``source``
    (``webhook``, ``import``...) is kept as ``completed_via`` and in the event.

    ``received_at`` (the webhook's time of receipt) makes the link's expiry judged at
    receipt, not at the claimed ``completed_at``, and a ``completed_at`` more than
    :data:`CLOCK_SKEW` before the link was issued a 400: a backdated body cannot complete an
    expired link. Both times are stored.
    """
    given = [
        name
        for name, value in (("token", token), ("key", key), ("email", email))
        if value not in (None, "")
    ]
    if len(given) != 1:
        return failure(400, "give exactly one of token, key or email")
    completed_at = as_utc(completed_at)
    received = as_utc(received_at) if received_at is not None else None
    if token:
        target = _target_by_token(session, campaign, token)
    else:
        target = _target_by_identity(session, campaign, key=key, email=email)
    if isinstance(target, CompletionResult):
        return target
    problem = _check_target(target, completed_at, received)
    if problem is not None:
        return problem
    _apply(session, target, completed_at, source, by=given[0], received_at=received)
    return CompletionResult(
        200,
        "password reset completed",
        campaign=target.campaign.name,
        contact_key=target.contact_key,
        completed_at=completed_at,
    )


def _target_by_token(
    session: Session, campaign: Campaign | None, token: str
) -> _Target | CompletionResult:
    if not isinstance(token, str) or not _TOKEN_SHAPE.match(token):
        return failure(404, "unknown token")
    row = session.execute(
        select(
            ResetToken.id, ResetToken.reset_id, PasswordReset.campaign_id, PasswordReset.contact_id
        )
        .join(PasswordReset, PasswordReset.id == ResetToken.reset_id)
        .where(ResetToken.token_hash == hash_token(token))
    ).first()
    if row is None or (campaign is not None and row.campaign_id != campaign.id):
        return failure(404, "unknown token")
    # Lock the reset first: completions of one contact then run one after the other, and the
    # token re-read below sees any revocation the previous one made.
    reset = reset_of(session, row.campaign_id, row.contact_id, lock=True)
    token_row = session.scalar(
        select(ResetToken).where(ResetToken.id == row.id).execution_options(populate_existing=True)
    )
    if reset is None:  # a token's reset is never deleted
        return failure(404, "unknown token")
    owner = campaign if campaign is not None else session.get_one(Campaign, row.campaign_id)
    key = session.execute(select(Contact.key).where(Contact.id == row.contact_id)).scalar_one()
    return _Target(owner, row.contact_id, key, reset, token_row)


def _contacts_matching(
    session: Session, campaign: Campaign | None, *, key: str | None, email: str | None
) -> list[Row[int, int, str, str]]:
    """(contact id, campaign id, key, exposures) of contacts with this key or email."""
    base = select(Contact.id, Contact.campaign_id, Contact.key, Contact.exposures)
    if campaign is not None:
        base = base.where(Contact.campaign_id == campaign.id)
    if key is not None:
        return list(session.execute(base.where(Contact.key == key.strip())))
    wanted = email_key(email or "")
    if wanted is None:
        return []
    rows = list(session.execute(base.where(Contact.email == wanted)))
    if not rows:  # the provider may spell the local part in another case
        rows = list(session.execute(base.where(func.lower(Contact.email) == wanted.lower())))
    return rows


def _target_by_identity(
    session: Session, campaign: Campaign | None, *, key: str | None, email: str | None
) -> _Target | CompletionResult:
    what = "key" if key else "email"
    if not isinstance(key if key else email, str):
        return failure(400, f"{what} must be a string")
    rows = _contacts_matching(
        session, campaign, key=key if key else None, email=email if not key else None
    )
    if not rows:
        return failure(404, f"no contact with this {what}")
    rows = [row for row in rows if exposes_passwords(row.exposures)]
    if not rows:
        return failure(404, f"the contact with this {what} has no exposed password to reset")
    campaign_ids = {row.campaign_id for row in rows}
    if len(campaign_ids) > 1:
        return failure(
            400, f"this {what} matches contacts in {len(campaign_ids)} campaigns; name the campaign"
        )
    if len(rows) > 1:
        return failure(400, f"this {what} matches {len(rows)} contacts; use their key")
    row = rows[0]
    owner = campaign if campaign is not None else session.get_one(Campaign, row.campaign_id)
    # Created here when the engine has not made it yet: a pending reset, completed below.
    reset = reset_of(session, row.campaign_id, row.id, lock=True, create=True)
    if reset is None:  # not created only without exposed passwords, checked above
        return failure(404, f"the contact with this {what} has no exposed password to reset")
    return _Target(owner, row.id, row.key, reset)


def _check_target(
    target: _Target, completed_at: datetime, received: datetime | None
) -> CompletionResult | None:
    if target.reset.status == COMPLETED:
        return failure(409, "password reset already completed")
    token = target.token
    if token is not None:
        if token.revoked_at is not None or token.used_at is not None:
            return failure(409, "this link was revoked")
        if received is not None and completed_at < token.created_at - CLOCK_SKEW:
            return failure(400, "completed_at is before this link was issued")
        if token.expires_at <= (received or completed_at):
            return failure(410, "this link has expired")
    return None


def _apply(
    session: Session,
    target: _Target,
    completed_at: datetime,
    source: str,
    *,
    by: str,
    received_at: datetime | None = None,
) -> None:
    received = received_at or utcnow()
    reset = target.reset
    reset.status = COMPLETED
    reset.completed_at = completed_at
    reset.completion_received_at = received
    reset.completed_via = source
    if target.token is not None:
        target.token.used_at = completed_at
    _revoke_open_tokens(session, [reset.id], utcnow())
    events.record(
        session,
        source="reset",
        kind="reset_completed",
        campaign_id=target.campaign.id,
        contact_id=target.contact_id,
        at=completed_at,
        detail={"via": source, "by": by, "received_at": iso(received)},
    )
    session.flush()


def _revoke_open_tokens(session: Session, reset_ids: list[int], at: datetime) -> None:
    session.execute(
        update(ResetToken)
        .where(
            ResetToken.reset_id.in_(reset_ids),
            ResetToken.revoked_at.is_(None),
            ResetToken.used_at.is_(None),
        )
        .values(revoked_at=at)
        .execution_options(synchronize_session="fetch")
    )


_KEY_HEADERS = {
    squash(n)
    for n in (
        "key",
        "contact key",
        "id",
        "customer id",
        "client id",
        "account id",
        "account",
        "user id",
    )
}
_EMAIL_HEADERS = {squash(n) for n in ("email", "e-mail", "email address", "mail")}
_TIME_HEADERS = {
    squash(n)
    for n in (
        "completed_at",
        "completed",
        "completed at",
        "completion time",
        "reset at",
        "reset completed at",
        "reset_completed_at",
        "reset time",
        "timestamp",
        "date",
    )
}

_KNOWN_HEADERS = _KEY_HEADERS | _EMAIL_HEADERS | _TIME_HEADERS


@dataclass
class CompletionsSummary:
    """Counts of one ``resets complete`` run (also its ``--json`` output)."""

    read: int = 0
    completed: int = 0
    already_completed: int = 0
    rejected: int = 0
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)  # what the reader inferred (sheet, title)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "completed": self.completed,
            "already_completed": self.already_completed,
            "rejected": self.rejected,
            "dry_run": self.dry_run,
        }

    def lines(self) -> list[str]:
        verb = "would complete" if self.dry_run else "completed"
        return [
            f"Read {self.read} row(s): {verb} {self.completed} reset(s), "
            f"{self.already_completed} already completed, {self.rejected} rejected.",
            *(f"Note: {note}." for note in self.notes),
        ]


@dataclass
class _Row:
    line: int
    cells: list[str]
    key: str = ""
    email: str = ""
    completed_at: datetime | None = None
    reason: str | None = None
    contact_id: int | None = None


@dataclass
class _Columns:
    header: list[str]
    key: int | None
    email: int | None
    time: int


def import_completions(
    session: Session,
    campaign: Campaign,
    path: str | Path,
    *,
    rejects_path: str | Path | None = None,
    dry_run: bool = False,
    sheet: str | None = None,
    header_row: int | None = None,
) -> CompletionsSummary:
    """Apply the identity provider's completions (a key or email column, and completed_at).

    The file is read as ``contacts import`` reads its list (``tabular.read_table``: CSV, TSV,
    workbooks, JSON, Parquet, told by content; the same one-line errors), and rejected rows
    go to the same rejects file (``notify.rejects``). Rows that cannot be applied are
    rejected with their line number (header = line 1) and a reason; rows of contacts already
    completed are counted, not rejected, so running the same file again completes nothing
    new. All-or-nothing: an unreadable file changes nothing, and the work runs in a savepoint
    that is rolled back on any error, or for ``dry_run``.
    """
    source = Path(path)
    target = check_rejects_path(rejects_path, source)
    table = tabular.read_table(source, _recognizes, sheet=sheet, header_row=header_row)
    columns = _columns(source, table.header)
    summary = CompletionsSummary(dry_run=dry_run, notes=list(table.notes))
    session.flush()
    savepoint = session.begin_nested()
    try:
        with RejectsFile(target, table.header) as rejects:
            done: set[int] = set()
            for batch in _batches(table, columns):
                _import_batch(session, campaign, batch, summary, done, rejects)
            if dry_run:
                savepoint.rollback()
            else:
                savepoint.commit()
    except BaseException:
        if savepoint.is_active:
            savepoint.rollback()
        raise
    return summary


def _recognizes(cell: str) -> bool:
    """Whether a header cell names a column of a completions file (finds the header row)."""
    return squash(cell) in _KNOWN_HEADERS


def _columns(path: Path, header: list[str]) -> _Columns:
    """Where the key, email and completed_at columns are; the first of each name wins."""
    names = [squash(name) for name in header]

    def find(choices: set[str]) -> int | None:
        return next((i for i, name in enumerate(names) if name in choices), None)

    key, email, time = find(_KEY_HEADERS), find(_EMAIL_HEADERS), find(_TIME_HEADERS)
    if key is None and email is None:
        raise NotifyError(f"{path}: no key or email column (found: {', '.join(header)})")
    if time is None:
        raise NotifyError(f"{path}: no completed_at column (found: {', '.join(header)})")
    return _Columns(header=header, key=key, email=email, time=time)


def _batches(table: tabular.Table, columns: _Columns) -> Iterator[list[_Row]]:
    """The data rows in file order, _BATCH at a time, each parsed or given a reject reason.

    Rows the reader could not parse (``bad_rows``) come in their place, rejected with the
    reader's reason; a row on a line holding a NUL byte (which the CSV parser drops) is
    rejected as the importer rejects it, rather than matched without it.
    """
    frame, lines = table.frame, table.lines
    unparsed = deque(sorted(table.bad_rows))
    nul = table.nul_rows()
    for start in range(0, len(frame), _BATCH):
        block = frame.iloc[start : start + _BATCH].to_numpy(dtype=object).tolist()
        batch: list[_Row] = []
        for offset, cells in enumerate(block):
            line = int(lines[start + offset])
            while unparsed and unparsed[0][0] < line:
                batch.append(_unparsed(*unparsed.popleft()))
            row = _parse_row(line, _shown(cells, len(columns.header)), columns)
            if start + offset in nul:
                row.reason = tabular.NUL_REASON
            batch.append(row)
        yield batch
    if unparsed:
        yield [_unparsed(line, reason) for line, reason in unparsed]


def _unparsed(line: int, reason: str) -> _Row:
    return _Row(line=line, cells=[], reason=reason)


def _shown(cells: list[str], width: int) -> list[str]:
    """A row's cells as the file has them: the header's width, and any filled cell beyond."""
    used = len(cells)
    while used > width and not cells[used - 1].strip():
        used -= 1
    return cells[:used]


def _cell(cells: list[str], index: int | None) -> str:
    return cells[index].strip() if index is not None and index < len(cells) else ""


def _parse_row(line: int, cells: list[str], columns: _Columns) -> _Row:
    row = _Row(
        line=line, cells=cells, key=_cell(cells, columns.key), email=_cell(cells, columns.email)
    )
    text = _cell(cells, columns.time)
    if not row.key and not row.email:
        row.reason = "no key or email"
    elif not text:
        row.reason = "completed_at is empty"
    else:
        try:
            row.completed_at = parse_iso(text)
        except ValueError:
            row.reason = f"completed_at {text!r} is not an ISO-8601 date or time"
    return row


def _import_batch(
    session: Session,
    campaign: Campaign,
    batch: list[_Row],
    summary: CompletionsSummary,
    done: set[int],
    rejects: RejectsFile,
) -> None:
    summary.read += len(batch)
    _resolve_contacts(session, campaign, [r for r in batch if r.reason is None])
    wanted = {r.contact_id for r in batch if r.reason is None}
    states = _locked_resets(session, campaign, wanted)
    completing: list[tuple[_Row, int]] = []
    for row in batch:
        contact_id = row.contact_id
        if row.reason is not None or contact_id is None:  # resolved rows have their contact
            summary.rejected += 1
            rejects.write(row.line, row.reason or "", row.cells)
            continue
        reset_id, status = states[contact_id]
        if status == COMPLETED or contact_id in done:
            summary.already_completed += 1
            continue
        done.add(contact_id)
        completing.append((row, reset_id))
    _complete_many(session, campaign, completing)
    summary.completed += len(completing)


def _resolve_contacts(session: Session, campaign: Campaign, rows: list[_Row]) -> None:
    """Set ``contact_id`` on each row, or a reject reason; a key wins over an email."""
    base = select(Contact.id, Contact.key, Contact.email, Contact.exposures).where(
        Contact.campaign_id == campaign.id
    )
    keys = {r.key for r in rows if r.key}
    by_key = {c.key: c for c in session.execute(base.where(Contact.key.in_(keys)))} if keys else {}
    need_email = [r for r in rows if r.key not in by_key and r.email]
    wanted = {e for r in need_email if (e := email_key(r.email))}
    by_email = _contacts_by_email(session, base, wanted)
    for row in rows:
        matches = [by_key[row.key]] if row.key in by_key else []
        if not matches and row.email:
            normalized = email_key(row.email)
            if normalized is not None:
                matches = by_email.get(normalized) or by_email.get(normalized.lower(), [])
        if not matches:
            row.reason = (
                f"unknown key {row.key!r}"
                if row.key and not row.email
                else (
                    f"no contact with key {row.key!r} or email {row.email!r}"
                    if row.key
                    else f"no contact with email {row.email!r}"
                )
            )
        elif len(matches) > 1:
            row.reason = f"email {row.email!r} matches {len(matches)} contacts; give the key"
        elif not exposes_passwords(matches[0].exposures):
            row.reason = "this contact has no exposed password (no reset to complete)"
        else:
            row.contact_id = matches[0].id


def _contacts_by_email(session: Session, base, emails: set[str]) -> dict[str, list]:
    """Contacts by exact stored email, and by lower-cased email for the ones not found."""
    found: dict[str, list] = {}
    if not emails:
        return found
    for contact in session.execute(base.where(Contact.email.in_(emails))):
        found.setdefault(contact.email, []).append(contact)
    missing = {e.lower() for e in emails if e not in found}
    if missing:
        query = base.where(func.lower(Contact.email).in_(missing))
        for contact in session.execute(query):
            found.setdefault(contact.email.lower(), []).append(contact)
    return found


def _locked_resets(
    session: Session, campaign: Campaign, contact_ids: set[int | None]
) -> dict[int, tuple[int, str]]:
    """(reset id, status) by contact, created where missing, rows locked for the update.

    Plain columns, not ORM objects: the batch is then written with a few bulk statements.
    """
    ids = [i for i in contact_ids if i is not None]
    if not ids:
        return {}
    table = PasswordReset.__table__
    query = (
        select(table.c.contact_id, table.c.id, table.c.status)
        .where(table.c.campaign_id == campaign.id, table.c.contact_id.in_(ids))
        .with_for_update()
    )
    states = {row.contact_id: (row.id, row.status) for row in session.execute(query)}
    missing = [i for i in ids if i not in states]
    if missing:
        source = select(
            Contact.campaign_id,
            Contact.id,
            literal(PENDING),
            literal(0),
            literal(utcnow(), UTCDateTime()),
        ).where(Contact.campaign_id == campaign.id, Contact.id.in_(missing))
        columns = ["campaign_id", "contact_id", "status", "links_sent", "created_at"]
        insert_ignoring_duplicates(session, table, columns, source)
        states = {row.contact_id: (row.id, row.status) for row in session.execute(query)}
    return states


def _complete_many(session: Session, campaign: Campaign, items: list[tuple[_Row, int]]) -> None:
    """Complete a batch with three bulk statements (resets, events, revocations)."""
    if not items:
        return
    resets_table = PasswordReset.__table__
    session.execute(
        resets_table.update()
        .where(resets_table.c.id == bindparam("reset_id"))
        .values(
            status=COMPLETED,
            completed_at=bindparam("done_at"),
            completed_via="import",
            completion_received_at=utcnow(),
        ),
        [{"reset_id": reset_id, "done_at": row.completed_at} for row, reset_id in items],
    )
    events.append(
        session,
        [
            events.row(
                campaign.id,
                None,
                row.contact_id,
                "reset_completed",
                "reset",
                row.completed_at or utcnow(),
                {"via": "import", "by": "key" if row.key else "email", "line": row.line},
            )
            for row, _ in items
        ],
    )
    tokens = ResetToken.__table__
    session.execute(
        tokens.update()
        .where(
            tokens.c.reset_id.in_([reset_id for _, reset_id in items]),
            tokens.c.revoked_at.is_(None),
            tokens.c.used_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    # Objects the caller holds for these rows are now stale: reload them on next access.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, (PasswordReset, ResetToken)):
            session.expire(obj)
