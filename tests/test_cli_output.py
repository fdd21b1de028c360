"""List output (--format table|csv|json) and times on screen (--local, NOTIFY_TIMEZONE)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from notify import db, localtime
from notify.cli import main
from notify.errors import ConfigError
from notify.models import AuditRecord

WINTER = datetime(2026, 11, 27, 10, 2, 3, tzinfo=UTC)
SUMMER = datetime(2026, 7, 1, 10, 2, 3, tzinfo=UTC)


def run(*args, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)


@pytest.fixture
def trail(env, campaign_file):
    """A loaded campaign and two audit records at known times (the clock injected)."""
    run("campaign", "load", str(campaign_file))
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        session.add(
            AuditRecord(
                at=WINTER,
                actor="ann",
                command="send",
                campaign="acme-2026-11",
                arguments={"limit": 5},
                counts={"sent": 5},
                outcome="ok",
            )
        )
        session.add(
            AuditRecord(
                at=SUMMER,
                actor="=cmd()",
                command="init",
                campaign=None,
                arguments={},
                counts={},
                outcome="ok",
            )
        )
    return env


def test_campaign_list_formats_have_a_header(trail):
    table = run("campaign", "list").output.splitlines()
    assert table[0].split() == ["name", "organization", "channels", "updated_at"]
    assert table[1].split()[:4] == ["acme-2026-11", "Acme", "Corp", "email,"]
    rows = list(csv.DictReader(io.StringIO(run("campaign", "list", "--format", "csv").output)))
    assert [r["name"] for r in rows] == ["acme-2026-11"]
    assert rows[0]["channels"] == "email;sms"
    assert rows[0]["updated_at"].endswith("Z") and "T" in rows[0]["updated_at"]
    assert (
        run("campaign", "list", "--csv").output == run("campaign", "list", "--format", "csv").output
    )
    data = json.loads(run("campaign", "list", "--format", "json").output)
    assert data[0]["channels"] == ["email", "sms"]
    assert (
        run("campaign", "list", "--json").output
        == run("campaign", "list", "--format", "json").output
    )


def test_empty_list_table_says_so_csv_keeps_header(env):
    db.connect(env["NOTIFY_DATABASE_URL"])  # a database with no campaign yet
    assert "No campaigns yet" in run("campaign", "list").output
    assert (
        run("campaign", "list", "--csv").stdout_bytes
        == b"name,organization,channels,updated_at\r\n"
    )
    assert json.loads(run("campaign", "list", "--json").output) == []


def test_audit_csv_is_utc_and_neutralized_table_in_chosen_zone(trail, monkeypatch):
    rows = list(csv.DictReader(io.StringIO(run("audit", "--format", "csv").output)))
    assert list(rows[0]) == [
        "id",
        "at",
        "actor",
        "command",
        "campaign",
        "outcome",
        "arguments",
        "counts",
    ]
    send, init = rows[1], rows[2]
    assert send["at"] == "2026-11-27T10:02:03Z" and init["at"] == "2026-07-01T10:02:03Z"
    assert send["counts"] == '{"sent":5}'
    assert init["actor"] == "'=cmd()"  # a spreadsheet must not run it
    monkeypatch.setenv("NOTIFY_TIMEZONE", "Europe/Berlin")
    table = run("audit").output
    assert re.search(r"2026-11-27 11:02 CET +ann ", table)
    assert re.search(r"2026-07-01 12:02 CEST +=cmd\(\) ", table)
    # Files and JSON stay UTC whatever the screen zone.
    assert (
        list(csv.DictReader(io.StringIO(run("audit", "--csv").output)))[1]["at"]
        == "2026-11-27T10:02:03Z"
    )
    records = json.loads(run("audit", "--json").output)["records"]
    assert records[1]["at"] == "2026-11-27T10:02:03Z"


def test_local_flag_uses_the_machine_zone(trail, monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    assert re.search(r"2026-11-27 10:02 UTC +ann ", run("audit").output)
    assert re.search(r"2026-11-27 05:02 EST +ann ", run("audit", "--local").output)


def test_two_formats_or_a_bad_zone_are_one_line_errors(trail, monkeypatch):
    both = CliRunner().invoke(main, ["audit", "--csv", "--json"])
    assert both.exit_code == 2 and "choose one output format, not csv and json" in both.output
    monkeypatch.setenv("NOTIFY_TIMEZONE", "Mars/Olympus")
    bad = CliRunner().invoke(main, ["audit"])
    assert bad.exit_code == 1
    assert bad.output.strip() == (
        "Error: NOTIFY_TIMEZONE: 'Mars/Olympus' is not a time zone "
        "(use an IANA name such as Europe/Berlin or America/New_York)"
    )


def test_show_and_iso():
    berlin = localtime.named_zone("Europe/Berlin")
    assert localtime.show(WINTER) == "2026-11-27 10:02 UTC"
    assert localtime.show("2026-11-27T10:02:03Z", berlin) == "2026-11-27 11:02 CET"
    assert localtime.show(WINTER.replace(tzinfo=None), berlin) == "2026-11-27 11:02 CET"
    assert localtime.show(None) == "-"
    assert localtime.iso_utc(WINTER.astimezone(berlin)) == "2026-11-27T10:02:03Z"
    assert localtime.screen_zone(False, {}) is UTC
    assert localtime.screen_zone(False, {"NOTIFY_TIMEZONE": "Asia/Tokyo"}) == localtime.named_zone(
        "Asia/Tokyo"
    )
    assert localtime.screen_zone(True, {"TZ": "Asia/Tokyo"}).key == "Asia/Tokyo"
    with pytest.raises(ConfigError, match="NOTIFY_TIMEZONE: 'nope'"):
        localtime.screen_zone(False, {"NOTIFY_TIMEZONE": "nope"})


def test_lookup_and_status_show_times_in_the_chosen_zone(env, campaign_file, monkeypatch):
    from tests.test_status import seed_sample  # messages at a fixed time (the clock injected)

    seed_sample(db.connect(env["NOTIFY_DATABASE_URL"]), campaign_file)
    utc = run("lookup", "ANN.example@example.com").output.splitlines()
    assert utc[0].startswith("Reached by email on 2026-11-27 10:02 UTC (delivered)")
    monkeypatch.setenv("NOTIFY_TIMEZONE", "America/Los_Angeles")
    local = run("lookup", "ANN.example@example.com").output
    lines = local.splitlines()
    assert lines[0].startswith("Reached by email on 2026-11-27 02:02 PST (delivered)")
    assert "completed 2026-11-27 05:02 PST via webhook" in local
    assert any(line.strip().startswith("2026-11-27 02:02 PST  send") for line in lines)
    assert "UTC" not in local
    data = json.loads(run("lookup", "ANN.example@example.com", "--json").output)
    assert data["contacts"][0]["verdict"].startswith("Reached by email on 2026-11-27 10:02 UTC")
    assert data["contacts"][0]["messages"][0]["sent_at"] == "2026-11-27T10:02:03Z"
    status = run("status", "acme-2026-11").output.splitlines()[0]
    assert re.fullmatch(r"Campaign acme-2026-11: 5 contacts \(as of .* P[SD]T\)", status)
