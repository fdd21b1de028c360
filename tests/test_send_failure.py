"""An unexpected error inside the send engine (a bug, a lost database) stops the run and is
raised, instead of hanging; what was recorded stays recorded, and a re-run finishes the job."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from notify import db
from notify.config import load_settings
from notify.models import Message
from notify.send import runner
from notify.send.options import SendOptions
from notify.send.runner import send_campaign
from notify.send.store import claim
from tests.factories import add_contacts, campaign_toml, make_campaign, message_statuses

CONTACTS = 40


def _send_in_thread(engine, name: str, options) -> BaseException | None:
    """Run a send with a deadline: a hang fails the test instead of blocking it."""
    outcome: list[BaseException | None] = [None]

    def run() -> None:
        try:
            send_campaign(engine, load_settings(), name, options)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome[0] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the send hung after an internal error"
    return outcome[0]


@pytest.mark.parametrize("broken", ["begin_attempts", "record_sent"])
def test_internal_error_stops_the_run_and_a_rerun_finishes(env, tmp_path, monkeypatch, broken):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, CONTACTS, exposures="passwords")
    real = getattr(runner, broken)
    calls = {"n": 0}

    def flaky(session, rows):
        calls["n"] += 1
        if calls["n"] >= 3:  # and from then on: the recorder retries a write alone once
            raise RuntimeError("database went away")
        return real(session, rows)

    monkeypatch.setattr(runner, broken, flaky)
    options = SendOptions(email_rate=0, concurrency=4, progress=False)
    error = _send_in_thread(engine, campaign.name, options)
    assert isinstance(error, RuntimeError) and "database went away" in str(error)
    first = message_statuses(engine)
    assert 0 < first.get("sent", 0) < CONTACTS
    with db.session_scope(engine) as session:  # the stop released every lease
        assert session.scalar(select(func.count()).where(Message.lease_owner.is_not(None))) == 0

    monkeypatch.setattr(runner, broken, real)
    assert _send_in_thread(engine, campaign.name, options) is None
    assert message_statuses(engine) == {"sent": CONTACTS}


def test_database_failure_mid_send_is_one_line(env, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from sqlalchemy.exc import OperationalError

    from notify.cli import main

    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 5)

    def gone(session, rows):
        raise OperationalError("UPDATE messages ...", {}, Exception("disk I/O error"))

    monkeypatch.setattr(runner, "begin_attempts", gone)
    result = CliRunner().invoke(main, ["send", campaign.name, "--yes"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: the database failed: disk I/O error.")
    assert "Traceback" not in result.output
    assert message_statuses(engine) == {"pending": 5}  # nothing half-done: all still to send


def test_claim_error_on_one_channel_stops_both_without_hanging(env, tmp_path, monkeypatch):
    """A slow SMS pipeline (its prepared queue full) must not keep a failed run alive."""
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))  # email and SMS
    add_contacts(engine, campaign, 30, exposures="card")
    real = claim
    calls = {"email": 0}

    def flaky(engine, campaign_id, channel, *args, **kwargs):
        if channel == "email":
            calls["email"] += 1
            if calls["email"] >= 2:
                raise RuntimeError("claim refused")
        return real(engine, campaign_id, channel, *args, **kwargs)

    monkeypatch.setattr(runner, "claim", flaky)
    options = SendOptions(email_rate=0, sms_rate=5, concurrency=4, batch_size=5, progress=False)
    error = _send_in_thread(engine, campaign.name, options)
    assert isinstance(error, RuntimeError) and "claim refused" in str(error)
    monkeypatch.setattr(runner, "claim", real)
    assert _send_in_thread(engine, campaign.name, options) is None
    assert message_statuses(engine) == {"sent": 60}
    # Begun messages the failed run did not hand over were in doubt, not lost or doubled.
    outbox = Path(env["NOTIFY_OUTBOX"])
    assert len(list((outbox / "email").glob("*.eml"))) == 30
    sms = [json.loads(line)["to"] for line in (outbox / "sms.jsonl").read_text().splitlines()]
    assert len(sms) == len(set(sms)) == 30
