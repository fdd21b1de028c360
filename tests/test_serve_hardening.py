"""`notify serve` holds against slow, hostile and replayed requests (issue 13), over real
sockets: an aiohttp test server on 127.0.0.1 running the app `notify serve` runs."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from notify import db
from notify.config import Settings
from notify.models import Event
from notify.server import BODY_TIMEOUT, KEEPALIVE_TIMEOUT, make_app, signature_for
from tests.test_webhooks import PUBLIC, SID, callback, seed, settings, signed, state

SECRET = "reset-webhook-secret-for-hardening-tests"
URL = PUBLIC + "/webhooks/twilio/status"


def hardened_settings() -> Settings:
    return settings(webhook_secret=SECRET)


async def read_until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    data = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(4096), limit)
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def test_default_timeouts_are_bounded():
    assert 0 < BODY_TIMEOUT <= 30 and 0 < KEEPALIVE_TIMEOUT <= 30


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/webhooks/resets", "application/json"),
        ("/webhooks/twilio/status", "application/x-www-form-urlencoded"),
        ("/login", "application/x-www-form-urlencoded"),  # the web view's forms too
    ],
)
async def test_a_half_sent_body_is_answered_408_and_closed(engine, path, content_type):
    app = make_app(engine, hardened_settings(), body_timeout=0.5, keepalive_timeout=2)
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            "Content-Length: 200\r\n\r\ntoken=abc".encode()
        )
        await writer.drain()
        data, took = await read_until_closed(reader, limit=10)
        writer.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:80]
    assert took < 0.5 + 2 + 2  # body timeout + lingering close + slack


async def test_half_sent_headers_and_idle_connections_are_closed(engine):
    app = make_app(engine, hardened_settings(), keepalive_timeout=1)
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"POST /webhooks/resets HTTP/1.1\r\nHost: x\r\nContent-Le")
        await writer.drain()
        data, took = await read_until_closed(reader, limit=10)
        writer.close()
        assert data == b"" and took < 1 + 2
        # An idle keep-alive connection after a complete request is closed as well.
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        data, took = await read_until_closed(reader, limit=10)
        writer.close()
        assert data.startswith(b"HTTP/1.1 200") and took < 1 + 2


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE messages SET attempts = attempts + 1")
print("locked", flush=True)
time.sleep(60)
"""


async def test_healthz_answers_within_a_second_while_another_process_writes(
    sqlite_url, campaign_file
):
    engine = db.make_engine(sqlite_url)
    db.upgrade(engine)
    seed(engine, campaign_file)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, engine.url.database], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        async with TestClient(TestServer(make_app(engine, hardened_settings()))) as client:
            # A callback now waits for the lock on the server's database thread ...
            body, headers = signed(callback("delivered"))
            waiting = asyncio.ensure_future(
                client.post("/webhooks/twilio/status", data=body, headers=headers)
            )
            await asyncio.sleep(0.3)
            assert not waiting.done()
            # ... and the health check still answers at once, saying why writes wait.
            for _ in range(3):
                started = time.monotonic()
                resp = await client.get("/healthz")
                took = time.monotonic() - started
                answer = await resp.json()
                assert took < 1.0, took
                assert resp.status == 200 and answer["database"] == "busy", answer
            holder.kill()
            holder.wait()
            resp = await asyncio.wait_for(waiting, 30)
            assert resp.status == 200  # the callback was applied once the lock was free
            assert (await (await client.get("/healthz")).json())["database"] == "ok"
    finally:
        holder.kill()
        holder.wait()
        engine.dispose()


def _signed_json(payload: bytes) -> dict:
    return {
        "X-Notify-Signature": signature_for(SECRET, payload),
        "Content-Type": "application/json",
    }


MALFORMED_RESETS = [
    b'{"key": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",  # deeply nested
    b"[" * 60_000,
    b'{"key": "a\\u0000b"}',  # NUL
    b'{"email": "ann@example.com\\u0000"}',
    b'{"key": "\\ud800"}',  # lone surrogate: not UTF-8
    b'{"key": "\xff\xfe"}',  # bad UTF-8
    b'{"key": "c1", "completed_at": "0001-01-01T00:00:00+01:00"}',  # overflows in UTC
    b'{"key": "c1", "completed_at": ["2026-11-25"]}',
    b'{"key": "c1", "campaign": {"name": "x"}}',
    b'{"key": "' + b"k" * 10_000 + b'"}',
]


