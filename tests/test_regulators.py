"""`notify report regulators`: a report per required regulator, counts.csv, no personal data."""

from __future__ import annotations

import csv
import json

from click.testing import CliRunner

from notify import db
from notify.models import Contact, Message
from tests.factories import campaign_toml, make_campaign

NAME = "acme-2026-11"
PEOPLE = [  # key, name, email, phone, state, exposures, reached
    ("MA-1", "Mara Quill", "mara.quill@example.com", "+16175550101", "MA", "identity;card", True),
    ("MA-2", "Otto Brandt", "otto.brandt@example.com", "+16175550102", "MA", "card", False),
    ("CT-1", "Ines Vaux", "ines.vaux@example.com", "+12035550103", "CT", "identity", True),
    ("TX-1", "Rudy Palk", "rudy.palk@example.com", "+15125550104", "TX", "card", False),
]


def run(*args):
    return CliRunner().invoke(main_cli(), list(args))


def main_cli():
    from notify.cli import main

    return main


def test_reports_for_each_required_regulator_with_counts_and_no_personal_data(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    with db.session_scope(engine) as session:
        for key, name, email, phone, state, kinds, reached in PEOPLE:
            contact = Contact(
                campaign_id=campaign.id,
                key=key,
                name=name,
                email=email,
                phone=phone,
                country="US",
                state=state,
                exposures=kinds,
                extra={"plan": "Gold"},
            )
            session.add(contact)
            session.flush()
            session.add(
                Message(
                    campaign_id=campaign.id,
                    contact_id=contact.id,
                    channel="email",
                    address=email,
                    status="sent" if reached else "bounced",
                    sent_at=campaign.created_at,
                )
            )
    out = tmp_path / "regs"
    result = run("report", "regulators", NAME, "-o", str(out), "--as-of", "2026-12-06", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.splitlines()[-1])
    assert summary["reports"] == [
        "US-CT-connecticut-attorney-general.md",
        "US-MA-massachusetts-attorney-general.md",
        "US-MA-massachusetts-office-of-consumer-affairs-and-business-regulation-director.md",
    ]  # Texas: 250 residents or more only
    names = {p.name for p in out.iterdir()}
    assert {f"{r[:-3]}.html" for r in summary["reports"]} <= names
    ma = (out / "US-MA-massachusetts-attorney-general.md").read_text()
    assert "Massachusetts: 2" in ma and "All jurisdictions: 4" in ma
    assert "- US-TX: 1" in ma
    assert "Residents sent a notice: 2 of 2" in ma and "Residents reached" in ma
    assert "Residents not reached yet: 1" in ma
    assert "Free credit monitoring offered: 24 months" in ma
    assert "The notice as sent (identity+card exposed)" in ma
    assert "right to obtain a police report" in ma  # the Massachusetts variant
    assert "sample copy of the consumer notice" in ma  # what the AG asks for
    html = (out / "US-MA-massachusetts-attorney-general.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<h2>What happened</h2>" in html
    assert "Dear [Name]," in html
    with open(out / "counts.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["jurisdiction", "residents", "notified", "reached", "unreached"]
    assert {
        r["jurisdiction"]: (r["residents"], r["notified"], r["reached"], r["unreached"])
        for r in rows
    } == {
        "US-MA": ("2", "2", "1", "1"),
        "US-CT": ("1", "1", "1", "0"),
        "US-TX": ("1", "1", "0", "1"),
    }
    everything = "".join(p.read_text() for p in out.iterdir())
    for key, name, email, phone, *_ in PEOPLE:
        for personal in (key, name, email, phone, name.split()[0], "Gold"):
            assert personal not in everything, personal


def test_an_unknown_campaign_writes_nothing(env, tmp_path):
    assert run("init").exit_code == 0
    out = tmp_path / "regs"
    result = run("report", "regulators", "nope", "-o", str(out))
    assert result.exit_code == 1 and "unknown campaign 'nope'" in result.output
    assert not out.exists()


def test_a_dash_for_the_folder_is_refused_not_created(env, tmp_path, monkeypatch):
    """Elsewhere `-o -` means standard output; a folder of reports cannot go there, and a
    folder named '-' is what nobody meant."""
    assert run("init").exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = run("report", "regulators", NAME, "-o", "-")
    assert result.exit_code == 2
    assert "-o -: the reports are several files; name a folder" in result.output
    assert not (tmp_path / "-").exists()
