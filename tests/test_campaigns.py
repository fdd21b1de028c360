"""Campaign files: load, update, list, and one-line errors naming the bad key."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import campaigns, db
from notify.cli import main
from notify.errors import ConfigError
from notify.models import AuditRecord, Campaign


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_load_then_reload_updates(env, campaign_file):
    result = run("campaign", "load", str(campaign_file))
    assert result.exit_code == 0, result.output
    assert "Created campaign 'acme-2026-11'" in result.output
    campaign_file.write_text(campaign_file.read_text().replace('"Acme Corp"', '"Acme Inc"'))
    result = run("campaign", "load", str(campaign_file))
    assert "Updated campaign 'acme-2026-11' (Acme Inc)" in result.output
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1
        stored = campaigns.get_campaign(session, "acme-2026-11")
        assert campaigns.config_of(stored).organization == "Acme Inc"
        assert campaigns.config_of(stored).throttle.sms_per_second == 1.0
        commands = [a.command for a in session.scalars(select(AuditRecord))]
        assert commands.count("campaign load") == 2
    listing = run("campaign", "list")
    header, row = listing.output.splitlines()
    assert header.split() == ["name", "organization", "channels", "updated_at"]
    assert row.startswith("acme-2026-11  Acme Inc      email, sms  ")


@pytest.mark.parametrize(
    "edit, expected",
    [
        (('channels = ["email", "sms"]', 'channels = ["fax"]'), "channels"),
        (('fallback = "sms"', 'fallbak = "sms"'), "fallbak: unknown key"),
        (("email_per_second = 20", "email_per_second = -3"), "throttle.email_per_second"),
        (("concurrency = 10", "concurrency = 2.5"), "throttle.concurrency"),
        (('incident_date = "2026-11-20"', 'incident_date = "20/11/2026"'), "incident_date"),
        (('sms_from = "+14155550199"', 'sms_from = "call me"'), "sms_from"),
        (
            (
                'reset_url = "https://acme.example/reset?token={token}"',
                'reset_url = "https://acme.example/reset"',
            ),
            "reset_url",
        ),
        (('sender_email = "security@acme.example"', 'sender_email = "nope"'), "sender_email"),
        (("[throttle]", "[throttle]\nburst = 3"), "throttle.burst: unknown key"),
    ],
)
def test_bad_values_are_one_line_errors(env, campaign_file, edit, expected):
    campaign_file.write_text(campaign_file.read_text().replace(*edit))
    result = CliRunner().invoke(main, ["campaign", "load", str(campaign_file)])
    assert result.exit_code == 1
    assert expected in result.output
    assert str(campaign_file) in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 0


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        campaigns.parse_campaign_file(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        campaigns.parse_campaign_file(bad)


def test_init_is_idempotent(env):
    first = run("init")
    second = run("init")
    assert first.exit_code == 0 and second.exit_code == 0
    url = db.describe(env["NOTIFY_DATABASE_URL"])
    assert first.output == f"Created database {url} (new database, schema {db.HEAD}).\n"
    assert second.output == f"Database {url} is already at schema {db.HEAD}; nothing to do.\n"
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    assert db.current_revision(engine) == db.HEAD


def test_init_upgrades_an_older_schema(env):
    from alembic import command

    engine = db.make_engine(env["NOTIFY_DATABASE_URL"])
    command.upgrade(db._alembic_config(engine), "0001")
    assert db.current_revision(engine) == "0001"
    result = run("init")
    assert result.output == (
        f"Upgraded database {db.describe(env['NOTIFY_DATABASE_URL'])} "
        f"from schema 0001 to {db.HEAD}.\n"
    )
    from sqlalchemy import inspect

    indexes = {ix["name"] for ix in inspect(engine).get_indexes("messages")}
    assert "ix_messages_queue" in indexes  # 0001 made it
    assert "ix_messages_reach" not in indexes  # 0002 made it, 0005 dropped it
    assert {t for t in inspect(engine).get_table_names()} >= {"tallies", "contact_reach"}


def test_head_constant_is_the_newest_migration():
    """db.HEAD lets a command skip alembic on a current database; it must follow the scripts."""
    assert db.HEAD == db._head()


def test_models_match_the_migrated_schema(engine):
    """The models and the migration scripts describe the same tables, columns and indexes."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from notify.models import Base

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_a_file_that_is_not_a_database_is_one_line(tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("these are my notes, not a database\n")
    monkeypatch.setenv("NOTIFY_DATABASE_URL", f"sqlite:///{notes}")
    result = run("status", "acme-2026-11")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: cannot open database sqlite:///{notes}: file is not a database"
    )
    assert notes.read_text() == "these are my notes, not a database\n"  # left untouched
