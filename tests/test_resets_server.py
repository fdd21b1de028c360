"""POST /webhooks/resets on `notify serve`, end to end with the real resets module."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from notify import db
from notify.config import Settings
from notify.models import Event, PasswordReset
from notify.resets.tokens import issue_token
from notify.server import make_app, signature_for
from tests.test_resets import add_contact, make_campaign

SECRET = "server-test-secret-of-at-least-32-bytes"


RECEIVED = datetime(2026, 11, 25, 10, 2, tzinfo=UTC)  # the server's injected clock


def seed_token(engine, campaign_file, issued: datetime = RECEIVED - timedelta(days=1)) -> str:
    with db.session_scope(engine) as session:
        campaign = make_campaign(session, campaign_file)
        contact = add_contact(session, campaign, "a")
        return issue_token(session, campaign, contact.id, None, now=issued)


def reset_state(engine) -> tuple[str, int]:
    with db.session_scope(engine) as session:
        status = session.scalar(select(PasswordReset.status))
        done = session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "reset_completed")
        )
        return status, done


async def test_signed_completion_is_committed_and_a_replay_is_409(engine, campaign_file):
    token = seed_token(engine, campaign_file)
    body = json.dumps({"token": token, "completed_at": "2026-11-25T10:00:00Z"}).encode()
    app = make_app(engine, Settings(webhook_secret=SECRET), clock=lambda: RECEIVED)
    async with TestClient(TestServer(app)) as client:
        for header in ({}, {"X-Notify-Signature": signature_for("nope", body)}):
            resp = await client.post("/webhooks/resets", data=body, headers=header)
            assert resp.status == 403
            assert token not in await resp.text()
        assert reset_state(engine) == ("pending", 0)
        good = {"X-Notify-Signature": signature_for(SECRET, body)}
        resp = await client.post("/webhooks/resets", data=body, headers=good)
        assert resp.status == 200
        answer = await resp.json()
        assert answer["status"] == "completed" and token not in json.dumps(answer)
        assert reset_state(engine) == ("completed", 1)
        replay = await client.post("/webhooks/resets", data=body, headers=good)
        assert replay.status == 409
        assert reset_state(engine) == ("completed", 1)


# --- Completions are judged at receipt (issue 13) -------------------------------------------


async def _complete(engine, body: dict, clock: datetime) -> tuple[int, dict]:
    raw = json.dumps(body).encode()
    app = make_app(engine, Settings(webhook_secret=SECRET), clock=lambda: clock)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(
            "/webhooks/resets", data=raw, headers={"X-Notify-Signature": signature_for(SECRET, raw)}
        )
        return resp.status, await resp.json()


def stored_times(engine) -> tuple[datetime | None, datetime | None]:
    with db.session_scope(engine) as session:
        reset = session.scalar(select(PasswordReset))
        return reset.completed_at, reset.completion_received_at


async def test_a_backdated_completion_cannot_use_an_expired_link(engine, campaign_file):
    """The link expired an hour before receipt: a body claiming a time when it was still
    valid is 410 all the same (the example campaign's links last 14 days)."""
    issued = RECEIVED - timedelta(days=14, hours=1)
    token = seed_token(engine, campaign_file, issued=issued)
    claimed = RECEIVED - timedelta(hours=2)  # within the link's life
    status, answer = await _complete(
        engine, {"token": token, "completed_at": iso(claimed)}, RECEIVED
    )
    assert status == 410 and "expired" in answer["error"]
    status, _ = await _complete(  # further back into the link's life: too old to believe
        engine, {"token": token, "completed_at": iso(issued + timedelta(days=1))}, RECEIVED
    )
    assert status == 400
    assert reset_state(engine) == ("pending", 0)


@pytest.mark.parametrize(
    "offset, status, problem",
    [
        (timedelta(minutes=6), 400, "in the future"),
        (timedelta(minutes=4), 200, None),  # clock skew is tolerated
        (-timedelta(hours=23, minutes=59), 200, None),
        (-timedelta(hours=24, minutes=1), 400, "more than 24 hours before"),
        (-timedelta(days=365 * 56), 400, "more than 24 hours before"),  # 1970
    ],
)
async def test_completed_at_must_be_plausible_at_receipt(
    engine, campaign_file, offset, status, problem
):
    token = seed_token(engine, campaign_file, issued=RECEIVED - timedelta(days=3))
    claimed = RECEIVED + offset
    got, answer = await _complete(engine, {"token": token, "completed_at": iso(claimed)}, RECEIVED)
    assert got == status, answer
    if problem:
        assert problem in answer["error"]
        assert reset_state(engine) == ("pending", 0)
    else:
        assert stored_times(engine) == (claimed.replace(microsecond=0), RECEIVED)


async def test_completed_at_before_the_link_was_issued_is_400(engine, campaign_file):
    issued = RECEIVED - timedelta(hours=1)
    token = seed_token(engine, campaign_file, issued=issued)
    status, answer = await _complete(
        engine, {"token": token, "completed_at": iso(issued - timedelta(minutes=10))}, RECEIVED
    )
    assert status == 400 and "before this link was issued" in answer["error"]
    assert reset_state(engine) == ("pending", 0)
    status, _ = await _complete(engine, {"token": token, "completed_at": iso(issued)}, RECEIVED)
    assert status == 200


async def test_without_completed_at_the_receipt_time_is_both(engine, campaign_file):
    token = seed_token(engine, campaign_file)
    status, answer = await _complete(engine, {"token": token}, RECEIVED)
    assert status == 200 and answer["completed_at"] == iso(RECEIVED)
    assert stored_times(engine) == (RECEIVED, RECEIVED)
    with db.session_scope(engine) as session:
        event = session.scalar(select(Event).where(Event.kind == "reset_completed"))
        assert event.detail["received_at"] == iso(RECEIVED)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
