"""`notify plan`: the arithmetic of messages, segments, time, cost and deadlines."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from click.testing import CliRunner

from notify import db, plan
from notify.models import Contact, Message
from tests.factories import campaign_toml, make_campaign

NAME = "acme-2026-11"
# 200 x "A", a space, then the 36-character support URL: 237 GSM-7 characters = 2 segments.
TWO_SEGMENTS = '{{ "A" * 200 }} {{ campaign.support_url }}\n'


def setup(engine, tmp_path, n=300, **changes):
    folder = tmp_path / "notices" / "card"
    folder.mkdir(parents=True)
    (folder / "sms.txt.j2").write_text(TWO_SEGMENTS)
    changes.setdefault("prices", '{ email = 0.001, sms_segment = 0.01, currency = "EUR" }')
    path = campaign_toml(
        tmp_path, templates='"notices"', email_per_second="20", sms_per_second="2", **changes
    )
    campaign = make_campaign(engine, path)
    with db.session_scope(engine) as session:
        session.add_all(
            Contact(
                campaign_id=campaign.id,
                key=f"K{i}",
                email=f"u{i}@example.com",
                phone=f"+1415555{i:04d}",
                country="US",
                state="CA",
                exposures="card",
                extra={},
            )
            for i in range(n)
        )
        # 20 more with an email only: they count for email, not SMS.
        session.add_all(
            Contact(
                campaign_id=campaign.id,
                key=f"E{i}",
                email=f"e{i}@example.com",
                country="US",
                state="CA",
                exposures="card",
                extra={},
            )
            for i in range(20)
        )
    return campaign


def test_messages_segments_time_cost_and_sender_limits(engine, tmp_path):
    setup(engine, tmp_path)
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    with db.session_scope(engine) as session:
        result = plan.make_plan(session, NAME, start)
    email, sms = result.channels
    assert (email.channel, email.messages, email.seconds) == ("email", 320, 16.0)
    assert round(email.cost, 6) == 0.32
    assert (sms.messages, sms.segments, sms.seconds) == (300, 600, 150.0)
    assert sms.seconds_at == {"long_code": 600.0, "toll_free": 200.0, "short_code": 6.0}
    assert round(sms.cost, 6) == 6.0
    assert round(result.cost, 6) == 6.32 and result.currency == "EUR"
    # The example's sender is a long code: 2/s x 2 segments = 4 segments/s > 1/s allowed,
    # so the carrier holds SMS to 600 s, and that is when sending finishes.
    assert result.sender_type == "long_code"
    assert any(
        "4.00 segments/s is more than this campaign's sender (a long code) allows "
        "(1/s): lower sms_per_second to 0.5" in w
        for w in result.warnings
    )
    assert result.finish == datetime(2026, 12, 1, 9, 10, tzinfo=UTC)
    ca = next(d for d in result.deadlines if d["code"] == "US-CA")
    assert ca == {
        "code": "US-CA",
        "notice_deadline": "2026-12-22",
        "met": True,
        "days_to_spare": 21,
    }


def test_a_finish_after_a_deadline_is_a_warning_and_sent_rows_do_not_count(engine, tmp_path):
    campaign = setup(engine, tmp_path, n=10, sms_from='"+18005550100"')  # toll-free
    with db.session_scope(engine) as session:
        first = session.query(Contact).filter_by(key="K0").one()
        session.add(
            Message(
                campaign_id=campaign.id,
                contact_id=first.id,
                channel="sms",
                status="sent",
                address=first.phone,
            )
        )
    start = datetime(2026, 12, 22, 23, 59, 55, tzinfo=UTC)
    with db.session_scope(engine) as session:
        result = plan.make_plan(session, NAME, start)
    sms = result.channels[1]
    assert (sms.messages, sms.segments) == (9, 18)
    assert result.sender_type == "toll_free"  # 4 segments/s > 3/s: held to 6 s
    assert result.finish == datetime(2026, 12, 23, 0, 0, 1, tzinfo=UTC)
    ca = next(d for d in result.deadlines if d["code"] == "US-CA")
    assert ca["met"] is False and ca["days_to_spare"] == -1
    assert any(
        "US-CA: sending finishes 2026-12-23, 1 day(s) after the notice deadline" in w
        for w in result.warnings
    )


def test_plan_command_json(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    setup(engine, tmp_path, n=5, sms_from='"MG' + "0" * 32 + '"')
    result = CliRunner().invoke(plan_cli(), ["plan", NAME, "--start", "2026-12-01T09:00", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.splitlines()[-1])
    assert data["channels"]["sms"] == {
        "messages": 5,
        "rate_per_second": 2.0,
        "seconds": 2.5,
        "cost": 0.1,
        "segments": 10,
        "seconds_at_sender_limits": {"long_code": 10.0, "toll_free": 3.3, "short_code": 0.1},
        "seconds_at_sender": 2.5,
    }
    assert data["sender_type"] is None and data["cost"] == 0.125 and data["currency"] == "EUR"
    # A Messaging Service's senders are unknown: each type the rate exceeds is named.
    assert sum("is more than a " in w for w in data["warnings"]) == 2
    text = CliRunner().invoke(plan_cli(), ["plan", NAME, "--start", "2026-12-01T09:00"])
    assert "sms: 5 message(s), 10 segment(s), 3 s at 2/s, 0.10 EUR" in text.output
    assert "US-CA: notice deadline 2026-12-22: 21 day(s) to spare" in text.output


def plan_cli():
    from notify.cli import main

    return main


def test_plan_warns_about_monitoring_codes(engine, tmp_path):
    from notify import codes
    from notify.campaigns import get_campaign

    campaign = setup(engine, tmp_path, n=3)
    with db.session_scope(engine) as session:
        for contact in session.query(Contact).filter_by(campaign_id=campaign.id):
            contact.exposures = "identity"
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    with db.session_scope(engine) as session:
        warnings = plan.make_plan(session, NAME, start).warnings
    assert any(
        "23 contact(s) with identity data exposed will be offered monitoring through "
        "the enroll_url without a personal code" in w
        for w in warnings
    )
    path = tmp_path / "codes.csv"
    path.write_text("code\nA\nB\n")
    with db.session_scope(engine) as session:
        codes.import_codes(session, get_campaign(session, NAME), path)
    with db.session_scope(engine) as session:
        warnings = plan.make_plan(session, NAME, start).warnings
    assert any("2 free code(s) for 23 contact(s): send will refuse to start" in w for w in warnings)
