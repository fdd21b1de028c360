"""The counts `notify status` reads (tallies, kept by triggers) always equal a full recount.

Each test changes messages, contacts and resets the way notify does (the send engine, tracking,
raw SQL) and compares the triggers' counts with counts taken by scanning the rows. If a trigger
is missing or wrong for some change, its tally drifts and the comparison fails.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text

from notify import db, events
from notify.config import load_settings
from notify.models import Contact, Message, PasswordReset, utcnow
from notify.send.options import SendOptions
from notify.send.runner import send_campaign
from notify.status import campaign_status, read_tallies
from tests.factories import add_contacts, campaign_toml, make_campaign

BUCKET = (
    "CASE WHEN status IN ('sent', 'delivered') THEN 2 "
    "WHEN status IN ('pending', 'sending') THEN 1 ELSE 0 END"
)


def recount(engine, campaign_id: int) -> dict[str, int]:
    """The tallies' names and values, counted from the rows themselves."""
    counts: dict[str, int] = {}
    with engine.connect() as conn:

        def add(sql: str) -> None:
            for name, n in conn.execute(text(sql), {"c": campaign_id}):
                counts[name] = counts.get(name, 0) + n

        add("SELECT 'contacts', count(*) FROM contacts WHERE campaign_id = :c")
        add(
            "SELECT 'message:' || channel || ':' || status || ':' || notice || ':' || sequence, "
            "count(*) FROM messages WHERE campaign_id = :c "
            "GROUP BY channel, status, notice, sequence"
        )
        add(
            "SELECT 'reset:' || status, count(*) FROM password_resets WHERE campaign_id = :c "
            "GROUP BY status"
        )
        add(
            f"SELECT CASE WHEN max({BUCKET}) = 2 THEN 'reach:reached' "
            f"WHEN max({BUCKET}) = 1 THEN 'reach:pending' ELSE 'reach:not_reached' END, 1 "
            f"FROM messages WHERE campaign_id = :c GROUP BY contact_id"
        )
    return {name: n for name, n in counts.items() if n}


def tallies(engine, campaign_id: int) -> dict[str, int]:
    with db.session_scope(engine) as session:
        return {k: v for k, v in read_tallies(session, campaign_id).items() if v}


def assert_tallies_exact(engine, campaign_id: int) -> dict[str, int]:
    expected = recount(engine, campaign_id)
    assert tallies(engine, campaign_id) == expected
    return expected


def test_tallies_follow_a_send_tracking_and_deletes(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, 10, exposures="passwords;card")
    add_contacts(engine, campaign, 4, start=100, phones=False, exposures="card")
    counts = assert_tallies_exact(engine, campaign.id)
    assert counts == {"contacts": 14}

    options = SendOptions(email_rate=0, sms_rate=0, progress=False)
    send_campaign(engine, load_settings(), campaign.name, options)
    counts = assert_tallies_exact(engine, campaign.id)
    assert counts["message:email:sent:notice:0"] == 14
    assert counts["message:sms:sent:notice:0"] == 10
    assert counts["message:sms:skipped:notice:0"] == 4 and counts["reach:reached"] == 14
    assert counts["reset:pending"] == 10

    # Tracking moves messages one by one through the ORM.
    with db.session_scope(engine) as session:
        sms = session.scalars(
            select(Message).where(Message.channel == "sms").order_by(Message.id)
        ).all()
        for message in sms[:3]:
            events.advance(session, message, "delivered", source="test")
        events.advance(session, sms[3], "undelivered", source="test")
        events.advance(session, sms[4], "sent", source="test")  # not forward: no change
    assert_tallies_exact(engine, campaign.id)

    # A bounce turns a contact reached by email only into not reached.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE messages SET status = 'bounced' WHERE channel = 'email' "
                "AND contact_id IN (SELECT id FROM contacts WHERE phone IS NULL)"
            )
        )
    counts = assert_tallies_exact(engine, campaign.id)
    assert counts["reach:not_reached"] == 4

    # Resets complete; a multi-row statement; deletes of messages and of a contact.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE password_resets SET status = 'completed' WHERE id IN "
                "(SELECT id FROM password_resets ORDER BY id LIMIT 3)"
            )
        )
        conn.execute(
            text("UPDATE messages SET status = 'pending' WHERE channel = 'sms' AND status = 'sent'")
        )
    counts = assert_tallies_exact(engine, campaign.id)
    assert counts["reset:completed"] == 3
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM messages WHERE channel = 'sms' AND status = 'pending'"))
        conn.execute(text("DELETE FROM contacts WHERE key = 'C-00000'"))
    counts = assert_tallies_exact(engine, campaign.id)
    assert counts["contacts"] == 13
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM password_resets"))
        conn.execute(text("DELETE FROM messages"))
    assert assert_tallies_exact(engine, campaign.id) == {"contacts": 13}


