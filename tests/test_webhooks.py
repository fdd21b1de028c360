"""`notify serve`: Twilio status callbacks (signed, forward-only, early SIDs), resets, health."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from notify import campaigns, db, events, tracking
from notify.audit import AppendOnlyError
from notify.cli import main
from notify.config import Settings
from notify.models import AuditRecord, Contact, Event, Message
from notify.server import MAX_BODY, make_app

TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "https://notify.example.org"
URL = PUBLIC + "/webhooks/twilio/status"
SID = "SM" + "a" * 32
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def settings(**overrides) -> Settings:
    values = dict(twilio_account_sid="AC" + "0" * 32, twilio_auth_token=TOKEN, public_url=PUBLIC)
    values.update(overrides)
    return Settings(**values)


def seed(engine, campaign_file, *, sid: str | None = SID, status: str = "sent") -> int:
    """One campaign, one contact, one SMS (and an email) and return the SMS row id."""
    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, campaign_file)
        contact = Contact(
            campaign_id=campaign.id,
            key="c1",
            email="ann@example.com",
            phone="+14155550100",
            exposures="passwords",
        )
        session.add(contact)
        session.flush()
        email = Message(
            campaign_id=campaign.id,
            contact_id=contact.id,
            channel="email",
            status="sent",
            address=contact.email,
            provider_message_id="<e1@x>",
        )
        sms = Message(
            campaign_id=campaign.id,
            contact_id=contact.id,
            channel="sms",
            status=status,
            address=contact.phone,
            provider_message_id=sid,
        )
        session.add_all([email, sms])
        session.flush()
        return sms.id


def signed(params: dict, url: str = URL, token: str = TOKEN) -> tuple[bytes, dict]:
    headers = dict(FORM)
    headers["X-Twilio-Signature"] = RequestValidator(token).compute_signature(url, params)
    return urlencode(params).encode(), headers


def callback(status: str, sid: str = SID, **extra) -> dict:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "0" * 32,
        "To": "+14155550100",
        "From": "+14155550199",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def state(engine, row_id: int) -> tuple[Message, list[Event]]:
    with db.session_scope(engine) as session:
        message = session.get(Message, row_id)
        found = list(
            session.scalars(select(Event).where(Event.message_id == row_id).order_by(Event.id))
        )
        return message, found


def count(engine, model) -> int:
    with db.session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
async def client(engine):
    async with TestClient(TestServer(make_app(engine, settings()))) as test_client:
        yield test_client


async def post(client, params: dict, **kw):
    body, headers = signed(params, **kw)
    return await client.post("/webhooks/twilio/status", data=body, headers=headers)


async def test_signed_delivered_callback_moves_message(engine, campaign_file, client):
    row = seed(engine, campaign_file)
    resp = await post(client, callback("delivered"))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["changed"] is True
    message, log = state(engine, row)
    assert message.status == "delivered" and message.delivered_at is not None
    assert [(e.source, e.kind, e.applied) for e in log] == [("webhook", "delivered", True)]
    assert log[0].detail["sid"] == SID


@pytest.mark.parametrize("how", ["missing", "wrong", "other-url", "tampered", "other-token"])
async def test_bad_signature_is_403_and_changes_nothing(engine, campaign_file, client, how):
    row = seed(engine, campaign_file)
    params = callback("delivered")
    if how == "missing":
        resp = await client.post("/webhooks/twilio/status", data=urlencode(params), headers=FORM)
    elif how == "wrong":
        resp = await client.post(
            "/webhooks/twilio/status",
            data=urlencode(params),
            headers={**FORM, "X-Twilio-Signature": "bm9wZQ=="},
        )
    elif how == "other-url":
        resp = await post(client, params, url="https://evil.example/webhooks/twilio/status")
    elif how == "other-token":
        resp = await post(client, params, token="not-the-token")
    else:
        body, headers = signed(params)
        body = body.replace(b"delivered", b"failed")
        resp = await client.post("/webhooks/twilio/status", data=body, headers=headers)
    assert resp.status == 403
    message, log = state(engine, row)
    assert message.status == "sent" and log == []
    assert count(engine, Event) == 0


async def test_unconfigured_server_refuses_callbacks(engine, campaign_file):
    row = seed(engine, campaign_file)
    app = make_app(engine, settings(public_url=None))
    async with TestClient(TestServer(app)) as test_client:
        resp = await post(test_client, callback("delivered"))
    assert resp.status == 403
    assert state(engine, row)[0].status == "sent"


async def test_sha256_shared_key_signature_is_accepted(engine, campaign_file, client):
    row = seed(engine, campaign_file)
    params = callback("delivered")
    headers = {
        **FORM,
        "X-Twilio-Webhooks-Signature-Settings": "key=k1,algorithm=HMAC_SHA256",
        "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(
            URL, params, algorithm="HMAC_SHA256"
        ),
    }
    resp = await client.post("/webhooks/twilio/status", data=urlencode(params), headers=headers)
    assert resp.status == 200
    assert state(engine, row)[0].status == "delivered"


async def test_malformed_bodies_are_400(engine, campaign_file, client):
    row = seed(engine, campaign_file)
    no_sid = {"MessageStatus": "delivered", "AccountSid": "AC1"}
    assert (await post(client, no_sid)).status == 400
    bad_status = callback("DELIVERED; drop table")
    assert (await post(client, bad_status)).status == 400
    garbage = b"\xff\xfe\x00not a form"
    resp = await client.post("/webhooks/twilio/status", data=garbage, headers=FORM)
    assert resp.status == 400
    resp = await client.post("/webhooks/twilio/status", json=callback("delivered"))
    assert resp.status == 400
    assert state(engine, row)[0].status == "sent" and count(engine, Event) == 0


async def test_oversized_body_is_413(engine, campaign_file, client):
    row = seed(engine, campaign_file)
    params = callback("delivered", Body="x" * (MAX_BODY + 10))
    assert (await post(client, params)).status == 413
    assert state(engine, row)[0].status == "sent" and count(engine, Event) == 0


async def test_late_and_duplicate_callbacks_never_move_backwards(engine, campaign_file, client):
    row = seed(engine, campaign_file, status="sending")
    # A second "delivered" with other parameters (Twilio adds fields) is a new report.
    for params in (
        callback("delivered"),
        callback("sent"),
        callback("delivered", RawDlrDoneDate="2612011200"),
        callback("queued"),
    ):
        resp = await post(client, params)
        assert resp.status == 200
    message, log = state(engine, row)
    assert message.status == "delivered"
    assert message.sent_at is None  # "sent" arrived after "delivered": an event only
    assert [(e.kind, e.applied) for e in log] == [
        ("delivered", True),
        ("sent", False),
        ("delivered", False),
        ("queued", False),
    ]


async def test_failed_callback_keeps_error_and_plans_nothing(engine, campaign_file, client):
    row = seed(engine, campaign_file)
    before = count(engine, Message)
    resp = await post(client, callback("failed", ErrorCode="21610"))
    assert resp.status == 200
    message, log = state(engine, row)
    assert (message.status, message.error_code, message.error_message) == (
        "failed",
        "21610",
        "opted out",
    )
    assert log[0].detail["error_code"] == "21610"
    assert count(engine, Message) == before  # no fallback for a failed SMS


async def test_undelivered_keeps_twilio_error_message(engine, campaign_file, client):
    row = seed(engine, campaign_file)
    await post(
        client,
        callback("undelivered", ErrorCode="30003", ErrorMessage="Unreachable destination handset"),
    )
    message, _ = state(engine, row)
    assert (message.status, message.error_code, message.error_message) == (
        "undelivered",
        "30003",
        "Unreachable destination handset",
    )


async def test_early_callback_is_kept_then_applied_when_sid_is_stored(
    engine, campaign_file, client
):
    row = seed(engine, campaign_file, sid=None, status="sending")
    early_sid = "SM" + "b" * 32
    resp = await post(client, callback("delivered", sid=early_sid))
    assert resp.status == 202
    with db.session_scope(engine) as session:
        early = session.scalar(select(Event).where(Event.provider_message_id == early_sid))
        assert (early.applied, early.message_id, early.kind) == (False, None, "delivered")
    # What the send engine does when Twilio's API answer arrives:
    with db.session_scope(engine) as session:
        message = session.get(Message, row)
        message.provider_message_id = early_sid
        events.advance(session, message, "sent", source="send")
        assert tracking.apply_early_events(session, message) == 1
    message, log = state(engine, row)
    assert message.status == "delivered"
    linked = [e for e in log if e.provider_message_id == early_sid]
    assert linked and linked[0].applied is True
    assert any(e.detail and e.detail.get("early_event_id") == linked[0].id for e in log)
    # Applying again finds nothing left to apply.
    with db.session_scope(engine) as session:
        assert tracking.apply_early_events(session, session.get(Message, row)) == 0


async def test_send_engine_applies_early_callbacks_when_it_records_sent(
    engine, campaign_file, client
):
    """record_sent (the engine's group write) links and applies a callback that came first."""
    from types import SimpleNamespace

    from notify.send.store import Sent, record_sent

    row = seed(engine, campaign_file, sid=None, status="sending")
    early_sid, other_sid = "SM" + "d" * 32, "SM" + "e" * 32
    assert (await post(client, callback("delivered", sid=early_sid))).status == 202
    with db.session_scope(engine) as session:
        message = session.get(Message, row)
        other = Message(
            campaign_id=message.campaign_id,
            contact_id=message.contact_id,
            channel="sms",
            notice="reminder",
            status="sending",
            address=message.address,
        )
        session.add(other)
        session.flush()
        job = SimpleNamespace(
            campaign=SimpleNamespace(id=message.campaign_id), config=SimpleNamespace(reset_url=None)
        )
        sents = [
            Sent(
                job,
                SimpleNamespace(id=m.id, contact_id=m.contact_id, channel="sms"),
                sid,
                "queued",
                {},
            )
            for m, sid in ((message, early_sid), (other, other_sid))
        ]
        other_id = other.id
    with db.session_scope(engine) as session:
        record_sent(session, sents)
    assert state(engine, row)[0].status == "delivered"
    assert state(engine, other_id)[0].status == "sent"  # no callback of its own yet


async def test_early_callback_applied_if_sid_stored_meanwhile(
    engine, campaign_file, client, monkeypatch
):
    row = seed(engine, campaign_file, sid=None, status="sent")
    early_sid = "SM" + "c" * 32
    real = tracking.handle_callback

    def racing(session, report, key=None):
        outcome = real(session, report, key)
        # The send engine stores the SID right after our lookup, before our commit.
        session.get(Message, row).provider_message_id = early_sid
        return outcome

    monkeypatch.setattr(tracking, "handle_callback", racing)
    resp = await post(client, callback("delivered", sid=early_sid))
    assert resp.status == 202
    assert state(engine, row)[0].status == "delivered"


def test_append_only_guard_allows_only_the_early_link(engine, campaign_file):
    seed(engine, campaign_file)
    with db.session_scope(engine) as session:
        event = events.record(
            session, source="webhook", kind="sent", applied=False, provider_message_id="SMx"
        )
        session.flush()
    with pytest.raises(AppendOnlyError), db.session_scope(engine) as session:
        session.get(Event, event.id).kind = "delivered"


async def test_resets_route_delegates_and_keeps_nothing_on_error(
    engine, campaign_file, client, monkeypatch
):
    seed(engine, campaign_file)
    calls = []

    def handle_webhook(session, settings_, body, signature, received_at=None):
        calls.append((body, signature, settings_.public_url))
        session.add(AuditRecord(actor="t", command="probe"))
        return (200, {"ok": True}) if signature == "sha256=good" else (409, {"error": "done"})

    monkeypatch.setattr("notify.server.handle_webhook", handle_webhook)
    resp = await client.post(
        "/webhooks/resets", data=b'{"token": "t"}', headers={"X-Notify-Signature": "sha256=bad"}
    )
    assert resp.status == 409 and await resp.json() == {"error": "done"}
    assert count(engine, AuditRecord) == 0  # rolled back
    resp = await client.post(
        "/webhooks/resets", data=b'{"token": "t"}', headers={"X-Notify-Signature": "sha256=good"}
    )
    assert resp.status == 200 and await resp.json() == {"ok": True}
    assert count(engine, AuditRecord) == 1
    assert calls[0] == (b'{"token": "t"}', "sha256=bad", PUBLIC)
    big = await client.post("/webhooks/resets", data=b"x" * (MAX_BODY + 1))
    assert big.status == 413 and len(calls) == 2


async def test_healthz(engine, tmp_path):
    async with TestClient(TestServer(make_app(engine, settings()))) as test_client:
        resp = await test_client.get("/healthz")
        assert resp.status == 200 and (await resp.json())["database"] == "ok"
    broken = db.make_engine(f"sqlite:///{tmp_path / 'missing' / 'no.db'}")
    async with TestClient(TestServer(make_app(broken, settings()))) as test_client:
        resp = await test_client.get("/healthz")
        assert resp.status == 503


def test_serve_binds_loopback_by_default_and_audits(env, monkeypatch):
    seen = {}

    def fake_serve(engine, settings_, host, port, announce=print):
        seen.update(host=host, port=port)

    monkeypatch.setattr("notify.server.serve", fake_serve)
    db.connect(env["NOTIFY_DATABASE_URL"])  # serve uses a database set up before
    result = CliRunner().invoke(main, ["serve"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen == {"host": "127.0.0.1", "port": 8080}
    assert "NOTIFY_PUBLIC_URL" in result.output  # warns that Twilio callbacks are refused
    result = CliRunner().invoke(
        main,
        ["--actor", "ops", "serve", "--host", "0.0.0.0", "--port", "9000"],
        catch_exceptions=False,
    )
    assert seen == {"host": "0.0.0.0", "port": 9000}
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        rows = list(session.scalars(select(AuditRecord).where(AuditRecord.command == "serve")))
    assert [(r.actor, r.arguments["port"]) for r in rows][-1] == ("ops", 9000)


@pytest.mark.parametrize("path", ["server", "deferred"])
def test_sqlite_callback_waits_for_a_concurrent_writer(
    sqlite_url, campaign_file, monkeypatch, path
):
    """A callback that reads, then writes while `notify send` writes: on SQLite the server
    must wait for the other writer (BEGIN IMMEDIATE), not fail on a stale snapshot as a
    plain deferred transaction does."""
    import threading
    import time

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from notify import server

    engine = db.make_engine(sqlite_url)  # PostgreSQL's row locks already make it wait
    db.upgrade(engine)
    row = seed(engine, campaign_file, status="sent")
    report = tracking.StatusReport(sid=SID, provider_status="delivered")
    real = tracking.handle_callback

    def slow(session, report, key=None):
        session.execute(select(Message.id)).all()  # a read: the snapshot starts here
        time.sleep(0.3)  # meanwhile the other writer commits
        return real(session, report, key)

    monkeypatch.setattr(tracking, "handle_callback", slow)
    other = db.writer(engine).connect()
    other.begin()
    other.execute(text("UPDATE messages SET attempts = attempts + 1 WHERE id <> :r"), {"r": row})
    outcome: list = []

    def callback() -> None:
        try:
            if path == "server":
                outcome.append(server._apply_callback(engine, report))
            else:
                with db.session_scope(engine) as session:
                    result = tracking.handle_callback(session, report)
                outcome.append(result)
        except OperationalError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=callback)
    worker.start()
    time.sleep(0.1)
    other.commit()
    other.close()
    worker.join(30)
    if path == "server":
        assert outcome[0]["status"] == "delivered", outcome
        assert state(engine, row)[0].status == "delivered"
    else:
        assert isinstance(outcome[0], OperationalError)
