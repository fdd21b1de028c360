"""`notify status` shows first notices and each reminder round apart, from counts alone."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from alembic import command
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import event, text

from notify import db
from notify.cli import main
from notify.config import load_settings
from notify.models import utcnow
from notify.resets.reminders import plan_reminders
from notify.send.options import SendOptions
from notify.send.runner import send_campaign
from notify.status import campaign_status, format_status
from tests.factories import add_contacts, campaign_toml, make_campaign
from tests.test_tallies import assert_tallies_exact

ROUNDS = "0008_tallies_by_round"  # the migration that counts messages by round


def _backdate_sends(engine, days: int) -> None:
    """Make every message look sent ``days`` ago (the clock, moved for the reminder rule)."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE messages SET sent_at = :t WHERE sent_at IS NOT NULL"),
            {"t": (utcnow() - timedelta(days=days)).replace(tzinfo=None)},
        )


def _send(engine, name: str) -> None:
    send_campaign(
        engine, load_settings(), name, SendOptions(email_rate=0, sms_rate=0, progress=False)
    )


def test_status_counts_first_notices_and_each_reminder_round_apart(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 5, exposures="passwords")
    add_contacts(engine, campaign, 2, start=10, exposures="card")
    add_contacts(engine, campaign, 1, start=20, emails=False, exposures="passwords")
    _send(engine, campaign.name)
    for expected in (5, 5):  # two reminder rounds, each to the 5 who have not reset
        _backdate_sends(engine, 4)
        with db.session_scope(engine) as session:
            planned = plan_reminders(
                session, session.merge(campaign), timedelta(hours=72), 2, ("email",)
            )
        assert planned == expected
        _send(engine, campaign.name)
    assert_tallies_exact(engine, campaign.id)

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2].lower()))
    now = datetime(2026, 11, 27, 10, 2, tzinfo=UTC)
    with db.session_scope(engine) as session:
        report = campaign_status(session, campaign.name, now=now)
    assert not [s for s in statements if "from messages" in s]  # counts, never a scan
    rounds = [
        (r["notice"], r["sequence"], r["label"], r["totals"], r["reached"])
        for r in report["rounds"]
    ]
    assert rounds == [
        ("notice", 0, "first notice", {"email": 8}, {"email": 7}),
        ("reminder", 1, "reminder 1", {"email": 5}, {"email": 5}),
        ("reminder", 2, "reminder 2", {"email": 5}, {"email": 5}),
    ]
    assert report["rounds"][0]["messages"]["email"]["skipped"] == 1
    assert report["totals"] == {"email": 18} and report["messages"]["email"]["sent"] == 17
    assert report["as_of"] == "2026-11-27T10:02:00Z"

    lines = format_status(report)
    assert lines[0] == f"Campaign {campaign.name}: 8 contacts (as of 2026-11-27 10:02 UTC)"
    assert lines[1].split() == ["round", "channel", "sent", "skipped", "total"]
    assert re.fullmatch(r"  first notice +email +7 +1 +8", lines[2])
    assert re.fullmatch(r"  reminder 1 +email +5 +0 +5", lines[3])
    assert re.fullmatch(r"  reminder 2 +email +5 +0 +5", lines[4])
    berlin = format_status(
        report, zone=__import__("notify.localtime").localtime.named_zone("Europe/Berlin")
    )
    assert berlin[0].endswith("(as of 2026-11-27 11:02 CET)")

    cli = CliRunner().invoke(main, ["status", campaign.name, "--json"], catch_exceptions=False)
    data = json.loads(cli.output)
    assert [(r["notice"], r["sequence"]) for r in data["rounds"]] == [
        ("notice", 0),
        ("reminder", 1),
        ("reminder", 2),
    ]
    text_out = CliRunner().invoke(main, ["status", campaign.name]).output
    assert "reminder 2" in text_out and "first notice" in text_out


def test_migration_recounts_by_round_and_back(env, tmp_path):
    engine = db.make_engine(env["NOTIFY_DATABASE_URL"])
    config = db._alembic_config(engine)
    before = ScriptDirectory.from_config(config).get_revision(ROUNDS).down_revision
    command.upgrade(config, before)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO campaigns (id, name, settings, created_at, updated_at) "
                "VALUES (1, 'old', '{}', '2026-11-01', '2026-11-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO contacts (id, campaign_id, key, exposures, created_at, updated_at) "
                "VALUES (1, 1, 'k1', 'passwords', '2026-11-01', '2026-11-01')"
            )
        )
        for notice, sequence, status in (
            ("notice", 0, "sent"),
            ("reminder", 1, "sent"),
            ("reminder", 2, "pending"),
        ):
            conn.execute(
                text(
                    "INSERT INTO messages (campaign_id, contact_id, channel, notice, sequence, "
                    "status, attempts, is_fallback, created_at) VALUES "
                    "(1, 1, 'email', :n, :s, :st, 0, false, '2026-11-01')"
                ),
                {"n": notice, "s": sequence, "st": status},
            )
    db.upgrade(engine)
    counts = assert_tallies_exact(engine, 1)
    assert counts["message:email:sent:notice:0"] == 1
    assert counts["message:email:sent:reminder:1"] == 1
    assert counts["message:email:pending:reminder:2"] == 1
    with engine.begin() as conn:  # the new triggers carry on within the round
        conn.execute(text("UPDATE messages SET status = 'sent' WHERE sequence = 2"))
    assert assert_tallies_exact(engine, 1)["message:email:sent:reminder:2"] == 1
    command.downgrade(config, before)
    with engine.connect() as conn:
        names = dict(
            conn.execute(
                text(
                    "SELECT name, sum(n) FROM tallies "
                    "WHERE campaign_id = 1 AND name LIKE 'message:%' "
                    "GROUP BY name"
                )
            ).all()
        )
    assert names == {"message:email:sent": 3}
    engine.dispose()