async def test_signed_but_malformed_bodies_are_400_never_500(engine, campaign_file):
    row = seed(engine, campaign_file)
    async with TestClient(TestServer(make_app(engine, hardened_settings()))) as client:
        for payload in MALFORMED_RESETS:
            resp = await client.post(
                "/webhooks/resets", data=payload, headers=_signed_json(payload)
            )
            assert resp.status == 400, (payload[:60], resp.status, await resp.text())
        for params in (
            callback("failed", ErrorCode="30003", ErrorMessage="bad\x00byte"),
            callback("delivered", Extra="\x00"),
        ):
            body, headers = signed(params)
            resp = await client.post("/webhooks/twilio/status", data=body, headers=headers)
            assert resp.status == 400, (params, await resp.text())
        # Invalid UTF-8 in a percent-escape: signed as sent, still a 400.
        resp = await client.post(
            "/webhooks/twilio/status",
            data=b"MessageSid=%ff%fe",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": "x",
            },
        )
        assert resp.status == 400
    assert state(engine, row)[0].status == "sent" and count_events(engine) == 0


def count_events(engine) -> int:
    with db.session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Event))


async def test_a_replayed_callback_is_stored_once(engine, campaign_file):
    row = seed(engine, campaign_file)
    async with TestClient(TestServer(make_app(engine, hardened_settings()))) as client:
        body, headers = signed(callback("delivered"))
        first = await client.post("/webhooks/twilio/status", data=body, headers=headers)
        assert first.status == 200 and (await first.json())["changed"] is True
        replies = await asyncio.gather(
            *(client.post("/webhooks/twilio/status", data=body, headers=headers) for _ in range(5))
        )
        for reply in replies:
            assert reply.status == 200 and (await reply.json())["replay"] is True
        # Same SID and status, other parameters: a distinct report, kept as an event.
        other, other_headers = signed(callback("delivered", ErrorCode="0"))
        assert (
            await client.post("/webhooks/twilio/status", data=other, headers=other_headers)
        ).status == 200
    message, log = state(engine, row)
    assert message.status == "delivered"
    assert [(e.kind, e.applied) for e in log] == [("delivered", True), ("delivered", False)]


async def test_a_replayed_early_callback_is_stored_once(engine, campaign_file):
    seed(engine, campaign_file)
    early = "SM" + "f" * 32
    async with TestClient(TestServer(make_app(engine, hardened_settings()))) as client:
        body, headers = signed(callback("delivered", sid=early))
        results = await asyncio.gather(
            *(client.post("/webhooks/twilio/status", data=body, headers=headers) for _ in range(4))
        )
        assert sorted(r.status for r in results)[0] in (200, 202)
    with db.session_scope(engine) as session:
        stored = session.scalar(
            select(func.count()).select_from(Event).where(Event.provider_message_id == early)
        )
    assert stored == 1


async def test_signature_failures_are_logged_rate_limited_with_the_url(
    engine, campaign_file, caplog
):
    seed(engine, campaign_file)
    app = make_app(engine, hardened_settings())
    now = [1000.0]
    app[__import__("notify.server", fromlist=["REFUSALS"]).REFUSALS].clock = lambda: now[0]
    caplog.set_level(logging.WARNING, logger="notify.server")
    async with TestClient(TestServer(app)) as client:
        params = callback("delivered")
        for _ in range(5):
            body, headers = signed(params, url="https://evil.example/webhooks/twilio/status")
            resp = await client.post("/webhooks/twilio/status", data=body, headers=headers)
            assert resp.status == 403
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 1
        assert "invalid X-Twilio-Signature" in lines[0] and f"validated against {URL}" in lines[0]
        now[0] += 61
        resp = await client.post(
            "/webhooks/twilio/status",
            data=urlencode(params),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status == 403
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 2 and "missing X-Twilio-Signature" in lines[1]
        assert "(4 more refused since the last report)" in lines[1]
        # Reset completions with a bad signature are logged too (their own kind).
        payload = json.dumps({"key": "c1"}).encode()
        resp = await client.post(
            "/webhooks/resets", data=payload, headers={"X-Notify-Signature": "sha256=00"}
        )
        assert resp.status == 403
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 3 and "reset completion refused" in lines[2]
        assert SECRET not in " ".join(lines) and "sha256=00" not in " ".join(lines)
    assert SID  # the seeded SMS is untouched by refused callbacks


async def test_healthz_never_creates_a_database(tmp_path):
    path = tmp_path / "gone.db"
    engine = db.make_engine(f"sqlite:///{path}")
    async with TestClient(TestServer(make_app(engine, hardened_settings()))) as client:
        resp = await client.get("/healthz")
        assert resp.status == 503
    assert not path.exists()
    engine.dispose()


def test_a_port_in_use_is_one_line_not_a_traceback(env, tmp_path):
    import os
    import socket

    db.connect(env["NOTIFY_DATABASE_URL"])
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "notify", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=60,
        )
    finally:
        taken.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
