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
        entry = audit.record(
            session,
            "campaign load",
            campaign="c",
            arguments={"file": "x.toml", "password": "hunter2"},
        )
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
    for statement in (
        update(AuditRecord).values(actor="x"),
        delete(AuditRecord),
        update(Event).values(kind="x"),
        delete(Event),
    ):
        with pytest.raises(AppendOnlyError), db.session_scope(engine) as session:
            session.execute(statement)
    with db.session_scope(engine) as session:
        kept = session.get(AuditRecord, audit_id)
        assert kept.outcome == "ok" and kept.arguments["password"] == "***"
        assert session.get(Event, event_id).kind == "sent"
    assert count(engine, AuditRecord) == 1 and count(engine, Event) == 1


def _seed_evidence(engine) -> tuple[int, int, int]:
    """One audit record, one applied event and one early (unapplied, unlinked) event."""
    with db.session_scope(engine) as session:
        entry = audit.record(session, "send", campaign="c", counts={"sent": 1})
        applied = events.record(session, source="send", kind="sent", campaign_id=7)
        early = events.record(
            session,
            source="webhook",
            kind="delivered",
            applied=False,
            provider_message_id="SMearly",
            detail={"sid": "SMearly"},
        )
        session.flush()
        return entry.id, applied.id, early.id


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET outcome = 'ok!'",
        "UPDATE audit_log SET actor = 'mallory' WHERE id = :audit",
        "DELETE FROM audit_log",
        "UPDATE events SET kind = 'failed' WHERE id = :applied",
        "UPDATE events SET at = '1970-01-01 00:00:00' WHERE id = :applied",
        "DELETE FROM events WHERE id = :applied",
        "DELETE FROM events",
        # The early-link exception allows linking and marking applied, nothing more:
        "UPDATE events SET applied = TRUE, message_id = 1, kind = 'failed' WHERE id = :early",
        "UPDATE events SET applied = FALSE WHERE id = :applied",
        "UPDATE events SET message_id = 99 WHERE id = :applied",
    ],
)
def test_database_refuses_rewriting_the_evidence(engine, statement):
    """Triggers guard the tables whatever client runs the SQL (here: plain SQL, no ORM)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    audit_id, applied_id, early_id = _seed_evidence(engine)
    ids = {"audit": audit_id, "applied": applied_id, "early": early_id}
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement), {k: v for k, v in ids.items() if f":{k}" in statement})
    with db.session_scope(engine) as session:
        assert session.get(AuditRecord, audit_id).actor != "mallory"
        kept = session.get(Event, applied_id)
        assert (kept.kind, kept.applied, kept.message_id) == ("sent", True, None)
    assert count(engine, AuditRecord) == 1 and count(engine, Event) == 2


@pytest.mark.postgres
def test_postgres_refuses_truncating_the_evidence(pg_url):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    _seed_evidence(engine)
    for table in ("events", "audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table}"))
    assert count(engine, AuditRecord) == 1 and count(engine, Event) == 2
    engine.dispose()


def test_database_allows_linking_an_early_callback(engine):
    """The one sanctioned change: an early event marked applied and linked to its message."""
    from sqlalchemy import text

    _, _, early_id = _seed_evidence(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE events SET applied = TRUE, message_id = 5, contact_id = 6, "
                "campaign_id = 7 WHERE id = :id"
            ),
            {"id": early_id},
        )
    with db.session_scope(engine) as session:
        linked = session.get(Event, early_id)
        assert (linked.applied, linked.message_id, linked.kind) == (True, 5, "delivered")


def test_removing_a_message_or_contact_keeps_its_events(engine, campaign_file):
    """Events outlive the rows they describe: no cascade into the append-only log."""
    from sqlalchemy import text

    from notify import campaigns
    from notify.models import Contact, Message

    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, campaign_file)
        contact = Contact(campaign_id=campaign.id, key="k", email="a@example.com", exposures="card")
        session.add(contact)
        session.flush()
        message = Message(
            campaign_id=campaign.id,
            contact_id=contact.id,
            channel="email",
            status="sent",
            address=contact.email,
        )
        session.add(message)
        session.flush()
        events.record(session, source="send", kind="sent", message=message)
        contact_id = contact.id
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM contacts WHERE id = :id"), {"id": contact_id})
    with db.session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
        kept = session.scalar(select(Event).where(Event.contact_id == contact_id))
        assert kept is not None and kept.kind == "sent"


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
    runner.invoke(
        main, ["--actor", "alice", "campaign", "load", str(campaign_file)], catch_exceptions=False
    )
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        audit.record(
            session,
            "send",
            campaign="acme-2026-11",
            arguments={"smtp_password": "s3cret", "limit": 5},
            counts={"sent": 5},
            actor="bob",
        )
        audit.record(session, "init", arguments={"to": "0001"})
    result = runner.invoke(main, ["audit"], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].split() == [
        "id",
        "at",
        "actor",
        "command",
        "campaign",
        "outcome",
        "arguments",
        "counts",
    ]
    assert re.match(
        r"^ *1  \d{4}-\d\d-\d\d \d\d:\d\d UTC  alice  campaign load  acme-2026-11 ", lines[1]
    )
    assert "s3cret" not in result.output and '"smtp_password":"***"' in lines[2]
    assert '{"sent":5}' in lines[2]
    only = runner.invoke(
        main, ["audit", "--campaign", "acme-2026-11", "--json"], catch_exceptions=False
    )
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
