"""Credit-monitoring enrollment codes: a pool per campaign, exactly one code per contact.

``notify codes import`` loads the codes the monitoring provider issued. Each contact whose
identity data was exposed gets one code from the pool when the campaign's messages are
planned, in the same transaction: the code is on the contact before any notice can be
rendered, and a crash before the commit assigns nothing. Two database constraints hold
"never shared, never two" whatever the code path (``uq_enrollment_codes_code``,
``uq_enrollment_codes_contact``); the campaign row lock serializes assignment between
workers, so a second worker finds the first one's assignments instead of a constraint error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, bindparam, func, select, text
from sqlalchemy.orm import Session

from notify import db
from notify.campaigns import get_campaign
from notify.csvsafe import atomic_csv, neutralize
from notify.errors import NotifyError
from notify.models import Campaign, Contact, EnrollmentCode, UTCDateTime, utcnow
from notify.times import iso_utc

MAX_CODE = 128
EXPORT_COLUMNS = ("campaign", "contact_key", "name", "email", "phone", "code", "assigned_at")


@dataclass
class CodeImportSummary:
    """What ``notify codes import`` did."""

    read: int = 0  # codes in the file
    added: int = 0  # new to the pool
    already: int = 0  # in the pool before (a re-import changes nothing)


def read_codes(path: str | Path) -> list[str]:
    """The codes of a CSV file with a ``code`` column (other columns ignored), in file order.

    A missing column, an empty or over-long code, or the same code twice is one error naming
    the file and line: a pool with a duplicate would give two people the same code.
    """
    path = Path(path)
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise NotifyError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NotifyError(f"{path}: is a folder, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise NotifyError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    first_line = raw.split("\n", 1)[0]
    try:  # Excel in many locales writes ";" (or a tab); a one-column file has no delimiter
        delimiter = csv.Sniffer().sniff(first_line, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter)
    header = next(reader, None)
    names = [h.strip().lower() for h in header or []]
    if "code" not in names:
        raise NotifyError(
            f'{path}, line 1: no column "code" (columns: {", ".join(header or []) or "none"})'
        )
    col = names.index("code")
    codes: list[str] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        value = row[col].strip() if col < len(row) else ""
        if not value:
            raise NotifyError(f'{path}, line {line}, column "code": empty')
        if len(value) > MAX_CODE:
            raise NotifyError(
                f'{path}, line {line}, column "code": longer than {MAX_CODE} characters'
            )
        if value in seen:
            raise NotifyError(
                f'{path}, line {line}, column "code": {value[:4]}... already on '
                f"line {seen[value]}; a code must be given to one person only"
            )
        seen[value] = line
        codes.append(value)
    if not codes:
        raise NotifyError(f"{path}: no codes (only a header)")
    return codes


def import_codes(session: Session, campaign: Campaign, path: str | Path) -> CodeImportSummary:
    """Add the file's codes to the campaign's pool (all or nothing); known codes are skipped."""
    codes = read_codes(path)
    known = set(
        session.scalars(
            select(EnrollmentCode.code).where(EnrollmentCode.campaign_id == campaign.id)
        )
    )
    new = [c for c in codes if c not in known]
    now = utcnow()
    if new:
        session.execute(
            EnrollmentCode.__table__.insert(),
            [{"campaign_id": campaign.id, "code": c, "created_at": now} for c in new],
        )
    return CodeImportSummary(read=len(codes), added=len(new), already=len(codes) - len(new))


@dataclass
class PoolState:
    """How the pool stands against the contacts who need a code."""

    total: int  # codes imported
    free: int  # not given to anyone yet
    assigned: int
    waiting: int  # identity-exposed contacts without a code


def _needs_code(campaign_id: int):
    return (
        Contact.campaign_id == campaign_id,
        Contact.exposures.like("%identity%"),
        Contact.enrollment_code.is_(None),
    )


def pool_state(session: Session, campaign: Campaign) -> PoolState:
    """Counts of the pool and of the contacts still waiting for a code."""
    total, assigned = session.execute(
        select(func.count(), func.count(EnrollmentCode.contact_id)).where(
            EnrollmentCode.campaign_id == campaign.id
        )
    ).one()
    waiting = (
        session.scalar(select(func.count()).select_from(Contact).where(*_needs_code(campaign.id)))
        or 0
    )
    return PoolState(total=total, free=total - assigned, assigned=assigned, waiting=waiting)


_PAIR_SQL = """
UPDATE enrollment_codes SET contact_id = p.contact_id, assigned_at = :now
FROM (
  SELECT n.contact_id, f.code_id FROM
    (SELECT c.id AS contact_id, row_number() OVER (ORDER BY c.id) AS rn
       FROM contacts c
      WHERE c.campaign_id = :campaign_id AND c.exposures LIKE '%identity%'
        AND c.enrollment_code IS NULL
        AND NOT EXISTS (SELECT 1 FROM enrollment_codes e WHERE e.contact_id = c.id)) n
  JOIN
    (SELECT e.id AS code_id, row_number() OVER (ORDER BY e.id) AS rn
       FROM enrollment_codes e
      WHERE e.campaign_id = :campaign_id AND e.contact_id IS NULL) f
  ON n.rn = f.rn
) p
WHERE enrollment_codes.id = p.code_id
"""

_COPY_SQL = """
UPDATE contacts SET enrollment_code =
  (SELECT e.code FROM enrollment_codes e WHERE e.contact_id = contacts.id)
