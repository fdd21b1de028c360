"""Importing the affected-customer list: phones, emails, exposures, keys, warnings and rejects."""

from __future__ import annotations

import csv
import json
import random

import phonenumbers
import pytest
from click.testing import CliRunner
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select

from notify import db
from notify.cli import main
from notify.importer import normalize_email, normalize_phone
from notify.models import AuditRecord
from tests.import_helpers import CAMPAIGN, do_import, stored


def write_rows(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.mark.parametrize(
    "raw, region, expected",
    [
        ("(415) 555-0134", "US", "+14155550134"),
        ("415.555.0134", "US", "+14155550134"),
        ("415-555-0134", "US", "+14155550134"),
        ("4155550134", "US", "+14155550134"),
        ("1-415-555-0134", "US", "+14155550134"),
        ("+1 (415) 555-0134", "GB", "+14155550134"),
        ("001-415-555-0134", "US", "+14155550134"),
        ("011 44 20 7946 0958", "US", "+442079460958"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("0044 20 7946 0958", "DE", "+442079460958"),
        ("030 901820", "DE", "+4930901820"),
        ("+33 1 23 45 67 89", "US", "+33123456789"),
        ("(415) 555-0134 ext. 12", "US", "+14155550134"),
        ("\u00a0415\u2011555\u20110134 ", "US", None),  # odd dashes: see the next case
        ("+1 246 521 0134", "US", "+12465210134"),  # Barbados: the exact (non-prefix) check
    ],
)
def test_phones_become_e164(raw, region, expected):
    phone, problem = normalize_phone(raw, region)
    if expected is None:  # whatever the path, it must agree with phonenumbers itself
        number = phonenumbers.parse(raw, region)
        expected = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    assert (phone, problem) == (expected, None)


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("call me", "not a phone number (letters)"),
        ("ABC-DEF-GHIJ", "not a phone number (letters)"),
        ("1-800-FLOWERS", "not a phone number (letters)"),
        ("+1 123 456 7890", "not a valid phone number"),
        ("555-0134", "not a valid phone number"),
        ("12", "not a valid phone number"),
        ("9" * 70, "is 70 characters long (limit 64)"),
    ],
)
def test_bad_phones_say_why(raw, problem):
    assert normalize_phone(raw, "US") == (None, problem)


def test_phone_fast_path_agrees_with_phonenumbers():
    """The regex + prefix cache must accept exactly what phonenumbers accepts, in E.164."""
    rng = random.Random(7)
    caribbean = ["246", "876", "787", "809", "441", "868"]
    for _ in range(3000):
        npa = rng.choice(caribbean) if rng.random() < 0.2 else str(rng.randint(200, 999))
        raw = f"({npa}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
        number = phonenumbers.parse(raw, "US")
        expected = (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            if phonenumbers.is_valid_number(number)
            else None
        )
        assert normalize_phone(raw, "US")[0] == expected, raw


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Ana.Lima@Example.COM", "Ana.Lima@example.com"),  # domain lower-cased, local part kept
        ("  ana+notices@example.org ", "ana+notices@example.org"),
        ("emilie@Bücher.example", "emilie@xn--bcher-kva.example"),  # IDNA form
        ("josé@bücher.example", "josé@xn--bcher-kva.example"),
        ("ana@example.com\u200b", "ana@example.com"),  # a zero-width space pasted from a web page
    ],
)
def test_emails_are_normalized(raw, expected):
    assert normalize_email(raw) == (expected, None)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("ana@example.com\r\nBcc: all@example.com", "contains a line break"),
        ("ana\n@example.com", "contains a line break"),
        ("not-an-email", "@-sign"),
        ("ana@@example.com", "invalid characters"),
        ("ana..lima@example.com", "two periods"),
        ("ana@localhost", "period"),
        ("a" * 300 + "@example.com", "characters long (limit 254)"),
    ],
)
def test_bad_emails_say_why(raw, fragment):
    email, problem = normalize_email(raw)
    assert email is None
    assert fragment in problem


