"""`notify lookup`: one customer by key, email (any case, IDNA) or phone (any format)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from notify import campaigns, db, lookup
from notify.cli import main
from notify.models import Contact, PasswordReset
from tests.test_status import NOW, seed_sample


def find(engine, query, campaign=None):
    with db.session_scope(engine) as session:
        return lookup.lookup(session, query, campaign, now=NOW)


@pytest.mark.parametrize(
    "query",
    [
        "c1",
        "Ann.Example@example.com",
        "ann.example@EXAMPLE.COM",
        "ANN.EXAMPLE@Example.Com ",
        "aNn.ExAmPlE@example.com",
        "(415) 555-0101",
        "+1 415-555-0101",
        "4155550101",
        "415.555.0101",
    ],
)
def test_finds_by_key_email_any_case_and_phone_any_format(engine, campaign_file, query):
    seed_sample(engine, campaign_file)
    result = find(engine, query)
    assert result["matches"] == 1
    assert result["contacts"][0]["key"] == "c1"


def test_internationalized_domain_is_matched_in_idna_form(engine, campaign_file):
    seed_sample(engine, campaign_file)
    assert find(engine, "bob@BÜCHER.example")["contacts"][0]["key"] == "c2"


def test_reached_contact_verdict_messages_timeline_and_reset(engine, campaign_file):
    seed_sample(engine, campaign_file)
    contact = find(engine, "c1")["contacts"][0]
    assert contact["verdict"] == (
        "Reached by email on 2026-11-27 10:02 UTC (delivered); SMS failed (21610 opted out)"
    )
    assert contact["reached"] is True
    assert contact["exposures"] == ["identity", "passwords"]
    assert [(m["channel"], m["status"]) for m in contact["messages"]] == [
        ("email", "delivered"),
        ("sms", "failed"),
    ]
    assert contact["messages"][0]["timeline"][0]["source"] == "send"
    assert contact["messages"][0]["delivered_at"] == "2026-11-27T10:02:03Z"
    assert contact["reset"] == {
        "status": "completed",
        "completed_at": "2026-11-27T13:02:03Z",
        "completed_via": "webhook",
        "links_sent": 1,
        "link_expires_at": "2026-12-11T10:02:03Z",
    }


@pytest.mark.parametrize(
    "key, expected",
    [
        (
            "c2",
            "NOT reached: email bounced (5.1.1 =cmd|' /C calc'!A0); "
            "SMS undelivered (30003 unreachable handset)",
        ),
        ("c3", "Not reached yet: email pending (not sent yet); SMS skipped (no phone)"),
        ("c4", "Not contacted yet: no message planned (notify send has not run for them)."),
        (
            "c5",
            "Reached by email on 2026-11-27 10:02 UTC (sent); "
            "also SMS delivered on 2026-11-27 10:02 UTC",
        ),
    ],
)
def test_verdicts(engine, campaign_file, key, expected):
    seed_sample(engine, campaign_file)
    assert find(engine, key)["contacts"][0]["verdict"] == expected


def test_expired_reset_and_no_reset(engine, campaign_file):
    seed_sample(engine, campaign_file)
    assert find(engine, "c5")["contacts"][0]["reset"]["status"] == "expired"
    assert find(engine, "c2")["contacts"][0]["reset"]["status"] == "pending"
    assert find(engine, "c3")["contacts"][0]["reset"] is None


def test_same_person_in_two_campaigns_and_campaign_filter(engine, campaign_file, tmp_path):
    seed_sample(engine, campaign_file)
    other = tmp_path / "other.toml"
    other.write_text(campaign_file.read_text().replace('"acme-2026-11"', '"acme-2027-01"'))
    with db.session_scope(engine) as session:
        second, _ = campaigns.load_campaign(session, other)
        session.add(
            Contact(
                campaign_id=second.id, key="z9", email="ann.example@example.com", exposures="card"
            )
        )
    for query in ("ann.example@example.com", "Ann.Example@example.com"):
        both = find(engine, query)
        assert {c["campaign"] for c in both["contacts"]} == {"acme-2026-11", "acme-2027-01"}
    assert find(engine, "aNN.exAMPLE@example.com")["matches"] == 2
    assert find(engine, "z9", "acme-2027-01")["contacts"][0]["key"] == "z9"
    assert find(engine, "c1", "acme-2027-01")["matches"] == 0


def test_unknown_query_is_an_answer_with_no_match(engine, campaign_file):
    seed_sample(engine, campaign_file)
    for query in ("nobody@example.com", "+1 212 555 0199", "no-such-key"):
        assert find(engine, query) == {
            "query": query,
            "campaign": None,
            "matches": 0,
            "contacts": [],
        }


def test_lookup_cli_prints_verdict_first_and_json(env, campaign_file):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    seed_sample(engine, campaign_file)
    runner = CliRunner()
    result = runner.invoke(main, ["lookup", "ANN.example@example.com"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "Reached by email on 2026-11-27 10:02 UTC (delivered); SMS failed (21610 opted out)"
    )
    assert lines[1].startswith("Contact: Ann Example (key c1, campaign acme-2026-11)")
    assert (
        "Reset: completed, 1 link(s) sent, completed 2026-11-27 13:02 UTC via webhook"
        in result.output
    )
    assert any("SMS notice: failed to +14155550101 (21610 opted out)" in line for line in lines)
    assert (
        "  email notice: delivered to Ann.Example@example.com via smtp:relay.acme.example;"
        " attempts 1; id <1@acme.example>"
    ) in lines
    assert any("send" in line and "delivered" in line for line in lines if line.startswith(" "))
    result = runner.invoke(
        main,
        ["lookup", "(415) 555-0105", "--campaign", "acme-2026-11", "--json"],
        catch_exceptions=False,
    )
    data = json.loads(result.output)
    assert data["matches"] == 1 and data["contacts"][0]["key"] == "c5"
    assert data["database"] == db.describe(env["NOTIFY_DATABASE_URL"])
    assert lines[-1] == f"(read from database {db.describe(env['NOTIFY_DATABASE_URL'])})"
    missing = runner.invoke(main, ["lookup", "ghost@example.com"])
    assert missing.exit_code == 1
    # An answer on stdout, not an error, and not a "not notified": this database has no record.
    assert missing.stdout.strip() == (
        f"No contact in {db.describe(env['NOTIFY_DATABASE_URL'])} matches "
        "'ghost@example.com' (searched key, email and phone): this database has no record "
        "of them; check the spelling, or the database (--db or NOTIFY_DATABASE_URL)."
    )
    assert "Error" not in missing.output
    as_json = runner.invoke(main, ["lookup", "ghost@example.com", "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["matches"] == 0
    bad = runner.invoke(main, ["lookup", "c1", "--campaign", "nope"])
    assert bad.exit_code == 1 and "unknown campaign 'nope'" in bad.output


@pytest.mark.parametrize("query", ["", "   "])
def test_an_empty_query_is_a_usage_error_not_an_answer(env, query):
    """`notify lookup "$KEY"` with KEY unset must not answer "no contact matches ''"."""
    db.connect(env["NOTIFY_DATABASE_URL"])
    result = CliRunner().invoke(main, ["lookup", query])
    assert result.exit_code == 2
    assert "QUERY is empty: give a key, an email or a phone number" in result.output
    assert "No contact" not in result.output


def test_reset_status_is_judged_by_the_one_rule_at_the_injected_time(engine, campaign_file):
    """Lookup selects the status through state.status_expression at its ``now``: pending
    just before the newest link lapses, expired just after."""
    seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        expires = session.scalar(
            select(PasswordReset.link_expires_at)
            .join(Contact, Contact.id == PasswordReset.contact_id)
            .where(Contact.key == "c5")
        )
        for now, expected in (
            (expires - timedelta(seconds=1), "pending"),
            (expires + timedelta(seconds=1), "expired"),
        ):
            reset = lookup.lookup(session, "c5", now=now)["contacts"][0]["reset"]
            assert reset["status"] == expected
