"""Provider outages pause a channel, never fail it: through the real SMTP sink and the Twilio
double, each made unavailable for a while (refused, silent, 421, 5xx)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from notify import db
from notify.cli import main
from notify.config import load_settings
from notify.models import Event, Message
from notify.outage import OutageTooLong
from notify.send.options import SendOptions
from notify.send.runner import send_campaign
from tests.factories import (
    email_campaign,
    message_statuses,
    plan_in_doubt,
    point_at,
    sms_campaign,
)
from tests.smtp_sink import SmtpSink
from tests.twilio_double import TwilioDouble

# Small probe backoff for the engine-level tests (the product's is 1 s to 60 s).
FAST = {"outage_backoff": (0.1, 0.4), "retry_base": 0.05, "progress": False}


class Seen:
    """An observer that keeps what the engine told it."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[tuple[str, float]] = []

    def begin(self, totals, rates) -> None:
        self.totals = totals

    def done(self, channel, outcome) -> None:
        pass

    def outage_started(self, state) -> None:
        self.started.append(f"{state.channel} {state.provider} {state.error}")

    def outage_ended(self, state, seconds) -> None:
        self.ended.append((state.channel, seconds))

    def tick(self) -> None:
        pass

    def end(self) -> None:
        pass


def _rows(engine) -> list[Message]:
    with db.session_scope(engine) as session:
        rows = session.scalars(select(Message).order_by(Message.id)).all()
        session.expunge_all()
        return rows


def _event_kinds(engine) -> Counter:
    with db.session_scope(engine) as session:
        return Counter(session.scalars(select(Event.kind)))


def _send(engine, campaign, **options):
    """One engine-level run with the fast probe backoff; returns its summary."""
    return send_campaign(engine, load_settings(), campaign.name, SendOptions(**options, **FAST))


def _send_in_thread(engine, campaign, wait: float, **options) -> tuple[BaseException | None, bool]:
    """``_send`` in a thread, waited for up to ``wait`` s (a hung run must not hang the
    test): returns what it raised and whether it is still running."""
    outcome: list[BaseException | None] = [None]

    def run() -> None:
        try:
            _send(engine, campaign, **options)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome[0] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(wait)
    return outcome[0], thread.is_alive()


@pytest.mark.parametrize("mode", ["refuse", "421", "reset"])
def test_relay_down_then_back_sends_everyone_once_spending_nothing(
    env, tmp_path, monkeypatch, mode
):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = email_campaign(engine, tmp_path, 12)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        sink.go_down(mode, 1.5)
        seen = Seen()
        summary = _send(engine, campaign, email_rate=0, concurrency=3, observer=seen)
        ids, port = sink.message_ids(), sink.port
        assert sink.refused_while_down > 0 or mode == "refuse"
    assert len(ids) == 12 and len(set(ids)) == 12  # everyone exactly once
    assert summary.count("sent") == 12 and summary.count("failed") == 0
    assert [r.attempts for r in _rows(engine)] == [1] * 12  # the outage spent nothing
    assert len(seen.started) == 1 and len(seen.ended) == 1
    assert seen.started[0].startswith(f"email smtp:127.0.0.1:{port} ")
    assert 0 < seen.ended[0][1] < 10
    assert _event_kinds(engine)["outage"] >= 1  # the put-backs are on record


