"""The audit trail: who changed what, when, with which arguments and counts. Insert-only."""

from __future__ import annotations

import getpass
import os
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from notify.models import AuditRecord

_SECRET_NAME = re.compile(r"(password|secret|token|auth|key_?secret|api_?key)", re.I)


def current_actor(explicit: str | None = None) -> str:
    """``--actor`` if given, else NOTIFY_ACTOR, else the OS user."""
    if explicit:
        return explicit
    if os.environ.get("NOTIFY_ACTOR"):
        return os.environ["NOTIFY_ACTOR"]
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers): still record something true
        return f"uid:{os.getuid()}"


def mask(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments with anything secret-looking replaced by ``***``."""
    masked: dict[str, Any] = {}
    for name, value in arguments.items():
        if value is not None and _SECRET_NAME.search(name):
            masked[name] = "***"
        elif isinstance(value, (str, int, float, bool)) or value is None:
            masked[name] = value
        elif isinstance(value, (list, tuple)):
            masked[name] = [str(v) for v in value]
        else:
            masked[name] = str(value)
    return masked


def record(
    session: Session,
    command: str,
    *,
    campaign: str | None = None,
    arguments: dict[str, Any] | None = None,
    counts: dict[str, Any] | None = None,
    actor: str | None = None,
    outcome: str = "ok",
) -> AuditRecord:
    """Append one audit record in the caller's transaction (so it commits with the change)."""
    entry = AuditRecord(
        actor=current_actor(actor),
        command=command,
        campaign=campaign,
        arguments=mask(arguments or {}),
        counts=counts or {},
        outcome=outcome,
    )
    session.add(entry)
    session.flush()
    return entry


def records(session: Session, campaign: str | None = None, limit: int | None = None):
    """Audit records, oldest first, optionally for one campaign."""
    query = select(AuditRecord).order_by(AuditRecord.id)
    if campaign:
        query = query.where(AuditRecord.campaign == campaign)
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))
