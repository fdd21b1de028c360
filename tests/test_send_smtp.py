"""The engine through a real aiosmtpd server: retries, permanent failures, fallback, rates."""

from __future__ import annotations

import json
from contextlib import contextmanager
from email import message_from_bytes
from pathlib import Path

from sqlalchemy import select

from notify import db
from notify.config import load_settings
from notify.models import Event, Message
from notify.send.options import SendOptions
from notify.send.runner import SLOT_AHEAD, Runner, send_campaign
from tests.factories import (
    add_contacts,
    campaign_toml,
    count,
    login_refused,
    make_campaign,
    point_at,
)
from tests.smtp_sink import SmtpSink, window_max
from tests.standalone import start_process

ROOT = Path(__file__).resolve().parent.parent


def test_transient_failures_are_retried_until_sent(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
    )
    add_contacts(engine, campaign, 20)
    with SmtpSink(fail_every=4, drop_every=7) as sink:
        point_at(monkeypatch, sink)
        summary = send_campaign(
            engine,
            load_settings(),
            campaign.name,
            SendOptions(email_rate=0, concurrency=3, retry_base=0.05, progress=False),
        )
        received = {r.rcpt_tos[0] for r in sink.received}
        assert sink.failed > 0 and sink.dropped > 0
    assert received == {f"user{i}@example.com" for i in range(20)}
    assert summary.count("sent") == 20 and summary.count("retry") > 0
    with db.session_scope(engine) as session:
        rows = session.scalars(select(Message)).all()
        assert {m.status for m in rows} == {"sent"}
        assert any(m.attempts > 1 for m in rows)
        assert count(session, Event, Event.kind == "retry") == summary.count("retry")


def test_permanent_failure_is_final_with_code_and_falls_back_to_sms(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"sms"')
    )
    add_contacts(engine, campaign, 3)
    with SmtpSink(reject={"user1@example.com"}) as sink:
        point_at(monkeypatch, sink)
        send_campaign(
            engine,
            load_settings(),
            campaign.name,
            SendOptions(email_rate=0, sms_rate=0, progress=False),
        )
        assert sink.count == 2
    with db.session_scope(engine) as session:
        failed = session.scalars(select(Message).where(Message.status == "failed")).one()
        assert failed.address == "user1@example.com"
        assert failed.error_code == "550" and failed.attempts == 1
        sms = session.scalars(select(Message).where(Message.channel == "sms")).all()
        assert [(m.contact_id, m.is_fallback, m.status) for m in sms] == [
            (failed.contact_id, True, "sent")
        ]


def test_message_id_is_deterministic_per_row(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 3)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        send_campaign(
            engine, load_settings(), campaign.name, SendOptions(email_rate=0, progress=False)
        )
        ids = {r.rcpt_tos[0]: message_from_bytes(r.data)["Message-ID"] for r in sink.received}
        parts = [message_from_bytes(r.data).get_content_type() for r in sink.received]
    assert parts == ["multipart/alternative"] * 3
    with db.session_scope(engine) as session:
        for m in session.scalars(select(Message)):
            assert m.provider_message_id == ids[m.address]
            assert f".{m.id}." in m.provider_message_id or f".{m.id}@" in m.provider_message_id


@contextmanager
def sink_process(tmp_path: Path):
    """The sink in a process of its own, so arrival times carry no GIL contention of ours."""
    record = tmp_path / "sink.jsonl"
    proc, port = start_process(
        "tests.smtp_sink", "--record", str(record), "--no-parse", port_file=tmp_path / "sink.port"
    )
    try:
        yield port, record
    finally:
        proc.terminate()
        proc.wait()


def test_rate_is_held_in_every_one_second_window(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 45)
    with sink_process(tmp_path) as (port, record):
        monkeypatch.setenv("NOTIFY_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("NOTIFY_SMTP_PORT", str(port))
        monkeypatch.setenv("NOTIFY_SMTP_TLS", "none")
        summary = send_campaign(
            engine,
            load_settings(),
            campaign.name,
            SendOptions(email_rate=10, concurrency=8, progress=False),
        )
        arrivals = [json.loads(line)["monotonic"] for line in record.read_text().splitlines()]
        connections = {json.loads(line)["connection"] for line in record.read_text().splitlines()}
    assert len(arrivals) == 45
    # bucket depth 1: no one-second window holds more than rate + 1, measured at the sink
    assert window_max(arrivals, 1.0) <= 11
    assert len(connections) <= 8  # connections are reused
    # 45 messages at 10/s take at least (45 - 1) / 10 seconds
    assert summary.elapsed >= 44 / 10 - 0.05


def test_slow_rates_start_no_more_messages_than_fit_the_slot_horizon():
    """At 0.5 email/s, 20 consumers would hold SMTP transactions open up to 40 s for their
    slots; the engine starts only as many as the rate serves within SLOT_AHEAD seconds."""
    from types import SimpleNamespace

    from notify.config import Settings

    job = SimpleNamespace(
        campaign=SimpleNamespace(name="x"),
        channels=("email",),
        rates={"email": 0.5, "sms": 50.0, "other": None},
        concurrency=20,
        config=SimpleNamespace(sms_from=None),
    )
    runner = Runner(None, Settings(), job, SendOptions(progress=False))
    assert runner._consumers("email") == int(0.5 * SLOT_AHEAD) == 5
    assert runner._consumers("sms") == 20  # the rate fills 20 in well under SLOT_AHEAD
    assert runner._consumers("other") == 20  # no rate: --concurrency as given


def test_wrong_credentials_stop_the_run_and_cost_no_attempt(env, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from notify.cli import main

    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 30)
    with login_refused(monkeypatch) as sink:
        result = CliRunner().invoke(main, ["send", campaign.name, "--yes", "--concurrency", "5"])
        assert result.exit_code == 1
        error = result.output.strip().splitlines()[-1]
        assert error.startswith("Error: ") and "refused" in error and "guess" not in error
        assert sink.count == 0
        with db.session_scope(engine) as session:
            rows = session.scalars(select(Message)).all()
            # Put back, due now, unleased; begun ones give their attempt back.
            assert {m.status for m in rows} <= {"pending", "sending"}
            assert all(m.attempts == 0 and m.lease_owner is None for m in rows)
        monkeypatch.setenv("NOTIFY_SMTP_PASSWORD", "s3cret")
        again = CliRunner().invoke(main, ["send", campaign.name, "--yes"])
        assert again.exit_code == 0, again.output
        received = [r.rcpt_tos[0] for r in sink.received]
    assert sorted(received) == sorted(f"user{i}@example.com" for i in range(30))
