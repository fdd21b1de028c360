"""`notify status`: counts by channel and status, reach, resets; a few aggregate queries.

``seed_sample`` builds the small campaign the lookup and export tests share.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import event

from notify import campaigns, db
from notify.cli import main
from notify.errors import NotFound
from notify.models import Contact, Event, Message, PasswordReset
from notify.status import campaign_status, format_status

T0 = datetime(2026, 11, 27, 10, 2, 3, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def seed_sample(engine, campaign_file) -> dict[str, int]:
    """Five contacts covering every reach class; returns contact ids by key.

    c1 reached by email (delivered), SMS failed 21610      reset completed
    c2 email bounced, SMS undelivered (not reached)        reset pending, link valid
    c3 email pending, SMS skipped (pending)
    c4 no message yet (pending)
    c5 email sent and SMS delivered (reached by both)      reset pending, link expired
    """
    ids: dict[str, int] = {}
    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, campaign_file)
        cid = campaign.id
        people = {
            "c1": ("Ann Example", "Ann.Example@example.com", "+14155550101", "identity;passwords"),
            "c2": (
                '=HYPERLINK("x")',
                "bob@xn--bcher-kva.example",
                "+14155550102",
                "card;passwords",
            ),
            "c3": ("Cy", "cy@example.com", None, "card"),
            "c4": ("Di", "di@example.com", "+14155550104", "identity"),
            "c5": ("Ed", "ed@example.com", "+14155550105", "passwords"),
        }
        for key, (name, email, phone, kinds) in people.items():
            contact = Contact(
                campaign_id=cid,
                key=key,
                name=name,
                email=email,
                phone=phone,
                exposures=kinds,
                country="US",
                state="CA",
            )
            session.add(contact)
            session.flush()
            ids[key] = contact.id

        def msg(key, channel, status, **kw):
            contact = session.get(Contact, ids[key])
            row = Message(
                campaign_id=cid,
                contact_id=ids[key],
                channel=channel,
                status=status,
                address=contact.email if channel == "email" else contact.phone,
                template=f"passwords/{channel}",
                attempts=1,
                **kw,
            )
            session.add(row)
            session.flush()
            session.add(
                Event(
                    campaign_id=cid,
                    message_id=row.id,
                    contact_id=ids[key],
                    at=kw.get("first_attempt_at") or T0,
                    source="send",
                    kind=status,
                    detail={"note": "seed"},
                )
            )
            return row

        msg(
            "c1",
            "email",
            "delivered",
            provider_message_id="<1@acme.example>",
            first_attempt_at=T0,
            sent_at=T0,
            delivered_at=T0,
            content_sha256="ab" * 32,
            template_version="cd" * 32,
            transport="smtp:relay.acme.example",
        )
        msg(
            "c1",
            "sms",
            "failed",
            provider_message_id="SM1",
            error_code="21610",
            error_message="opted out",
            first_attempt_at=T0 + timedelta(minutes=1),
        )
        msg(
            "c2",
            "email",
            "bounced",
            provider_message_id="<2@acme.example>",
            error_code="5.1.1",
            error_message="=cmd|' /C calc'!A0",
            sent_at=T0,
        )
        msg(
            "c2",
            "sms",
            "undelivered",
            provider_message_id="SM2",
            error_code="30003",
            error_message="unreachable handset",
            sent_at=T0,
        )
        msg("c3", "email", "pending")
        msg("c3", "sms", "skipped", skip_reason="no phone")
        msg("c5", "email", "sent", provider_message_id="<5@acme.example>", sent_at=T0)
        msg(
            "c5",
            "sms",
            "delivered",
            provider_message_id="SM5",
            sent_at=T0,
            delivered_at=T0 + timedelta(seconds=9),
        )
        session.add_all(
            [
                PasswordReset(
                    campaign_id=cid,
                    contact_id=ids["c1"],
                    status="completed",
                    completed_at=T0 + timedelta(hours=3),
                    completed_via="webhook",
                    links_sent=1,
                    link_expires_at=T0 + timedelta(days=14),
                ),
                PasswordReset(
                    campaign_id=cid,
                    contact_id=ids["c2"],
                    status="pending",
                    links_sent=2,
                    link_expires_at=NOW + timedelta(days=3),
                ),
                PasswordReset(
                    campaign_id=cid,
                    contact_id=ids["c5"],
                    status="pending",
                    links_sent=1,
                    link_expires_at=NOW - timedelta(days=1),
                ),
            ]
        )
    return ids


def test_status_counts_reach_and_resets(engine, campaign_file):
    seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        report = campaign_status(session, "acme-2026-11", now=NOW)
    assert report["contacts"] == 5
    assert report["messages"]["email"] | {} == {
        "pending": 1,
        "sending": 0,
        "sent": 1,
        "delivered": 1,
        "failed": 0,
        "bounced": 1,
        "undelivered": 0,
        "skipped": 0,
    }
    assert {k: v for k, v in report["messages"]["sms"].items() if v} == {
        "failed": 1,
        "undelivered": 1,
        "skipped": 1,
        "delivered": 1,
    }
    assert list(report["messages"]) == ["email", "sms"]
    assert report["totals"] == {"email": 4, "sms": 4}
    reach = report["reach"]
    assert (reach["reached"], reach["not_reached"], reach["pending"]) == (2, 1, 2)
    assert reach["reached_pct"] == 40.0
    assert report["resets"] == {
        "total": 3,
        "pending": 1,
        "completed": 1,
        "expired": 1,
        "completed_pct": 33.3,
    }


def _count_statements(engine):
    statements = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda *args: args[2] != "BEGIN" and statements.append(args[2]),
    )
    return statements


def test_status_is_a_few_aggregate_queries_whatever_the_size(engine, campaign_file):
    seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        statements = _count_statements(engine)
        campaign_status(session, "acme-2026-11", now=NOW)
        small = len(statements)
        cid = campaigns.get_campaign(session, "acme-2026-11").id
        for n in range(200):
            contact = Contact(
                campaign_id=cid, key=f"x{n}", email=f"x{n}@example.com", exposures="card"
            )
            session.add(contact)
            session.flush()
            session.add(
                Message(
                    campaign_id=cid,
                    contact_id=contact.id,
                    channel="email",
                    status="sent",
                    address=contact.email,
                )
            )
        session.flush()
        statements.clear()
        report = campaign_status(session, "acme-2026-11", now=NOW)
        assert len(statements) == small <= 6
        assert report["reach"]["reached"] == 202
        assert all(s.lstrip().upper().startswith("SELECT") for s in statements)


def test_status_of_an_empty_campaign(engine, campaign_file):
    with db.session_scope(engine) as session:
        campaigns.load_campaign(session, campaign_file)
        report = campaign_status(session, "acme-2026-11")
    assert report["contacts"] == 0 and report["messages"] == {}
    assert report["resets"]["completed_pct"] == 0.0
    assert any("No messages yet" in line for line in format_status(report))


def test_unknown_campaign(engine):
    with pytest.raises(NotFound), db.session_scope(engine) as session:
        campaign_status(session, "nope")


def test_status_cli_text_and_json(env, campaign_file):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    seed_sample(engine, campaign_file)
    runner = CliRunner()
    result = runner.invoke(main, ["status", "acme-2026-11"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(
        r"Campaign acme-2026-11: 5 contacts "
        r"\(as of \d{4}-\d\d-\d\d \d\d:\d\d UTC\)",
        lines[0],
    )
    assert any(line.split()[:3] == ["first", "notice", "email"] for line in lines)
    assert "Reached:     2 (40.0%)" in result.output
    assert "Not reached: 1 (20.0%)" in result.output
    assert "notify export unreached acme-2026-11" in result.output
    assert "Resets:      1 of 3 completed (33.3%)" in result.output
    result = runner.invoke(main, ["status", "acme-2026-11", "--json"], catch_exceptions=False)
    assert len(result.output.strip().splitlines()) == 1
    data = json.loads(result.output)
    assert data["reach"]["reached"] == 2 and data["messages"]["sms"]["delivered"] == 1
    assert data["database"] == db.describe(env["NOTIFY_DATABASE_URL"])
    assert lines[-1] == f"Database:    {db.describe(env['NOTIFY_DATABASE_URL'])}"
    bad = runner.invoke(main, ["status", "nope"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: unknown campaign 'nope'")
    assert "Traceback" not in bad.output
