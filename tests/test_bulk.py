"""bulk.Statement: the engine's per-message writes on the driver's cursor store exactly what
SQLAlchemy would, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import bindparam, insert, select, text

from notify import bulk
from notify.models import Event, Message, UTCDateTime
from tests.factories import add_contacts, campaign_toml, make_campaign


def _raw_events(conn, ids: list[int]) -> list[tuple]:
    """The stored values as the database holds them (no result processing)."""
    rows = conn.execute(
        text(
            "SELECT campaign_id, message_id, contact_id, provider_message_id, "
            "CAST(at AS TEXT), source, kind, CAST(applied AS TEXT), detail "
            "FROM events WHERE id IN :ids ORDER BY id"
        ).bindparams(bindparam("ids", expanding=True)),
        {"ids": ids},
    )
    return [tuple(r) for r in rows]


def test_insert_stores_what_sqlalchemy_stores(engine, tmp_path):
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    at = datetime(2026, 11, 27, 23, 59, 16, 123456, tzinfo=timezone(timedelta(hours=2)))
    row = {
        "campaign_id": campaign.id,
        "message_id": None,
        "contact_id": None,
        "provider_message_id": "SM123",
        "at": at,
        "source": "send",
        "kind": "sent",
        "applied": False,
        "detail": {"b": 1, "a": "Zürich"},
        "replay_key": None,
    }
    statement = bulk.insert_into(Event.__table__)
    with engine.begin() as conn:
        conn.execute(insert(Event), [row])
        assert statement.execute(conn, [row, {**row, "detail": None}]) == 2
        ids = list(conn.scalars(select(Event.id).order_by(Event.id)))
        by_sqlalchemy, by_bulk, no_detail = _raw_events(conn, ids[-3:])
        assert by_bulk == by_sqlalchemy  # times, booleans and JSON, byte for byte
        assert no_detail[-1] is None
        loaded = conn.execute(select(Event.at, Event.detail).where(Event.id == ids[-2])).one()
    assert loaded.at == at.astimezone(UTC)  # the time round-trips as aware UTC
    assert loaded.detail == {"a": "Zürich", "b": 1}


def test_update_many_counts_rows_and_repeats_a_parameter(engine, tmp_path):
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, 3)
    with engine.begin() as conn:
        contacts = list(conn.scalars(text("SELECT id FROM contacts ORDER BY id")))
        conn.execute(
            insert(Message),
            [
                {
                    "campaign_id": campaign.id,
                    "contact_id": c,
                    "channel": "email",
                    "notice": "notice",
                    "sequence": 0,
                    "status": "pending",
                    "attempts": 0,
                }
                for c in contacts
            ],
        )
        ids = list(conn.scalars(select(Message.id).order_by(Message.id)))
        now = datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)
        statement = bulk.Statement(
            "UPDATE messages SET last_event_at = :now, first_attempt_at = :now, "
            "attempts = attempts + :n WHERE id = :id",
            now=UTCDateTime(),
        )
        changed = statement.execute(
            conn,
            [
                {"id": ids[0], "now": now, "n": 1},
                {"id": ids[1], "now": now, "n": 2},
                {"id": -1, "now": now, "n": 5},
            ],
        )
        assert changed == 2  # the missing id changes nothing
        rows = conn.execute(
            select(Message.attempts, Message.last_event_at, Message.first_attempt_at).order_by(
                Message.id
            )
        ).all()
    assert [r.attempts for r in rows] == [1, 2, 0]
    assert rows[0].last_event_at == rows[0].first_attempt_at == now
    assert rows[2].last_event_at is None


def test_a_driver_error_is_raised_as_sqlalchemys(engine, tmp_path):
    """Callers (the recorder, the command line) see the usual SQLAlchemy exception classes."""
    import pytest
    from sqlalchemy.exc import DBAPIError, OperationalError

    campaign = make_campaign(engine, campaign_toml(tmp_path))
    statement = bulk.insert_into(Event.__table__)
    row = {
        "campaign_id": campaign.id,
        "message_id": None,
        "contact_id": None,
        "provider_message_id": None,
        "at": datetime.now(UTC),
        "source": "send",
        "kind": "sent",
        "applied": True,
        "detail": None,
        "replay_key": None,
    }
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")  # writes fail: readonly database
        else:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        with pytest.raises(DBAPIError) as raised:
            statement.execute(conn, [row, row])
        conn.rollback()
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = OFF")
    assert "read" in str(raised.value.orig).lower()  # "readonly" / "read-only transaction"
    if engine.dialect.name == "sqlite":
        assert isinstance(raised.value, OperationalError)
