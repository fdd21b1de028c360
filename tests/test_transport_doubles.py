"""The test doubles themselves: standalone processes, benchmark mode, rate measurement."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp

from notify.config import Settings
from notify.transports import Outgoing
from notify.transports.smtp import SmtpMessenger
from notify.transports.twilio_sms import TwilioMessenger
from tests.smtp_sink import SmtpSink, read_record, window_max
from tests.standalone import start_process
from tests.twilio_double import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, TwilioDouble, segments

ROOT = Path(__file__).resolve().parent.parent


def email(row_id: int) -> Outgoing:
    mid = f"<{row_id}@acme.example>"
    data = f"From: a@acme.example\r\nMessage-ID: {mid}\r\nSubject: s\r\n\r\nbody\r\n".encode()
    return Outgoing(
        row_id, "email", "ann@example.com", data=data, message_id=mid, sender="a@acme.example"
    )


def start(module: str, *args: str, port_file: Path) -> subprocess.Popen:
    """The double as a process of its own, its output kept for the test to read."""
    proc, _port = start_process(
        module, *args, port_file=port_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return proc


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(20)


async def test_standalone_sink_records_one_line_per_message(tmp_path):
    record, port_file = tmp_path / "received.jsonl", tmp_path / "port"
    proc = start(
        "tests.smtp_sink", "--record", str(record), "--fail-every", "3", port_file=port_file
    )
    try:
        port = int(port_file.read_text())
        smtp = SmtpMessenger(
            Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none"), 2, timeout=5.0
        )
        results = [await smtp.push(email(i)) for i in range(4)]
        await smtp.close()
    finally:
        assert stop(proc) == 0
    assert [r.outcome for r in results] == ["sent", "sent", "retry", "sent"]
    rows = read_record(record)
    assert [r["message_id"] for r in rows] == [
        "<0@acme.example>",
        "<1@acme.example>",
        "<3@acme.example>",
    ]
    assert rows[0]["rcpt"] == ["ann@example.com"] and rows[0]["time"] <= time.time()
    assert b"listening 127.0.0.1:" in proc.stdout.read()


async def test_standalone_twilio_double_and_control_endpoints(tmp_path):
    record, port_file = tmp_path / "sms.jsonl", tmp_path / "port"
    proc = start(
        "tests.twilio_double",
        "--record",
        str(record),
        "--invalid",
        "+15005550001",
        port_file=port_file,
    )
    try:
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        settings = Settings(
            twilio_account_sid=DEFAULT_ACCOUNT_SID,
            twilio_auth_token=DEFAULT_AUTH_TOKEN,
            twilio_api_url=url,
        )
        async with TwilioMessenger(settings, 2, default_sender="+14155550199") as tw:
            ok = await tw.push(Outgoing(1, "sms", "+14155550100", body="hi"))
            bad = await tw.push(Outgoing(2, "sms", "+15005550001", body="hi"))
            async with aiohttp.ClientSession() as http:
                async with http.post(url + "/_double/deliver_all") as resp:
                    assert (await resp.json()) == {"moved": 1}
                async with http.get(url + "/_double/messages") as resp:
                    messages = await resp.json()
                async with http.get(url + "/_double/stats") as resp:
                    stats = await resp.json()
            fetched = await tw.fetch_status(ok.provider_id)
    finally:
        assert stop(proc) == 0
    assert (ok.outcome, bad.error_code) == ("sent", "21211")
    assert [m["sid"] for m in messages] == [ok.provider_id]
    assert fetched.status == "delivered" and messages[0]["status"] == "delivered"
    assert stats["created"] == 1 and stats["creates"] == 2
    assert [r["sid"] for r in read_record(record)] == [ok.provider_id]


async def test_sink_fast_mode_counts_without_keeping_data():
    with SmtpSink(parse=False) as sink:
        async with SmtpMessenger(
            Settings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="none"), 4, timeout=5.0
        ) as smtp:
            await asyncio.gather(*(smtp.push(email(i)) for i in range(20)))
        assert sink.wait_for(20, timeout=5)
        got = sink.received
        assert all(r.data is None and r.headers is None for r in got)
        assert sorted(r.message_id for r in got) == sorted(f"<{i}@acme.example>" for i in range(20))
        assert sink.window_max(60) == 20


async def test_double_token_bucket_holds_the_rate():
    with TwilioDouble(rate=20, burst=1) as double:
        settings = Settings(
            twilio_account_sid=double.account_sid,
            twilio_auth_token=double.auth_token,
            twilio_api_url=double.url,
        )
        async with TwilioMessenger(settings, 4, default_sender="+14155550199") as tw:
            started = time.monotonic()
            while time.monotonic() - started < 0.6:  # hammer it; 429s come back at once
                await tw.push(Outgoing(1, "sms", "+14155550100", body="x"))
            elapsed = time.monotonic() - started
        created = len(double.messages)
        assert double.rejected_429 > 0
        assert 5 <= created <= 1 + 20 * elapsed + 1
        assert double.window_max(0.5) <= 1 + 20 * 0.5 + 1


def test_window_max_and_segments():
    assert window_max([0.0, 0.5, 0.99, 1.0, 1.5], 1.0) == 3
    assert window_max([], 1.0) == 0
    assert segments("a" * 160) == 1 and segments("a" * 161) == 2
    assert segments("é" * 10) == 1  # é is in GSM-7
    assert segments("ż" * 70) == 1 and segments("ż" * 71) == 2
    assert segments("{" * 80) == 1 and segments("{" * 81) == 2  # extension chars count twice


def test_sink_reset_and_env(tmp_path):
    with SmtpSink(record_path=tmp_path / "r.jsonl") as sink:
        assert sink.connections == 0 and sink.count == 0
        assert os.path.exists(tmp_path / "r.jsonl")
    double = TwilioDouble()
    double.port = 8099
    assert double.env() == {
        "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
        "NOTIFY_TWILIO_API_URL": "http://127.0.0.1:8099",
    }
