"""notify/addresses.py: one normalizer, so every path finds the row the importer stored."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from notify import addresses, db
from notify.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def anna(env, campaign_file, tmp_path):
    """anna@straße.de imported through `notify contacts import` (passwords exposed)."""
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("key,email,exposure\nanna,anna@straße.de,passwords\n", encoding="utf-8")
    result = run("contacts", "import", str(contacts), "--campaign", "acme-2026-11")
    assert result.exit_code == 0, result.output
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT email FROM contacts").scalar_one()
    assert stored == "anna@xn--strae-oqa.de"  # IDNA 2008, not IDNA 2003's strasse.de
    return tmp_path


def test_reset_completion_by_email_matches_an_idna_domain(anna):
    source = anna / "idp.csv"
    source.write_text(
        "email,completed_at\nanna@straße.de,2026-11-25\nanna@Straße.DE,2026-11-25\n",
        encoding="utf-8",
    )
    result = run("resets", "complete", str(source), "--campaign", "acme-2026-11", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert (summary["completed"], summary["rejected"]) == (1, 0), summary


@pytest.mark.parametrize(
    "query",
    [
        "anna@straße.de",
        "anna@STRASSE.de".replace("SS", "ß"),
        "anna@xn--strae-oqa.de",
        " anna@Straße.de. ",
    ],
)
def test_lookup_by_email_matches_an_idna_domain(anna, query):
    result = run("lookup", query, "--json")
    assert result.exit_code == 0, result.output
    assert [c["key"] for c in json.loads(result.output)["contacts"]] == ["anna"]


@pytest.mark.parametrize(
    "typed",
    [
        "anna@straße.de",
        "Anna@Bücher.Example",
        "ann.example@EXAMPLE.COM",
        "x@xn--strae-oqa.de",
        "josé@example.com",
        "o'brien+tag@sub.Example.org",
    ],
)
def test_email_key_is_the_stored_form_of_every_address_the_importer_accepts(typed):
    stored, problem = addresses.normalize_email(typed)
    assert problem is None
    assert addresses.email_key(typed) == stored
    assert addresses.email_key(typed + " ") == stored