def test_email_fast_path_agrees_with_email_validator():
    samples = [
        "a@example.com",
        "A.B-C_d+e%f@Sub.Example.co.uk",
        "x@example.invalid",
        "x@-bad.com",
        "x@bad-.com",
        "x@example.c",
        "x@example.123",
        "x.@example.com",
        ".x@example.com",
        "x@example..com",
        "x@xn--bcher-kva.example",
        "x@exa_mple.com",
        "1@2.3.4.com",
        "x" * 64 + "@example.com",
        "x" * 65 + "@example.com",
        "x@" + "a" * 64 + ".com",
        "x@test",
        "x@example.local",
        "o'brien@example.ie",
        "x@example.onion",
    ]
    for raw in samples:
        try:
            result = validate_email(raw, check_deliverability=False)
            expected = f"{result.local_part}@{result.ascii_domain}"
        except EmailNotValidError:
            expected = None
        assert normalize_email(raw)[0] == expected, raw


def test_one_bad_address_keeps_the_other_with_a_warning(loaded, tmp_path):
    path = write_rows(
        tmp_path / "list.csv",
        [
            ["id", "email", "phone", "exposure"],
            ["1", "ana@@example.com", "(415) 555-0134", "card"],  # bad email, good phone
            ["2", "ben@example.com", "call me", "passwords"],  # good email, bad phone
            ["3", "nope", "12", "identity"],  # both bad: rejected
            ["4", "dan@example.com\r\nBcc: x@example.com", "", "card"],  # CR/LF: no email left
        ],
    )
    summary = do_import(loaded, path)
    assert summary.counts() == {"read": 4, "imported": 2, "merged": 0, "warnings": 2, "rejected": 2}
    contacts = stored(loaded)
    assert (contacts["1"].email, contacts["1"].phone) == (None, "+14155550134")
    assert (contacts["2"].email, contacts["2"].phone) == ("ben@example.com", None)
    warned = {p.line: p.reason for p in summary.warned}
    assert warned[2].startswith('email "ana@@example.com": ')
    assert warned[2].endswith("; imported without it")
    assert warned[3] == 'phone "call me": not a phone number (letters); imported without it'
    rejected = {p.line: p.reason for p in summary.rejects}
    assert rejected[4].startswith('no usable email or phone (email "nope": ')
    assert 'phone "12": not a valid phone number' in rejected[4]
    assert rejected[5] == (
        'no usable email or phone (email "dan@example.com\\r\\nBcc: '
        'x@example.com": contains a line break)'
    )


def test_exposures_split_and_unknown_parts(loaded, tmp_path):
    path = write_rows(
        tmp_path / "list.csv",
        [
            ["email", "data exposed"],
            ["a@example.com", "PASSWORDS"],
            ["b@example.com", "Card Data / ssn"],
            ["c@example.com", "passwords|credit card, pii"],
            ["d@example.com", "password; toast"],  # imported, "toast" reported
            ["e@example.com", "marketing"],  # rejected
            ["f@example.com", ""],  # rejected
        ],
    )
    summary = do_import(loaded, path)
    contacts = stored(loaded)
    assert contacts["a@example.com"].exposures == "passwords"
    assert contacts["b@example.com"].exposures == "identity;card"
    assert contacts["c@example.com"].exposures == "identity;card;passwords"
    assert contacts["d@example.com"].exposures == "passwords"
    assert [(p.line, p.reason) for p in summary.warned] == [(5, 'unknown exposure "toast" ignored')]
    assert [(p.line, p.reason) for p in summary.rejects] == [
        (6, 'no recognized exposure ("marketing")'),
        (7, "no exposure (the cell is empty)"),
    ]


