"""Ctrl-C in the middle of `notify send`: in-flight messages are handed over and recorded,
nothing is left in doubt, and the next run sends the rest with no repeat at all."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
from sqlalchemy import func, select

from notify import db
from notify.models import Message
from tests.factories import add_contacts, campaign_toml, make_campaign, message_statuses
from tests.processes import notify_process, smtp_env, wait_for_sink
from tests.smtp_sink import SmtpSink

CONTACTS = 200
CONCURRENCY = 8


@pytest.mark.slow
def test_ctrl_c_records_what_is_in_flight_and_leaves_nothing_in_doubt(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, CONTACTS, exposures="passwords")
    with SmtpSink() as sink:
        child_env = smtp_env({**os.environ, **env}, sink)
        args = [
            "send",
            campaign.name,
            "--yes",
            "--email-rate",
            "100",
            "--concurrency",
            str(CONCURRENCY),
        ]
        first = notify_process(child_env, *args)
        wait_for_sink(sink, CONTACTS // 4, [first])
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
        assert "Stopping" in err
        stopped_at = sink.count
        assert stopped_at < CONTACTS

        statuses = message_statuses(engine)
        with db.session_scope(engine) as session:
            leased = session.scalar(select(func.count()).where(Message.lease_owner.is_not(None)))
        # Every message begun was handed over and its answer recorded: none in doubt.
        assert statuses["sending"] == 0 and leased == 0
        assert statuses["sent"] == stopped_at
        assert statuses["pending"] == CONTACTS - stopped_at

        second = notify_process(child_env, *args)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        received = Counter(r.rcpt_tos[0] for r in sink.received)

    assert set(received) == {f"user{i}@example.com" for i in range(CONTACTS)}
    assert max(received.values()) == 1  # a clean stop repeats nobody


@pytest.mark.slow
def test_ctrl_c_at_a_slow_rate_sends_only_what_was_in_flight(env, tmp_path):
    """At a set rate, a stop hands over only the consumers' messages and a few prepared ones
    (a quarter second's worth), not a long queue begun in advance."""
    rate, concurrency = 4, 4
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 60, exposures="card")
    with SmtpSink() as sink:
        child_env = smtp_env({**os.environ, **env}, sink)
        first = notify_process(
            child_env,
            "send",
            campaign.name,
            "--yes",
            "--email-rate",
            str(rate),
            "--concurrency",
            str(concurrency),
        )
        wait_for_sink(sink, 8, [first])
        at_stop = sink.count
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
        after = sink.count - at_stop
    # consumers (each may hold one) + one prepared in the queue + one being prepared
    assert after <= concurrency + 2, f"{after} sent after the stop"
    statuses = message_statuses(engine)
    assert statuses["sending"] == 0 and statuses["sent"] == at_stop + after
