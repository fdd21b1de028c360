"""Send progress: off a terminal, one plain line per channel every interval (and at each
outage start and end); on a terminal, one bar per channel. Fed by the engine's observer."""

from __future__ import annotations

import io
import re

from click.testing import CliRunner

from notify import db
from notify.cli import main
from notify.cli.send_progress import PlainProgress, TerminalProgress
from notify.config import load_settings
from notify.outage import OutageState
from notify.send.options import SendOptions
from notify.send.runner import send_campaign
from tests.factories import add_contacts, campaign_toml, make_campaign, point_at
from tests.smtp_sink import SmtpSink


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_interval_with_count_rate_eta_and_failures():
    clock, out = Clock(), io.StringIO()
    progress = PlainProgress(out, interval=30, outage_interval=60, clock=clock)
    progress.begin({"email": 100, "sms": 10}, {"email": None, "sms": 0.5})
    for n in range(30):  # 30 emails in 30 s, 3 of them failed; 5 SMS
        clock.now += 1
        progress.done("email", "failed" if n % 10 == 0 else "sent")
        if n < 5:
            progress.done("sms", "sent")
        progress.tick()
        if clock.now < 1030:
            assert out.getvalue() == ""  # nothing before the interval
    lines = out.getvalue().splitlines()
    # At the current rate (1/s) 70 emails take 70 s; SMS are limited: 5 left at 0.5/s.
    assert lines == [
        "email: 30/100 done, 1.0/s, ETA 1m10s, 3 failed",
        "sms: 5/10 done, 0.2/s, ETA 10s, 0 failed",
    ]
    clock.now += 10
    progress.tick()
    assert len(out.getvalue().splitlines()) == 2  # the next lines come 30 s later
    clock.now += 20
    progress.tick()
    assert len(out.getvalue().splitlines()) == 4


def test_outage_lines_at_start_every_minute_and_at_end():
    clock, out = Clock(), io.StringIO()
    progress = PlainProgress(out, interval=30, outage_interval=60, clock=clock)
    progress.begin({"email": 10, "sms": 3}, {"email": None, "sms": 1.0})
    state = OutageState("email", "smtp:relay.example:587", "connection refused", clock.now)
    progress.outage_started(state)
    started = out.getvalue().splitlines()
    assert len(started) == 3 and started[2].startswith("sms: 0/3 done")  # every channel
    assert started[0] == (
        "email: smtp:relay.example:587 is unavailable (connection refused); "
        "the channel is paused and nothing is spent, probing again with "
        "backoff."
    )
    assert (
        started[1].startswith("email: 0/10 done") and "paused: smtp:relay.example:587" in started[1]
    )
    out.truncate(0), out.seek(0)
    clock.now += 59
    progress.tick()
    assert "still unavailable" not in out.getvalue()
    clock.now += 1
    progress.tick()
    assert re.search(
        r"^email: smtp:relay.example:587 still unavailable since "
        r"\d\d:\d\d:\d\d UTC \(1m00s\): connection refused$",
        out.getvalue(),
        re.MULTILINE,
    )
    out.truncate(0), out.seek(0)
    clock.now += 15
    progress.outage_ended(state, 75.0)
    ended = out.getvalue().splitlines()
    assert ended[0] == "email: smtp:relay.example:587 is back after 1m15s; sending resumes."
    assert ended[1].startswith("email: 0/10 done") and "paused" not in ended[1]
    assert ended[2].startswith("sms: 0/3 done")


def test_a_send_off_a_terminal_prints_lines_as_it_goes(env, tmp_path, monkeypatch):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(
        engine, campaign_toml(tmp_path, channels='["email"]', fallback='"none"')
    )
    add_contacts(engine, campaign, 15)
    out = io.StringIO()
    with SmtpSink() as sink:
        point_at(monkeypatch, sink)
        send_campaign(
            engine,
            load_settings(),
            campaign.name,
            SendOptions(email_rate=5, observer=PlainProgress(out, interval=0.5)),
        )
    counts = [
        int(m)
        for m in re.findall(
            r"^email: (\d+)/15 done, [\d.]+/s, ETA \S+, 0 failed$", out.getvalue(), re.MULTILINE
        )
    ]
    assert len(counts) >= 2 and counts == sorted(counts) and counts[0] < 15


def test_terminal_bars_one_per_channel():
    out = io.StringIO()
    progress = TerminalProgress(out)
    progress.console.force_terminal = True
    progress.begin({"email": 4, "sms": 2}, {"email": None, "sms": 1.0})
    for _ in range(4):
        progress.done("email", "sent")
    progress.done("sms", "failed")
    progress.tick()
    progress.end()
    text = out.getvalue()
    assert "email" in text and "4/4" in text and "sms" in text and "1/2" in text
    assert "failed 1" in text


def test_max_outage_takes_a_duration(env):
    result = CliRunner().invoke(main, ["send", "x", "--yes", "--max-outage", "soon"])
    assert result.exit_code == 2
    assert "--max-outage" in result.output and "'soon' is not a duration" in result.output
    remind = CliRunner().invoke(main, ["remind", "--help"])
    assert "--max-outage DURATION" in remind.output