def test_silent_relay_is_an_outage_not_a_hang(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = email_campaign(engine, tmp_path, 6)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        sink.go_down("silent", 1.5)
        seen = Seen()
        _send(engine, campaign, email_rate=0, concurrency=2, observer=seen, provider_timeout=0.3)
        ids = sink.message_ids()
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 6
    assert "timeout" in seen.started[0] or "Timed out" in seen.started[0]
    assert [r.attempts for r in _rows(engine)] == [1] * 6


def test_outage_longer_than_max_outage_ends_the_run_with_everything_pending(
    env, tmp_path, monkeypatch
):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = email_campaign(engine, tmp_path, 8)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        sink.go_down("silent")
        outcome, running = _send_in_thread(
            engine, campaign, 30, email_rate=0, concurrency=3, max_outage=1.0, provider_timeout=0.3
        )
        assert not running, "a silent relay hung the run"
    assert isinstance(outcome, OutageTooLong) and outcome.exit_code == 75
    rows = _rows(engine)
    assert {r.status for r in rows} == {"pending"}
    assert all(r.attempts == 0 and r.lease_owner is None for r in rows)


def test_cli_max_outage_exits_75_then_a_rerun_sends_everyone_once(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = email_campaign(engine, tmp_path, 10)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        sink.go_down("refuse")
        result = CliRunner().invoke(main, ["send", campaign.name, "--yes", "--max-outage", "2s"])
        assert result.exit_code == 75, result.output
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("Error: email: smtp:127.0.0.1:") and "still pending" in last
        assert "unavailable" in result.output  # the outage's start line came first
        assert message_statuses(engine) == Counter({"pending": 10})
        assert all(r.attempts == 0 and r.lease_owner is None for r in _rows(engine))
        assert sink.count == 0
        sink.recover()
        again = CliRunner().invoke(main, ["send", campaign.name, "--yes"])
        assert again.exit_code == 0, again.output
        ids = sink.message_ids()
    assert len(ids) == 10 and len(set(ids)) == 10
    assert [r.attempts for r in _rows(engine)] == [1] * 10


def test_cli_prints_when_an_outage_starts_and_ends(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = email_campaign(engine, tmp_path, 6)
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        sink.go_down("refuse", 2.5)
        result = CliRunner().invoke(main, ["send", campaign.name, "--yes", "--email-rate", "0"])
        ids, port = sink.message_ids(), sink.port
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = [n for n, line in enumerate(lines) if "is unavailable" in line]
    end = [n for n, line in enumerate(lines) if "is back after" in line]
    assert len(start) == 1 and len(end) == 1 and start[0] < end[0]
    assert lines[start[0]].startswith(f"email: smtp:127.0.0.1:{port} is unavailable (")
    assert len(ids) == 6 and len(set(ids)) == 6


def test_twilio_5xx_for_a_while_is_an_outage_spending_nothing(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 10)
    with TwilioDouble() as tw:
        point_at(monkeypatch, tw)
        tw.go_down("5xx", 1.5)
        seen = Seen()
        _send(engine, campaign, sms_rate=0, concurrency=4, observer=seen)
        sent = [m["to"] for m in tw.messages]
        assert tw.down_answers >= 3
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 10
    assert len(seen.started) == 1 and len(seen.ended) == 1
    # The 5xx answers before the streak proved an outage had their attempts given back.
    assert [r.attempts for r in _rows(engine)] == [1] * 10
    assert {r.status for r in _rows(engine)} == {"sent"}
    # A sent message's error columns describe its outcome, not the outage it waited out
    # (the export said "sent ... 500, Internal Server Error"); the events keep the history.
    assert {(r.error_code, r.error_message) for r in _rows(engine)} == {(None, None)}
    assert _event_kinds(engine)["outage"] >= 1


def test_twilio_refusing_connections_then_back(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 6)
    with TwilioDouble() as tw:
        point_at(monkeypatch, tw)
        tw.go_down("refuse", 1.5)
        seen = Seen()
        _send(engine, campaign, sms_rate=0, concurrency=3, observer=seen)
        sent = [m["to"] for m in tw.messages]
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 6
    assert len(seen.started) == 1 and len(seen.ended) == 1
    assert [r.attempts for r in _rows(engine)] == [1] * 6


def test_an_isolated_5xx_stays_a_per_message_failure(env, tmp_path, monkeypatch):
    """One number Twilio always answers 500: it spends its attempts and fails; the others
    go out, and the channel never pauses for it."""
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 6, max_attempts="3")
    with TwilioDouble(fail_numbers={"+14155550002"}) as tw:
        point_at(monkeypatch, tw)
        seen = Seen()
        _send(engine, campaign, sms_rate=0, concurrency=2, observer=seen)
    rows = {r.address: r for r in _rows(engine)}
    bad = rows.pop("+14155550002")
    assert (bad.status, bad.attempts, bad.error_code) == ("failed", 3, "500")
    assert {r.status for r in rows.values()} == {"sent"}
    assert seen.started == []


def test_reconcile_lookup_during_an_outage_pauses_instead_of_stopping(env, tmp_path, monkeypatch):
    """An SMS in doubt must be looked up before it is sent again; with Twilio unreachable
    the lookup is an outage like any other (no "Error: Twilio lookup ... failed")."""
    from notify.models import utcnow

    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 3)
    with TwilioDouble() as tw:
        point_at(monkeypatch, tw)
        plan_in_doubt(engine, campaign)
        with db.session_scope(engine) as session:
            for row in session.scalars(select(Message)):  # their attempts' `sending` commits
                session.add(
                    Event(
                        campaign_id=row.campaign_id,
                        message_id=row.id,
                        contact_id=row.contact_id,
                        at=utcnow(),
                        source="send",
                        kind="sending",
                        applied=True,
                        detail={"attempt": 1, "content_sha256": "0" * 64},
                    )
                )
        tw.go_down("5xx", 1.5)
        seen = Seen()
        _send(engine, campaign, sms_rate=0, concurrency=3, observer=seen)
        sent = [m["to"] for m in tw.messages]
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 3
    assert len(seen.started) == 1 and "listing messages" in seen.started[0]
    assert {r.status for r in _rows(engine)} == {"sent"}


def twilio_at(monkeypatch, port: int) -> None:
    """Point the Twilio client at a loopback port that is no Twilio (credentials that pass
    the settings' checks)."""
    monkeypatch.setenv("NOTIFY_TWILIO_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t" * 32)


class SilentListener:
    """A TCP listener on loopback that accepts every connection and never answers: a Twilio
    endpoint that hangs (each push and each lookup runs into its timeout)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(200)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                continue

    def __enter__(self) -> SilentListener:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_a_silent_twilio_ends_the_run_soon_after_max_outage(env, tmp_path, monkeypatch):
    """Twilio accepts connections and never answers: pushes time out (each then in doubt) and
    so do lookups. The run must end about one step timeout after --max-outage, exit 75, with
    no new pushes or lookups once the outage is declared but one probe at a time, and
    nothing sent twice (the in-doubt ones stay `sending`, reconciled on the next run).

    With a rate, consumers wait in line for their slots: they used to push (and look up)
    one by one after the outage was declared and even after the run gave up (6 min with
    Twilio's 30 s timeouts and --max-outage 20s)."""
    import time

    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 30)
    with SilentListener() as silent:
        twilio_at(monkeypatch, silent.port)
        started = time.monotonic()
        outcome, running = _send_in_thread(
            engine, campaign, 60, sms_rate=2, concurrency=10, max_outage=1.0, provider_timeout=0.3
        )
        took = time.monotonic() - started
        assert not running, "a silent Twilio hung the run"
        connections = len(silent.accepted)
    assert isinstance(outcome, OutageTooLong) and outcome.exit_code == 75, outcome
    # The outage starts when the first push has timed out and its lookup too (0.6 s); it is
    # declared too long 1 s later, and the run ends within about one more step timeout.
    assert took < 3.5, f"the run took {took:.1f}s after a 1 s --max-outage"
    print(f"took {took:.2f}s, {connections} connections")
    rows = _rows(engine)
    assert {r.status for r in rows} <= {"pending", "sending"}
    assert all(r.provider_message_id is None and r.lease_owner is None for r in rows)
    assert all(r.attempts <= 1 for r in rows)  # nothing was pushed twice


class BlackHole:
    """A loopback port whose connects are never answered (its one-place accept queue is full,
    so the kernel drops every further SYN): a provider behind a firewall that drops packets,
    or one whose address is gone."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.queued = socket.create_connection(("127.0.0.1", self.port))  # fills the queue

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc) -> None:
        self.queued.close()
        self.sock.close()


def test_a_twilio_that_never_answers_connect_is_an_outage_at_once_and_nothing_in_doubt(
    env, tmp_path, monkeypatch
):
    """A connection never made carried no request: the outage starts after the connect
    timeout, not after the step's timeout plus a lookup's, and no message is left in doubt
    (nothing to look up before it is sent again)."""
    import time

    from notify.transports import twilio_sms

    monkeypatch.setattr(twilio_sms, "CONNECT_TIMEOUT", 0.3)
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = sms_campaign(engine, tmp_path, 4)
    with BlackHole() as hole:
        twilio_at(monkeypatch, hole.port)
        seen = Seen()
        started = time.monotonic()
        outcome, running = _send_in_thread(
            engine,
            campaign,
            60,
            sms_rate=0,
            concurrency=2,
            max_outage=1.0,
            provider_timeout=20,
            observer=seen,
        )
        took = time.monotonic() - started
    assert not running and isinstance(outcome, OutageTooLong), outcome
    assert len(seen.started) == 1 and "timeout" in seen.started[0], seen.started
    # 0.3 s to the outage, 1 s of it, one probe's connect timeout: far below a 20 s step.
    assert took < 4, f"took {took:.1f}s"
    rows = _rows(engine)
    assert [(r.status, r.attempts) for r in rows] == [("pending", 0)] * 4
    with db.session_scope(engine) as session:
        details = session.scalars(select(Event.detail).where(Event.kind == "outage")).all()
    assert details and all(not d.get("in_doubt") for d in details)
