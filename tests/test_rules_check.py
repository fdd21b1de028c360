"""`notify rules check`: deadlines, regulators, monitoring and notice variants by jurisdiction.

The clock is always given (``as_of`` / ``--as-of``): nothing here depends on today's date.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date

import pytest
from click.testing import CliRunner

from notify import campaigns, db, rules
from notify.cli import main
from notify.models import Contact
from notify.rules.check import add_business_days, check_campaign, notice_deadline
from tests.factories import campaign_toml

EXAMPLE = campaigns.parse_campaign_file(
    campaigns.Path(__file__).parent.parent / "campaigns" / "example.toml"
)


def config(discovered: str = "2026-03-02", determined: str = "", delay: str = ""):
    return replace(
        EXAMPLE,
        discovered_date=discovered,
        determined_date=determined,
        law_enforcement_delay_until=delay,
    )


@pytest.mark.parametrize(
    ("code", "days", "counted_from"),
    [
        ("US-CA", 30, "discovery"),
        ("US-CO", 30, "determination"),
        ("US-FL", 30, "determination"),
        ("US-WA", 30, "discovery"),
        ("US-NY", 30, "discovery"),
        ("US-AZ", 45, "determination"),
        ("US-IN", 45, "discovery"),
        ("US-TX", 60, "determination"),
        ("US-CT", 60, "discovery"),
    ],
)
def test_deadlines(code, days, counted_from):
    found = rules.get(code)
    # Discovered March 2, determined March 9: each counts from its own date.
    deadline, _ = notice_deadline(found, config("2026-03-02", "2026-03-09"))
    base = date(2026, 3, 2) if counted_from == "discovery" else date(2026, 3, 9)
    assert deadline == date.fromordinal(base.toordinal() + days)


def test_california_has_30_days_only_from_2026():
    ca = rules.get("US-CA")
    assert notice_deadline(ca, config("2026-01-01"))[0] == date(2026, 1, 31)
    deadline, notes = notice_deadline(ca, config("2025-12-31"))
    assert deadline is None and "from 2026-01-01" in notes[0]


def test_determination_falls_back_to_discovery_and_says_so():
    deadline, notes = notice_deadline(rules.get("US-TX"), config("2026-03-02"))
    assert deadline == date(2026, 5, 1) and "determined_date is not set" in notes[0]


def test_a_law_enforcement_delay_moves_the_deadline_where_the_law_allows_it():
    assert notice_deadline(rules.get("US-WA"), config(delay="2026-05-15"))[0] == date(2026, 5, 15)
    assert notice_deadline(rules.get("US-WA"), config(delay="2026-03-10"))[0] == date(2026, 4, 1)


def test_business_days_skip_weekends():
    assert add_business_days(date(2026, 12, 4), 1) == date(2026, 12, 7)  # Friday -> Monday
    assert add_business_days(date(2026, 12, 1), 14) == date(2026, 12, 21)


# --- the command -------------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(main, list(args))


RESIDENTS = [  # key, country, state, exposures
    ("ca-1", "US", "CA", "passwords"),
    ("ca-2", "US", "CA", "identity"),
    ("ct-1", "US", "CT", "identity"),
    ("ma-1", "US", "MA", "identity;card"),
    ("il-1", "US", "Illinois", "card"),
    ("tx-1", "USA", "TX", "card"),
    ("fr-1", "France", None, "passwords"),
    ("nowhere", None, None, "card"),
]


@pytest.fixture
def loaded(env, tmp_path):
    def load(**changes):
        path = campaign_toml(tmp_path, **changes)
        assert run("campaign", "load", str(path)).exit_code == 0
        engine = db.connect(env["NOTIFY_DATABASE_URL"])
        with db.session_scope(engine) as session:
            campaign = campaigns.get_campaign(session, "acme-2026-11")
            if not session.query(Contact).filter_by(campaign_id=campaign.id).count():
                session.add_all(
                    Contact(
                        campaign_id=campaign.id,
                        key=k,
                        email=f"{k}@example.com",
                        country=c,
                        state=s,
                        exposures=e,
                        extra={},
                    )
                    for k, c, s, e in RESIDENTS
                )
        return engine

    return load


def by_code(report: dict) -> dict:
    return {j["code"]: j for j in report["jurisdictions"]}


def test_json_report_shape_deadlines_and_regulators(loaded):
    loaded(discovered_date='"2026-11-22"', determined_date='"2026-11-23"')
    result = run("rules", "check", "acme-2026-11", "--as-of", "2026-12-06", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])
    assert set(report) == {"campaign", "as_of", "jurisdictions"}
    assert report["as_of"] == "2026-12-06"
    found = by_code(report)
    for entry in found.values():
        assert set(entry) == {
            "code",
            "residents",
            "notice_deadline",
            "days_left",
            "regulators",
            "monitoring_months_required",
            "variant",
            "problems",
        }
    assert set(found) == {"US-CA", "US-CT", "US-MA", "US-IL", "US-TX", "EU", "unknown"}
    assert (
        found["US-CA"]["residents"],
        found["US-CA"]["notice_deadline"],
        found["US-CA"]["days_left"],
    ) == (2, "2026-12-22", 16)
    assert found["US-TX"]["notice_deadline"] == "2027-01-22"  # 60 days from determination
    assert found["US-CT"]["notice_deadline"] == "2027-01-21"  # 60 days from discovery
    assert found["US-MA"]["notice_deadline"] is None and found["US-MA"]["days_left"] is None
    assert found["unknown"]["residents"] == 1
    ma = {r["name"]: r for r in found["US-MA"]["regulators"]}
    assert ma["Massachusetts Attorney General"]["required"] is True
    ct = found["US-CT"]["regulators"][0]
    assert ct["required"] is True and ct["due"] == "2027-01-21"  # no later than the notice
    ca_ag = found["US-CA"]["regulators"][0]
    assert ca_ag["required"] is False  # more than 500 residents only
    eu = found["EU"]["regulators"][0]
    assert eu["required"] is True and eu["due"] == "2026-11-25"  # 72 hours
    assert found["US-CT"]["monitoring_months_required"] == 24
    assert found["US-MA"]["monitoring_months_required"] == 18
    assert found["US-IL"]["monitoring_months_required"] == 0
    assert found["US-MA"]["variant"] == "US-MA" and found["US-IL"]["variant"] == "US-IL"
    assert found["US-CA"]["variant"] == "US-CA+US-CA-credentials"
    assert all(not j["problems"] for j in report["jurisdictions"])


def test_a_passed_deadline_with_residents_not_reached_exits_1(loaded):
    loaded()
    before = run("rules", "check", "acme-2026-11", "--as-of", "2026-12-22")
    assert before.exit_code == 0, before.output
    assert "US-CA California: 2 resident(s)" in before.output
    assert "notice deadline: 2026-12-22 (0 day(s) left)" in before.output
    assert "notice variant: US-MA (the campaign's notices meet it)" in before.output
    after = run("rules", "check", "acme-2026-11", "--as-of", "2026-12-23", "--json")
    assert after.exit_code == 1
    found = by_code(json.loads(after.output.splitlines()[-1]))
    assert found["US-CA"]["days_left"] == -1
    assert "has passed and 2 resident(s) are not reached" in found["US-CA"]["problems"][0]
    assert not found["US-TX"]["problems"]


def test_no_credit_monitoring_is_a_problem_where_the_law_requires_it(loaded, tmp_path):
    engine = loaded()
    text = (tmp_path / "campaign.toml").read_text()
    no_offer = "\n".join(
        line for line in text.splitlines() if not line.startswith("credit_monitoring")
    )
    (tmp_path / "campaign.toml").write_text(no_offer)
    assert run("campaign", "load", str(tmp_path / "campaign.toml")).exit_code == 0
    with db.session_scope(engine) as session:
        report = check_campaign(session, "acme-2026-11", date(2026, 12, 6))
    found = {j.code: j for j in report.jurisdictions}
    assert report.failed
    assert "must be offered 24 months" in found["US-CT"].problems[0]
    assert "must be offered 18 months" in found["US-MA"].problems[0]
    assert not found["US-TX"].problems  # card data only: no monitoring duty


def test_hipaa_counts_every_contact_and_its_thresholds(engine, campaign_file, tmp_path):
    path = campaign_toml(tmp_path, regimes='["hipaa"]', discovered_date='"2026-03-02"')
    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, path)
        session.add_all(
            Contact(
                campaign_id=campaign.id,
                key=f"k{i}",
                email=f"k{i}@example.com",
                country="US",
                state="CA" if i < 501 else "NV",
                exposures="identity",
                extra={},
            )
            for i in range(600)
        )
    with db.session_scope(engine) as session:
        report = check_campaign(session, "acme-2026-11", date(2026, 3, 10), verify_templates=False)
    hipaa = next(j for j in report.jurisdictions if j.code == "US-HIPAA")
    assert hipaa.residents.total == 600
    assert hipaa.notice_deadline == date(2026, 5, 1)  # 60 days after discovery
    due = {
        r.name.split(" (")[0] + (" log" if "log" in r.name else ""): (r.required, r.due)
        for r in hipaa.regulators
    }
    assert due["US Department of Health and Human Services"] == (True, date(2026, 5, 1))
    assert due["US Department of Health and Human Services log"] == (False, date(2027, 3, 1))
    assert due["Prominent media outlets"] == (True, date(2026, 5, 1))  # 501 in California