def test_key_is_explicit_else_email_else_phone(loaded, tmp_path):
    path = write_rows(
        tmp_path / "list.csv",
        [
            ["customer id", "email", "mobile", "exposure"],
            ["C-9", "ana@example.com", "", "card"],
            ["", "Ben@Example.com", "(415) 555-0135", "card"],
            ["", "", "415.555.0136", "card"],
        ],
    )
    do_import(loaded, path)
    assert set(stored(loaded)) == {"C-9", "ben@example.com", "+14155550136"}


def test_country_column_sets_the_phone_region(loaded, tmp_path):
    path = write_rows(
        tmp_path / "list.csv",
        [
            ["email", "phone", "country", "exposure"],
            ["a@example.co.uk", "020 7946 0958", "United Kingdom", "card"],
            ["b@example.de", "030 901820", "DE", "card"],
            ["c@example.com", "(415) 555-0134", "", "card"],
        ],
    )
    do_import(loaded, path, default_region="US")
    contacts = stored(loaded)
    assert contacts["a@example.co.uk"].phone == "+442079460958"
    assert contacts["b@example.de"].phone == "+4930901820"
    assert contacts["c@example.com"].phone == "+14155550134"


def test_rejects_file_neutralizes_formulas(loaded, tmp_path):
    path = write_rows(
        tmp_path / "list.csv",
        [
            ["Full Name", "Email", "Phone", "Exposure", "Note"],
            ['=HYPERLINK("http://x.example","y")', "", "", "card", "+14155550134"],
            ['=HYPERLINK("http://x.example","z")', "z@example.com", "", "card", "@SUM(A1)"],
        ],
    )
    rejects = tmp_path / "rejects.csv"
    summary = do_import(loaded, path, rejects_path=rejects)
    assert summary.rejected == 1
    with open(rejects, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "reason", "Full Name", "Email", "Phone", "Exposure", "Note"]
    assert rows[1] == [
        "2",
        "no email and no phone",
        '\'=HYPERLINK("http://x.example","y")',
        "",
        "",
        "card",
        "+14155550134",
    ]  # an E.164 number stays usable
    # The accepted row is data: stored exactly as written, for templates to escape.
    contact = stored(loaded)["z@example.com"]
    assert contact.name == '=HYPERLINK("http://x.example","z")'
    assert contact.extra == {"note": "@SUM(A1)"}


def test_cli_groups_repeated_reasons_and_fails_when_every_row_is_rejected(
    env, campaign_file, tmp_path
):
    rows = [["email", "exposure"]] + [[f"u{i}@example.com", "toast"] for i in range(25)]
    rows += [[f"v{i}@example.com", f"jam {i}"] for i in range(3)]  # values differ: one group
    rows += [["", "card"]]
    path = write_rows(tmp_path / "list.csv", rows)
    runner = CliRunner()
    runner.invoke(main, ["campaign", "load", str(campaign_file)])
    result = runner.invoke(
        main,
        [
            "contacts",
            "import",
            str(path),
            "--campaign",
            CAMPAIGN,
            "--rejects",
            str(tmp_path / "r.csv"),
            "--json",
        ],
    )
    assert result.exit_code == 1, result.output
    out = result.stdout.splitlines()
    assert '  25 rows: no recognized exposure ("toast") (lines 2, 3, 4, 5, 6, ...)' in out
    assert '  3 rows: no recognized exposure ("…") (lines 27, 28, 29)' in out
    assert "  line 30: no email and no phone" in out
    assert out[0].startswith("Nothing imported (every row was rejected)")
    assert out[0].endswith("29 rows: 0 new, 0 already present, 0 changed; 29 rejected.")
    assert json.loads(out[-1])["rejected"] == 29
    assert (tmp_path / "r.csv").exists()  # the report is still written
    assert stored(db.connect(env["NOTIFY_DATABASE_URL"])) == {}
    with db.session_scope(db.connect(env["NOTIFY_DATABASE_URL"])) as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(AuditRecord)
                .where(AuditRecord.command == "contacts import")
            )
            == 0
        )
