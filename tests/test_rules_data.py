"""The shipped breach-law data: one complete, well-formed entry per jurisdiction."""

from __future__ import annotations

import tomllib
import zipfile
from datetime import date

import pytest

from notify import rules
from notify.rules import DATA_FILE, RulesError, parse_rules

US = (
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH "
    "NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR"
).split()
EXPECTED = {f"US-{s}" for s in US} | {"US-HIPAA", "EU", "GB", "CA", "AU"}


def test_one_entry_per_jurisdiction():
    assert set(rules.load_rules()) == EXPECTED
    assert len(EXPECTED) == 57  # 50 states, DC, PR, HIPAA, EU, UK, Canada, Australia


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_every_entry_is_complete_and_every_date_parses(code):
    raw = tomllib.loads(DATA_FILE.read_text())[code]
    for key in rules.TOP_KEYS:
        assert key in raw, f"{code}: {key} missing"
    for key in ("name", "law", "substitute", "electronic", "credentials", "source"):
        assert isinstance(raw[key], str) and raw[key].strip(), f"{code}: {key} empty"
    assert isinstance(raw["last_checked"], date)  # a TOML date, not a string
    assert date(2024, 1, 1) <= raw["last_checked"] <= date(2030, 1, 1)
    entry = rules.get(code)
    assert entry.confidence_level in ("high", "medium", "low")
    assert entry.notice_standard
    if entry.notice_days is not None:
        assert entry.notice_from in ("discovery", "determination")
    for dated in (entry.notice_effective, *(r.effective for r in entry.regulators)):
        assert dated is None or isinstance(dated, date)
    for reg in entry.regulators:
        assert reg.name and reg.wants and reg.threshold >= 1
    assert entry.cra_note
    assert isinstance(entry.must_include, tuple) and isinstance(entry.must_not_include, tuple)
    assert entry.monitoring_months >= 0 and (entry.monitoring_when or not entry.monitoring_months)


def test_the_facts_the_issue_names():
    get = rules.get
    assert (get("US-CA").notice_days, get("US-CA").notice_effective) == (30, date(2026, 1, 1))
    assert {c: get(c).notice_days for c in ("US-CO", "US-FL", "US-WA", "US-NY")} == dict.fromkeys(
        ("US-CO", "US-FL", "US-WA", "US-NY"), 30
    )
    assert get("US-AZ").notice_days == get("US-IN").notice_days == 45
    assert get("US-TX").notice_days == get("US-CT").notice_days == 60
    assert {c: get(c).monitoring_months for c in ("US-CT", "US-DC", "US-MA", "US-DE", "US-CA")} == {
        "US-CT": 24,
        "US-DC": 18,
        "US-MA": 18,
        "US-DE": 12,
        "US-CA": 12,
    }
    assert get("US-MA").variant == "US-MA" and get("US-IL").variant == "US-IL"
    assert get("US-CA").credentials_not_to_business_email


def test_an_incomplete_entry_is_named():
    text = DATA_FILE.read_text().replace('confidence = "low"\n', "", 1)
    with pytest.raises(RulesError, match=r"\[US-AL\] confidence: missing"):
        parse_rules(text)
    bad_date = DATA_FILE.read_text().replace(
        "last_checked = 2026-12-06", 'last_checked = "soon"', 1
    )
    with pytest.raises(RulesError, match=r"\[US-AL\] last_checked: 'soon' has the wrong type"):
        parse_rules(bad_date)


@pytest.mark.parametrize(
    ("country", "state", "code"),
    [
        ("US", "CA", "US-CA"),
        ("United States", "California", "US-CA"),
        (None, "ma", "US-MA"),
        ("USA", "Washington DC", "US-DC"),
        ("Canada", "ON", "CA"),
        ("CA", None, "CA"),
        ("France", None, "EU"),
        ("de", "Bayern", "EU"),
        ("UK", None, "GB"),
        ("AU", "NSW", "AU"),
        ("PR", None, "US-PR"),
        ("US", None, "unknown"),
        (None, None, "unknown"),
        ("", "", "unknown"),
        ("MX", "Jalisco", "MX"),
    ],
)
def test_residence(country, state, code):
    assert rules.residence(country, state) == code


@pytest.mark.slow
def test_the_data_file_is_in_the_wheel(tmp_path):
    pytest.importorskip("hatchling")  # the build backend (test extra)
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(DATA_FILE.parents[2]),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("*.whl"))
    assert "notify/rules/jurisdictions.toml" in zipfile.ZipFile(wheel).namelist()
