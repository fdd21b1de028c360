"""A failed or interrupted run writes its audit record with the outcome (issue 13)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from notify import audit, db
from notify.cli import main
from notify.errors import NotifyError
from notify.models import AuditRecord
from tests.factories import add_contacts, campaign_toml, login_refused, make_campaign, point_at
from tests.smtp_sink import SmtpSink


def runs(engine, command: str = "send") -> list[AuditRecord]:
    with db.session_scope(engine) as session:
        return list(
            session.scalars(
                select(AuditRecord).where(AuditRecord.command == command).order_by(AuditRecord.id)
            )
        )


def test_a_send_stopped_by_an_error_is_audited_as_failed(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 5)
    with login_refused(monkeypatch):
        result = CliRunner().invoke(main, ["--actor", "ops", "send", campaign.name, "--yes"])
        assert result.exit_code == 1
    [record] = runs(engine)
    assert (record.actor, record.campaign, record.outcome) == ("ops", campaign.name, "failed")
    assert "refused" in record.counts["error"] and record.counts["exit_status"] == 1
    assert "guess" not in str(record.counts) and "guess" not in str(record.arguments)


def test_a_send_ended_by_a_long_outage_is_audited_with_exit_status_75(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 3)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        sink.go_down("refuse")
        result = CliRunner().invoke(main, ["send", campaign.name, "--yes", "--max-outage", "2s"])
        assert result.exit_code == 75, result.output
    [record] = runs(engine)
    assert record.outcome == "failed" and record.counts["exit_status"] == 75


def test_recorded_run_outcomes(engine):
    """Ctrl-C anywhere in a run (also before the engine's own handler) is `interrupted`;
    an unforeseen error is `failed` by its type only; a normal end keeps its counts."""

    def open_session():
        return db.session_scope(engine)

    with (
        pytest.raises(KeyboardInterrupt),
        audit.recorded_run(open_session, "send", campaign="c") as run,
    ):
        run.counts = {"planned": 4}
        raise KeyboardInterrupt
    with pytest.raises(ZeroDivisionError), audit.recorded_run(open_session, "remind"):
        1 / 0  # noqa: B018 - the error under test
    with pytest.raises(NotifyError), audit.recorded_run(open_session, "remind"):
        raise NotifyError("campaign 'x' not found")
    with audit.recorded_run(open_session, "send", campaign="c") as run:
        run.counts, run.outcome = {"sent": 2}, "ok"
    with audit.recorded_run(open_session, "send", enabled=False):  # a dry run: no record
        pass
    assert [(r.command, r.outcome, r.counts) for r in runs(engine) + runs(engine, "remind")] == [
        ("send", "interrupted", {"planned": 4, "exit_status": 130}),
        ("send", "ok", {"sent": 2}),
        ("remind", "failed", {"error": "ZeroDivisionError", "exit_status": 1}),
        ("remind", "failed", {"error": "campaign 'x' not found", "exit_status": 1}),
    ]


def test_when_the_database_is_what_failed_the_original_error_stands(tmp_path):
    broken = db.make_engine(f"sqlite:///{tmp_path / 'missing' / 'no.db'}")

    def open_session():
        return db.session_scope(broken)

    with (
        pytest.raises(NotifyError, match="the real problem"),
        audit.recorded_run(open_session, "send"),
    ):
        raise NotifyError("the real problem")


def test_a_remind_that_fails_is_audited_with_what_it_planned(env, campaign_file, monkeypatch):
    from tests.test_remind import seed_due

    seed_due(env, campaign_file)
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with login_refused(monkeypatch):
        result = CliRunner().invoke(
            main, ["remind", "acme-2026-11", "--after", "72h", "--channel", "email", "--yes"]
        )
        assert result.exit_code == 1, result.output
    [record] = runs(engine, "remind")
    assert record.outcome == "failed" and record.counts["reminders_planned"] == 2
    assert "refused" in record.counts["error"]


def test_a_send_stopped_with_ctrl_c_is_audited_as_interrupted(env, tmp_path):
    """A real `notify send` process, SIGINT half-way: its record says interrupted, with
    what it sent, and the exit status is 130."""
    import os
    import signal

    from tests.processes import notify_process, wait_for_sink
    from tests.processes import smtp_env as process_env

    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 60)
    with SmtpSink() as sink:
        child = notify_process(
            process_env({**os.environ, **env}, sink),
            "send",
            campaign.name,
            "--yes",
            "--email-rate",
            "20",
            "--concurrency",
            "2",
        )
        wait_for_sink(sink, 5, [child])
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=60)
        assert child.returncode == 130
        sent = sink.count
    [record] = runs(engine)
    assert record.outcome == "interrupted"
    assert 0 < sent < 60 and record.counts["email"]["sent"] == sent, record.counts