def test_status_reads_tallies_not_rows(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 6, exposures="passwords")
    send_campaign(engine, load_settings(), campaign.name, SendOptions(email_rate=0, progress=False))
    with engine.begin() as conn:  # two links lapsed, one reset done
        conn.execute(
            text(
                "UPDATE password_resets SET link_expires_at = :t WHERE id IN "
                "(SELECT id FROM password_resets ORDER BY id LIMIT 2)"
            ),
            {"t": utcnow() - timedelta(days=1)},
        )
        conn.execute(
            text(
                "UPDATE password_resets SET status = 'completed' WHERE id = "
                "(SELECT max(id) FROM password_resets)"
            )
        )
    statements: list[str] = []
    from sqlalchemy import event

    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2].lower()))
    with db.session_scope(engine) as session:
        report = campaign_status(session, campaign.name)
    assert report["contacts"] == 6 and report["messages"]["email"]["sent"] == 6
    assert report["reach"]["reached"] == 6
    assert report["resets"] == {
        "total": 6,
        "pending": 3,
        "completed": 1,
        "expired": 2,
        "completed_pct": 16.7,
    }
    assert not [s for s in statements if "from messages" in s or "from contacts" in s]


def test_migration_counts_what_is_already_stored(env, tmp_path):
    engine = db.make_engine(env["NOTIFY_DATABASE_URL"])
    command.upgrade(db._alembic_config(engine), "0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO campaigns (id, name, settings, created_at, updated_at) "
                "VALUES (1, 'old', '{}', '2026-11-01', '2026-11-01')"
            )
        )
        for i, (email_status, sms_status) in enumerate(
            [("sent", "failed"), ("bounced", "failed"), ("pending", None)], 1
        ):
            conn.execute(
                text(
                    "INSERT INTO contacts "
                    "(id, campaign_id, key, exposures, created_at, updated_at) "
                    "VALUES (:i, 1, :k, 'card', '2026-11-01', '2026-11-01')"
                ),
                {"i": i, "k": f"k{i}"},
            )
            for channel, status in (("email", email_status), ("sms", sms_status)):
                if status:
                    conn.execute(
                        text(
                            "INSERT INTO messages (campaign_id, contact_id, channel, notice, "
                            "sequence, status, attempts, is_fallback, created_at) VALUES "
                            "(1, :i, :ch, 'notice', 0, :s, 0, false, '2026-11-01')"
                        ),
                        {"i": i, "ch": channel, "s": status},
                    )
    db.upgrade(engine)
    counts = assert_tallies_exact(engine, 1)
    assert counts["reach:reached"] == 1 and counts["reach:not_reached"] == 1
    assert counts["reach:pending"] == 1 and counts["contacts"] == 3
    with engine.begin() as conn:  # and the triggers carry on from there
        conn.execute(text("UPDATE messages SET status = 'sent' WHERE status = 'pending'"))
    assert assert_tallies_exact(engine, 1)["reach:reached"] == 2


def test_concurrent_writers_never_wait_on_a_tally_row(pg_url, tmp_path):
    """Two open transactions add to the same counts: neither blocks (a shard each)."""
    engine = db.connect(pg_url)
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    first = create_engine(pg_url).connect()
    second = create_engine(pg_url).connect()
    try:
        first.begin()
        first.execute(
            text(
                "INSERT INTO contacts (campaign_id, key, exposures, created_at, "
                "updated_at) VALUES (:c, 'a', 'card', now(), now())"
            ),
            {"c": campaign.id},
        )
        failure: list[BaseException] = []

        def other() -> None:
            try:
                with second.begin():
                    second.execute(text("SET LOCAL lock_timeout = '2s'"))
                    second.execute(
                        text(
                            "INSERT INTO contacts (campaign_id, key, exposures, created_at, "
                            "updated_at) VALUES (:c, 'b', 'card', now(), now())"
                        ),
                        {"c": campaign.id},
                    )
            except BaseException as exc:  # noqa: BLE001 - reported below
                failure.append(exc)

        worker = threading.Thread(target=other)
        worker.start()
        worker.join(10)
        assert not failure, failure
        first.commit()
    finally:
        first.close()
        second.close()
    assert assert_tallies_exact(engine, campaign.id) == {"contacts": 2}
    with db.session_scope(engine) as session:
        shards = session.execute(
            text("SELECT count(*) FROM tallies WHERE name = 'contacts'")
        ).scalar_one()
        assert shards == 2
        assert session.scalar(select(Contact.id).where(Contact.key == "b")) is not None


@pytest.mark.parametrize("status", ["pending", "completed"])
def test_reset_tallies_by_status(env, tmp_path, status):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, 2, exposures="passwords")
    with db.session_scope(engine) as session:
        for contact in session.scalars(select(Contact)):
            session.add(
                PasswordReset(
                    campaign_id=campaign.id, contact_id=contact.id, status=status, links_sent=0
                )
            )
    assert assert_tallies_exact(engine, campaign.id)[f"reset:{status}"] == 2
