"""Importing the affected-customer list: bad input is a one-line error or a per-row reason.

File-level problems exit non-zero with one ``Error: ...`` line and leave the database as it was;
row-level problems are rejects or warnings with their line and reason; never a traceback.
"""

from __future__ import annotations

import csv
import io
import random
import zipfile

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import db
from notify.cli import main
from notify.models import AuditRecord, Contact

CAMPAIGN = "acme-2026-11"
GOOD = "Email,Name,Exposure\r\nana@example.com,Ana,card\r\n"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def cli(env, campaign_file):
    """The CLI with the example campaign loaded; returns the engine to inspect."""
    assert invoke("campaign", "load", str(campaign_file)).exit_code == 0
    return db.connect(env["NOTIFY_DATABASE_URL"])


def contact_count(engine) -> int:
    with db.session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Contact))


def import_audits(engine) -> int:
    with db.session_scope(engine) as session:
        return session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.command == "contacts import")
        )


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not a workbook")
        archive.writestr("other.txt", "nor a list")
    return buffer.getvalue()


FILE_ERRORS = {
    "empty": (b"", ["the file is empty"]),
    "blank lines only": (b"\xef\xbb\xbf\r\n\r\n  \n", ["the file is empty"]),
    "binary garbage": (
        random.Random(1).randbytes(4096),
        ["not a CSV, TSV, XLSX", "(binary data at byte"],
    ),
    "latin-1 bytes": (
        "Email,Name,Exposure\nana@example.com,Ana,card\nb@example.com,José,card\n".encode(
            "latin-1"
        ),
        ["line 3: not UTF-8 (byte 0xE9 at offset 62", "re-save the file as UTF-8"],
    ),
    "no email or phone column": (
        b"Name,Exposure\nAna,card\n",
        ["no email or phone column (columns: Name, Exposure)", "--map COLUMN=email"],
    ),
    "duplicate header names": (
        b"Email,Name,E-mail,Exposure\na@example.com,A,b@example.com,card\n",
        ["line 1: columns 1 'Email' and 3 'E-mail' have the same name"],
    ),
    "two columns for one field": (
        b"Email,Email Address,Exposure\na@example.com,b@example.com,card\n",
        ["'Email' and 'Email Address' both look like the email"],
    ),
    "unclosed quote": (
        b'Email,Name,Exposure\na@example.com,"Ana,card\nb@example.com,B,card\n',
        ["line 2: a quote opened here is never closed"],
    ),
    "zip that is not a workbook": (_zip_bytes(), ["not a readable workbook, and a zip of 2 files"]),
    "damaged legacy xls": (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600,
        ["not a readable workbook (", "nothing was imported"],
    ),
}


@pytest.mark.parametrize("case", FILE_ERRORS)
def test_unreadable_files_are_one_line_errors(cli, tmp_path, case):
    content, fragments = FILE_ERRORS[case]
    path = tmp_path / "list.csv"
    path.write_bytes(content)
    rejects = tmp_path / "rejects.csv"
    result = invoke(
        "contacts", "import", str(path), "--campaign", CAMPAIGN, "--rejects", str(rejects)
    )
    assert_one_line_error(result, str(path), *fragments)
    assert contact_count(cli) == 0
    assert import_audits(cli) == 0
    assert not rejects.exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--campaign", "nope"], ["unknown campaign 'nope'"]),
        (["--campaign", CAMPAIGN, "--map", "Name"], ["--map 'Name': expected COLUMN=FIELD"]),
        (["--campaign", CAMPAIGN, "--map", "Name=salary"], ["unknown field 'salary'"]),
        (["--campaign", CAMPAIGN, "--map", "Cell=phone"], ["has no column 'Cell'"]),
        (["--campaign", CAMPAIGN, "--default-region", "XX"], ["--default-region 'XX'"]),
        (["--campaign", CAMPAIGN, "--rejects", "/nonexistent/dir/r.csv"], ["does not exist"]),
    ],
)
def test_bad_options_and_unknown_campaign(cli, tmp_path, args, fragments):
    path = tmp_path / "list.csv"
    path.write_text(GOOD, encoding="utf-8")
    assert_one_line_error(invoke("contacts", "import", str(path), *args), *fragments)
    assert contact_count(cli) == 0


def test_missing_file(cli, tmp_path):
    result = invoke("contacts", "import", str(tmp_path / "nope.csv"), "--campaign", CAMPAIGN)
    assert_one_line_error(result, "nope.csv: no such file")
    folder = invoke("contacts", "import", str(tmp_path), "--campaign", CAMPAIGN)
    assert_one_line_error(folder, "is a folder")