WHERE contacts.campaign_id = :campaign_id AND contacts.enrollment_code IS NULL
  AND EXISTS (SELECT 1 FROM enrollment_codes e WHERE e.contact_id = contacts.id)
"""


def assign(session: Session, campaign: Campaign, now: datetime | None = None) -> int:
    """Give each identity-exposed contact without a code one free code; returns how many.

    Runs inside the caller's transaction (``send.plan.plan``). A campaign that has no pool
    needs no codes. A pool smaller than the contacts waiting is a NotifyError and assigns
    nothing, so ``send`` refuses to start rather than tell some people their code and not
    others. The campaign row is locked first (PostgreSQL; SQLite writes are serialized
    anyway), so concurrent workers assign one after the other.
    """
    if not db.is_sqlite(session.get_bind()):
        session.execute(select(Campaign.id).where(Campaign.id == campaign.id).with_for_update())
    state = pool_state(session, campaign)
    if state.total == 0 or state.waiting == 0:
        return 0
    if state.free < state.waiting:
        raise NotifyError(
            f"campaign {campaign.name}: {state.waiting:,} contact(s) with identity data exposed "
            f"need a credit-monitoring code but only {state.free:,} code(s) are free in the "
            f"pool; import {state.waiting - state.free:,} more with: notify codes import FILE "
            f"--campaign {campaign.name}"
        )
    stmt = text(_PAIR_SQL).bindparams(bindparam("now", type_=UTCDateTime()))
    assigned = db.rowcount(
        session.execute(stmt, {"now": now or utcnow(), "campaign_id": campaign.id})
    )
    session.execute(text(_COPY_SQL), {"campaign_id": campaign.id})
    return assigned


def export_codes(
    engine: Engine,
    name: str,
    path: str | Path,
    progress: Callable[[int], None] | None = None,
    bom: bool = False,
) -> int:
    """Who got which code (one row per assigned code), as CSV; returns the row count."""
    with db.session_scope(engine) as session:
        campaign = get_campaign(session, name)
        rows = session.execute(
            select(
                Contact.key,
                Contact.name,
                Contact.email,
                Contact.phone,
                EnrollmentCode.code,
                EnrollmentCode.assigned_at,
            )
            .join(Contact, Contact.id == EnrollmentCode.contact_id)
            .where(EnrollmentCode.campaign_id == campaign.id)
            .order_by(EnrollmentCode.assigned_at, EnrollmentCode.id)
        )
        count = 0
        with atomic_csv(path, bom) as writer:
            writer.writerow(EXPORT_COLUMNS)
            for key, cname, email, phone, code, at in rows:
                writer.writerow(
                    [
                        neutralize(campaign.name),
                        neutralize(key),
                        neutralize(cname),
                        neutralize(email),
                        neutralize(phone),
                        neutralize(code),
                        iso_utc(at) or "",
                    ]
                )
                count += 1
                if progress is not None and not count % 1000:
                    progress(count)
        return count
