"""The audit trail: recorded by changing commands, shown by `notify audit`, append-only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, func, select, update

from notify import audit, db, events
from notify.audit import AppendOnlyError
from notify.cli import main
from notify.models import AuditRecord, Event

PACKAGE = Path(audit.__file__).resolve().parent


def count(engine, model) -> int:
    with db.session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(model))


def test_records_are_append_only_through_the_orm(engine):
    with db.session_scope(engine) as session:
        entry = audit.record(session, "campaign load", campaign="c",
                             arguments={"file": "x.toml", "password": "hunter2"})
        audit_id = entry.id
        ev = events.record(session, source="send", kind="sent", campaign_id=None)
        session.flush()
        event_id = ev.id
    with pytest.raises(AppendOnlyError), db.session_scope(engine) as session:
        session.get(AuditRecord, audit_id).outcome = "tampered"
    with pytest.raises(AppendOnlyError), db.session_scope(engine) as session:
        session.delete(session.get(AuditRecord, audit_id))
    with pytest.raises(AppendOnlyError), db.session_scope(engine) as session:
        session.get(Event, event_id).kind = "delivered"
    with pytest.raises(AppendOnlyError), db.session_scope(engine) as session:
        session.delete(session.get(Event, event_id))
    for statement in (update(AuditRecord).values(actor="x"), delete(AuditRecord),
                      update(Event).values(kind="x"), delete(Event)):
        with pytest.raises(AppendOnlyError), db.session_scope(engine) as session:
            session.execute(statement)
    with db.session_scope(engine) as session:
        kept = session.get(AuditRecord, audit_id)
        assert kept.outcome == "ok" and kept.arguments["password"] == "***"
        assert session.get(Event, event_id).kind == "sent"
    assert count(engine, AuditRecord) == 1 and count(engine, Event) == 1


_WRITE = re.compile(
    r"""(update|delete)\(\s*(AuditRecord|Event)\b"""  # ORM/Core statements
    r"""|(UPDATE|DELETE\s+FROM)\s+["']?(audit_log|events)\b"""  # raw SQL
    r"""|\.delete\(\s*(entry|record|event|audit)""",  # session.delete(...) of one row
    re.IGNORECASE,
)


def test_package_source_never_updates_or_deletes_audit_or_events():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if _WRITE.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert offenders == []


def test_audit_cli_lists_masked_records(env, campaign_file):
    runner = CliRunner()
    runner.invoke(main, ["--actor", "alice", "campaign", "load", str(campaign_file)],
                  catch_exceptions=False)
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        audit.record(session, "send", campaign="acme-2026-11",
                     arguments={"smtp_password": "s3cret", "limit": 5}, counts={"sent": 5},
                     actor="bob")
        audit.record(session, "init", arguments={"to": "0001"})
    result = runner.invoke(main, ["audit"], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].split() == ["id", "at", "actor", "command", "campaign", "outcome",
                                "arguments", "counts"]
    assert re.match(r"^ *1  \d{4}-\d\d-\d\d \d\d:\d\d UTC  alice  campaign load  acme-2026-11 ",
                    lines[1])
    assert "s3cret" not in result.output and '"smtp_password":"***"' in lines[2]
    assert '{"sent":5}' in lines[2]
    only = runner.invoke(main, ["audit", "--campaign", "acme-2026-11", "--json"],
                         catch_exceptions=False)
    assert len(only.output.strip().splitlines()) == 1
    data = json.loads(only.output)
    assert [r["command"] for r in data["records"]] == ["campaign load", "send"]
    assert data["records"][1]["actor"] == "bob"
    assert data["records"][1]["arguments"]["smtp_password"] == "***"
    newest = runner.invoke(main, ["audit", "--limit", "1", "--json"], catch_exceptions=False)
    assert [r["command"] for r in json.loads(newest.output)["records"]] == ["init"]
    none = runner.invoke(main, ["audit", "--campaign", "nope"], catch_exceptions=False)
    assert none.output.strip() == "No audit records for nope."


def test_default_actor_is_the_os_user(env, campaign_file, monkeypatch):
    monkeypatch.delenv("NOTIFY_ACTOR", raising=False)
    monkeypatch.setattr("getpass.getuser", lambda: "os-user")
    CliRunner().invoke(main, ["campaign", "load", str(campaign_file)], catch_exceptions=False)
    result = CliRunner().invoke(main, ["audit", "--json"], catch_exceptions=False)
    assert json.loads(result.output)["records"][0]["actor"] == "os-user"
