"""POST /webhooks/resets on `notify serve`, end to end with the real resets module."""

from __future__ import annotations

import json

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from notify import db, resets
from notify.config import Settings
from notify.models import Event, PasswordReset
from notify.server import make_app
from tests.test_resets import add_contact, make_campaign

SECRET = "server-test-secret-of-at-least-32-bytes"


def seed_token(engine, campaign_file) -> str:
    with db.session_scope(engine) as session:
        campaign = make_campaign(session, campaign_file)
        contact = add_contact(session, campaign, "a")
        return resets.issue_token(session, campaign, contact.id, None)


def reset_state(engine) -> tuple[str, int]:
    with db.session_scope(engine) as session:
        status = session.scalar(select(PasswordReset.status))
        done = session.scalar(select(func.count()).select_from(Event)
                              .where(Event.kind == "reset_completed"))
        return status, done


async def test_signed_completion_is_committed_and_a_replay_is_409(engine, campaign_file):
    token = seed_token(engine, campaign_file)
    body = json.dumps({"token": token, "completed_at": "2026-11-25T10:00:00Z"}).encode()
    app = make_app(engine, Settings(webhook_secret=SECRET))
    async with TestClient(TestServer(app)) as client:
        for header in ({}, {"X-Notify-Signature": resets.signature_for("nope", body)}):
            resp = await client.post("/webhooks/resets", data=body, headers=header)
            assert resp.status == 403
            assert token not in await resp.text()
        assert reset_state(engine) == ("pending", 0)
        good = {"X-Notify-Signature": resets.signature_for(SECRET, body)}
        resp = await client.post("/webhooks/resets", data=body, headers=good)
        assert resp.status == 200
        answer = await resp.json()
        assert answer["status"] == "completed" and token not in json.dumps(answer)
        assert reset_state(engine) == ("completed", 1)
        replay = await client.post("/webhooks/resets", data=body, headers=good)
        assert replay.status == 409
        assert reset_state(engine) == ("completed", 1)
