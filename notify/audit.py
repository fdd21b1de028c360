"""The audit trail: who changed what, when, with which arguments and counts. Insert-only."""

from __future__ import annotations

import getpass
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import ORMExecuteState, Session

from notify.errors import NotifyError
from notify.models import AuditRecord, Event

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


@dataclass
class Run:
    """What a run reports for its audit record when it ends normally."""

    counts: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"


@contextmanager
def recorded_run(
    open_session: Callable[[], AbstractContextManager[Session]],
    command: str,
    *,
    campaign: str | None = None,
    arguments: dict[str, Any] | None = None,
    actor: str | None = None,
    enabled: bool = True,
) -> Iterator[Run]:
    """Write a run's audit record however the run ends (issue 13: a failed run is evidence
    too).

    The body sets ``run.counts`` and ``run.outcome`` when it ends normally. When it raises,
    the record says ``failed`` (with the error's one line and exit status) or
    ``interrupted`` (Ctrl-C), and the exception goes on. The record is written in its own
    transaction (``open_session``), after the run's own work committed or rolled back; if
    the database itself is what failed, the record cannot be written and the original
    error is what the operator sees.
    """
    run = Run()

    def write(outcome: str, counts: dict[str, Any]) -> None:
        if not enabled:
            return
        with open_session() as session:
            record(
                session,
                command,
                campaign=campaign,
                arguments=arguments,
                counts=counts,
                actor=actor,
                outcome=outcome,
            )

    try:
        yield run
    except KeyboardInterrupt:
        _write_after_failure(write, "interrupted", {**run.counts, "exit_status": 130})
        raise
    except NotifyError as exc:
        _write_after_failure(
            write, "failed", {**run.counts, "error": str(exc)[:500], "exit_status": exc.exit_code}
        )
        raise
    except Exception as exc:  # a bug or a database failure: its type, never its text
        _write_after_failure(
            write, "failed", {**run.counts, "error": type(exc).__name__, "exit_status": 1}
        )
        raise
    write(run.outcome, run.counts)


def _write_after_failure(
    write: Callable[[str, dict[str, Any]], None], outcome: str, counts: dict[str, Any]
) -> None:
    try:
        write(outcome, counts)
    except NotifyError:
        # Our own refusal to open the database (a missing SQLite file): there is nowhere to
        # write, and the run's error already says so; a second line would only confuse.
        return
    except Exception as exc:  # the original error matters more than its record
        logging.getLogger("notify.audit").warning(
            "could not write the audit record of a %s run: %s", outcome, type(exc).__name__
        )


def records(session: Session, campaign: str | None = None, limit: int | None = None):
    """Audit records, oldest first, optionally for one campaign."""
    query = select(AuditRecord).order_by(AuditRecord.id)
    if campaign:
        query = query.where(AuditRecord.campaign == campaign)
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


# --- Append-only guard -------------------------------------------------------------------
#
# The audit trail and the event log are evidence: once written, a row must never change or
# disappear. These hooks make any ORM attempt to do so fail loudly (and roll the transaction
# back) instead of silently rewriting history. The only sanctioned change is linking an early
# Twilio callback (stored before its SID was known) to its message once the SID is stored:
# ``applied`` False -> True and the ids None -> a value (notify.tracking.apply_early_events).

APPEND_ONLY_TABLES = frozenset({AuditRecord.__tablename__, Event.__tablename__})
_EARLY_LINK_COLUMNS = frozenset({"applied", "message_id", "contact_id", "campaign_id"})


class AppendOnlyError(NotifyError):
    """Code tried to change or delete an audit record or an event."""


def _changed_columns(target: object) -> dict[str, tuple[list, list]]:
    state = inspect(target)
    changes = {}
    for attr in state.mapper.column_attrs:
        history = state.attrs[attr.key].history
        if history.has_changes():
            changes[attr.key] = (list(history.deleted), list(history.added))
    return changes


def _is_early_link(changes: dict[str, tuple[list, list]]) -> bool:
    """True when the only change is marking an unapplied early callback applied and linked."""
    if not changes or not set(changes) <= _EARLY_LINK_COLUMNS:
        return False
    for name, (old, new) in changes.items():
        before = old[0] if old else None
        after = new[0] if new else None
        if name == "applied" and not (before in (False, None) and after is True):
            return False
        if name != "applied" and not (before is None and after is not None):
            return False
    return True


@event.listens_for(AuditRecord, "before_update")
def _no_audit_update(_mapper, _conn, target: AuditRecord) -> None:
    raise AppendOnlyError(f"audit record {target.id} is append-only: it cannot be changed")


@event.listens_for(AuditRecord, "before_delete")
def _no_audit_delete(_mapper, _conn, target: AuditRecord) -> None:
    raise AppendOnlyError(f"audit record {target.id} is append-only: it cannot be deleted")


@event.listens_for(Event, "before_update")
def _no_event_update(_mapper, _conn, target: Event) -> None:
    if not _is_early_link(_changed_columns(target)):
        raise AppendOnlyError(f"event {target.id} is append-only: it cannot be changed")


@event.listens_for(Event, "before_delete")
def _no_event_delete(_mapper, _conn, target: Event) -> None:
    raise AppendOnlyError(f"event {target.id} is append-only: it cannot be deleted")


@event.listens_for(Session, "do_orm_execute")
def _no_bulk_rewrite(state: ORMExecuteState) -> None:
    """Also refuse ORM bulk UPDATE/DELETE statements aimed at the append-only tables."""
    if not (state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    if name in APPEND_ONLY_TABLES:
        verb = "update" if state.is_update else "delete"
        raise AppendOnlyError(f"{name} is append-only: bulk {verb} refused")