def test_header_only_reads_nothing_and_says_so(cli, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("Email,Name,Exposure\r\n", encoding="utf-8")
    result = invoke("contacts", "import", str(path), "--campaign", CAMPAIGN, "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == (
        '{"read": 0, "imported": 0, "merged": 0, "warnings": 0, "rejected": 0, '
        '"possible_duplicates": 0}'
    )
    assert "no data rows" in result.stdout
    assert contact_count(cli) == 0


def test_bad_rows_are_rejected_or_warned_with_their_line(cli, tmp_path):
    huge = "x" * 10_000
    rows = [
        ["Customer ID", "Full Name", "Email", "Phone", "Exposure", "Notes"],
        ["C-1", huge, "a@example.com", "", "card", ""],  # 2: name dropped, warning
        ["C-2", "Bo", "b@example.com", "", "card", huge],  # 3: note dropped, warning
        ["C-3", "Cy", huge + "@example.com", "", "card", ""],  # 4: rejected, email too long
        [huge, "Di", "d@example.com", "", "card", ""],  # 5: rejected, key too long
        ["C-6", "Ed", "e@example.com", "", huge, ""],  # 6: rejected, no exposure
        ["C-7", '=HYPERLINK("http://evil.example","Fi")', "", "", "card", ""],  # 7: rejected
        ["C-8", '=HYPERLINK("http://evil.example","Gu")', "g@example.com", "", "card", ""],  # 8
        ["C-9", "Hu", "", "CALL-ME-NOW", "card", ""],  # 9: rejected, phone of letters
        ["C-10", "Io", "i@example.com", "phone: ask", "card", ""],  # 10: warning
        ["C-11", "Jo", "j@example.com\r\nBcc: all@example.com", "", "card", ""],  # 11-12: reject
        ["C-12", "Ka", "k@example.com\nX", "(415) 555-0134", "card", ""],  # 13-14: warning
    ]
    path = tmp_path / "list.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write("C-13,Lu,l@example.com,,card,,surplus\r\n")  # 15: one cell too many
        handle.write('C-14,"Mo"x,m@example.com,,card,\r\n')  # 16: lenient quoting, as Excel
        handle.write("C-15,No,n@example.com,,card\r\n")  # 17: a trailing cell missing: fine
    rejects = tmp_path / "rejects.csv"
    result = invoke(
        "contacts", "import", str(path), "--campaign", CAMPAIGN, "--rejects", str(rejects)
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    out = result.stdout
    assert "line 2: name is 10000 characters long (limit 1000); dropped" in out
    assert "line 3: column 'Notes' is 10000 characters long (limit 1000); dropped" in out
    assert 'line 4: no usable email or phone (email "xxxx' in out
    assert "is 10012 characters long (limit 254)" in out
    assert "line 5: key is 10000 characters long (limit 320)" in out
    assert 'line 6: no recognized exposure ("xxxx' in out
    assert "line 7: no email and no phone" in out
    assert 'line 9: no usable email or phone (phone "CALL-ME-NOW": not a phone number' in out
    assert 'line 10: phone "phone: ask": not a phone number (letters); imported without it' in out
    assert (
        'line 11: no usable email or phone (email "j@example.com\\r\\nBcc: all@example.com": '
        "contains a line break)" in out
    )
    assert 'line 13: email "k@example.com\\nX": contains a line break; imported without it' in out
    assert "line 15: 7 cells but the header has 6 columns" in out
    assert "line 16" not in out
    assert "14 rows: 7 new, 0 already present, 0 changed; 7 rejected; 4 with warnings." in out
    with db.session_scope(cli) as session:
        contacts = {c.key: c for c in session.scalars(select(Contact))}
    assert set(contacts) == {"C-1", "C-2", "C-8", "C-10", "C-12", "C-14", "C-15"}
    assert contacts["C-14"].name == "Mox"
    assert contacts["C-1"].name is None
    assert contacts["C-2"].extra == {"notes": ""}
    assert contacts["C-8"].name == '=HYPERLINK("http://evil.example","Gu")'  # data, verbatim
    assert (contacts["C-12"].email, contacts["C-12"].phone) == (None, "+14155550134")
    with open(rejects, encoding="utf-8", newline="") as handle:
        rejected = {row[0]: row for row in csv.reader(handle)}
    assert sorted(int(k) for k in rejected if k != "line") == [4, 5, 6, 7, 9, 11, 15]
    assert rejected["7"][3] == '\'=HYPERLINK("http://evil.example","Fi")'  # neutralized
    assert len(rejected["6"][6]) == 10_000  # the source cell, whole, for the user to fix
