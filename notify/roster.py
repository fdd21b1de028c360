"""A campaign's imported contacts: listing them and taking some back (``notify contacts``).

Removing is for a contact imported by mistake (the wrong list, a test row): it is refused for
anyone who already has a message handed to a provider, because that notice exists and its
record must stay. The contact's unsent messages and reset record go with it (foreign keys
cascade; the tallies follow through their triggers); its events stay (append-only).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from notify import tabular
from notify.errors import NotifyError
from notify.models import NOT_HANDED_OVER, Campaign, Contact, Message

LIST_FIELDS = (
    "key",
    "name",
    "email",
    "phone",
    "exposures",
    "country",
    "state",
    "locale",
    "created_at",
    "updated_at",
)


def contact_rows(session: Session, campaign: Campaign) -> Iterator[dict[str, Any]]:
    """Every contact of the campaign (key order) as a dict of LIST_FIELDS; streamed."""
    table = Contact.__table__
    query = (
        select(*(table.c[f] for f in LIST_FIELDS))
        .where(table.c.campaign_id == campaign.id)
        .order_by(table.c.key)
    )
    for row in session.execute(query.execution_options(yield_per=5000)):
        values = dict(row._mapping)
        values["exposures"] = [k for k in (values["exposures"] or "").split(";") if k]
        yield values


@dataclass
class Removal:
    """What ``remove`` did (or, for a dry run, would do)."""

    removed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # key -> why (statuses)
    messages: int = 0  # unsent messages removed with them
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        """``--json``: how many were removed, unknown and refused."""
        return {
            "removed": len(self.removed),
            "unknown": len(self.unknown),
            "refused": len(self.refused),
            "messages_removed": self.messages,
        }


def keys_from_file(path: str | Path) -> list[str]:
    """``--keys-from FILE``: a column named like a key (key, id, customer id ...) of any list
    format the importer reads, else a plain text file with one key a line."""
    from notify import importer  # the header aliases live there

    source = Path(path)
    try:
        text = source.read_bytes()
    except FileNotFoundError:
        raise NotifyError(f"--keys-from {source}: no such file") from None
    except OSError as exc:
        raise NotifyError(f"--keys-from {source}: cannot read: {exc.strerror}") from None
    key_names = {importer._header_squash(a) for a in importer._FIELD_ALIASES["key"]}

    def is_key(cell: str) -> bool:
        return importer._header_squash(cell) in key_names

    try:
        table = tabular.read_table(source, is_key)
    except NotifyError:
        table = None
    if table is not None:
        for index, name in enumerate(table.header):
            if is_key(name):
                return [k for k in table.frame[index].str.strip().tolist() if k]
    lines = text.decode("utf-8-sig", "replace").splitlines()
    return [line.strip() for line in lines if line.strip()]


def remove(
    session: Session, campaign: Campaign, keys: list[str], *, dry_run: bool = False
) -> Removal:
    """Remove the contacts with these keys, all or none: when any key is unknown or refused
    (a message handed over), nothing is removed and the result says which and why."""
    result = Removal(dry_run=dry_run)
    wanted = list(dict.fromkeys(k.strip() for k in keys if k.strip()))
    if not wanted:
        raise NotifyError("no key given: name contacts by key, or --keys-from FILE")
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(
            session.execute(
                select(Contact.key, Contact.id).where(
                    Contact.campaign_id == campaign.id, Contact.key.in_(chunk)
                )
            ).all()
        )
    result.unknown = [k for k in wanted if k not in found]
    ids = list(found.values())
    by_id = {v: k for k, v in found.items()}
    handed: dict[int, set[str]] = {}
    unsent = 0
    for start in range(0, len(ids), 500):
        id_chunk = ids[start : start + 500]
        for contact_id, status, n in session.execute(
            select(Message.contact_id, Message.status, func.count())
            .where(Message.contact_id.in_(id_chunk))
            .group_by(Message.contact_id, Message.status)
        ):
            if status in NOT_HANDED_OVER:
                unsent += n
            else:
                handed.setdefault(contact_id, set()).add(status)
    result.refused = {by_id[i]: ", ".join(sorted(s)) for i, s in handed.items()}
    result.removed = [k for k in wanted if k in found and k not in result.refused]
    result.messages = unsent
    if result.unknown or result.refused or dry_run:
        if result.unknown or result.refused:
            result.removed = []
        return result
    for start in range(0, len(ids), 500):
        session.execute(delete(Contact).where(Contact.id.in_(ids[start : start + 500])))
    session.expire_all()
    return result
