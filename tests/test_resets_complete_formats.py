"""`resets complete` reads its file as `contacts import` does (tabular.read_table: workbooks,
JSON, encodings, the same one-line errors) and writes the importer's rejects file."""

from __future__ import annotations

import csv
import json
import re
from datetime import datetime

import openpyxl
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from notify import db
from notify.cli import main
from notify.errors import NotifyError
from notify.models import Contact, PasswordReset
from notify.resets.completions import import_completions
from notify.resets.tokens import ensure_resets
from tests.test_resets import add_contact, completions, make_campaign, snapshot, write

CAMPAIGN = "acme-2026-11"


def statuses(session) -> dict[str, tuple[str, datetime | None]]:
    session.expire_all()
    return {
        key: (status, done)
        for key, status, done in session.execute(
            select(Contact.key, PasswordReset.status, PasswordReset.completed_at).join(
                PasswordReset, PasswordReset.contact_id == Contact.id
            )
        )
    }


def rejects_rows(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def three_contacts(session, campaign) -> None:
    for key in ("1001", "1002", "1003"):
        add_contact(session, campaign, key)
    ensure_resets(session, campaign)


def test_a_workbook_is_applied_with_typed_cells_and_sheet_rows(session, campaign, tmp_path):
    three_contacts(session, campaign)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Completions exported from the identity provider"])  # a title: row 1
    sheet.append([])
    sheet.append(["Customer ID", "Completed At"])  # the header, found on row 3
    sheet.append([1001, datetime(2026, 11, 25, 10, 30)])  # a number and a date cell
    sheet.append([9999, datetime(2026, 11, 25, 11, 0)])  # row 5: unknown
    book.save(tmp_path / "idp.xlsx")
    rejects = tmp_path / "rejects.csv"
    summary = import_completions(session, campaign, tmp_path / "idp.xlsx", rejects_path=rejects)
    assert (summary.read, summary.completed, summary.rejected) == (2, 1, 1)
    assert statuses(session)["1001"] == ("completed", datetime.fromisoformat("2026-11-25T10:30Z"))
    assert statuses(session)["1002"][0] == "pending"
    assert rejects_rows(rejects)[1][:3] == ["5", "unknown key '9999'", "9999"]


def test_json_lines_and_a_json_array_are_applied(session, campaign, tmp_path):
    three_contacts(session, campaign)
    lines = (
        '{"key": "1001", "completed_at": "2026-11-25T10:00:00Z"}\n'
        "\n"
        '{"email": "1002@example.com", "completed_at": "2026-11-26"}\n'
    )
    summary = import_completions(session, campaign, write(tmp_path / "a.txt", lines))
    assert (summary.read, summary.completed, summary.rejected) == (2, 1 + 1, 0)
    array = json.dumps([{"Customer ID": 1003, "Completed At": "2026-11-27T08:00:00+01:00"}])
    summary = import_completions(session, campaign, write(tmp_path / "b.json", array))
    assert summary.completed == 1
    done = statuses(session)
    assert done["1002"] == ("completed", datetime.fromisoformat("2026-11-26T00:00Z"))
    assert done["1003"] == ("completed", datetime.fromisoformat("2026-11-27T07:00Z"))


def test_bom_utf16_and_semicolons_are_read_as_import_reads_them(session, campaign, tmp_path):
    three_contacts(session, campaign)
    text = "E-mail;Completed At\r\n1001@example.com;2026-11-25\r\n"
    source = write(tmp_path / "idp.csv", "\ufeff".encode("utf-16-le") + text.encode("utf-16-le"))
    assert import_completions(session, campaign, source).completed == 1
    assert statuses(session)["1001"][0] == "completed"


def test_rejects_are_the_shared_format_with_file_lines_and_neutralized_cells(
    session, campaign, tmp_path
):
    three_contacts(session, campaign)
    source = write(
        tmp_path / "idp.csv",
        (
            "key,completed_at,=Note\n"  # a formula-looking header cell
            '1001,2026-11-25,"two\nlines"\n'  # lines 2-3: a quoted line break
            "\n"  # line 4: blank
            '=HYPERLINK("x"),2026-11-25,@SUM(A1)\n'  # line 5: unknown, formulas
            "1002,soon,-2+3\n"  # line 6: bad time
            "1003,2026-11-25,a\x00b\n"  # line 7: a NUL byte, which the parser drops
        ),
    )
    rejects = tmp_path / "rejects.csv"
    summary = import_completions(session, campaign, source, rejects_path=rejects)
    assert (summary.read, summary.completed, summary.rejected) == (4, 1, 3)
    rows = rejects_rows(rejects)
    assert rows[0] == ["line", "reason", "key", "completed_at", "'=Note"]
    assert [r[0] for r in rows[1:]] == ["5", "6", "7"]
    assert rows[1][2] == '\'=HYPERLINK("x")' and rows[1][4] == "'@SUM(A1)"
    assert rows[1][1].startswith("unknown key '=HYPERLINK")  # the reason is quoted, not a formula
    assert rows[2][4] == "'-2+3"
    assert rows[3][1] == "a NUL character (byte 0) in the row; fix or remove the row"
    assert statuses(session)["1003"][0] == "pending"  # not matched with the NUL dropped
    assert not list(tmp_path.glob(".rejects.csv.*"))  # no temporary file left behind


@pytest.mark.parametrize(
    "data, message",
    [
        (
            b"key,completed_at\n1001,2026-11-25\n1002,2026-11-25 caf\xe9\n",
            r"idp\.csv, line 3: not UTF-8 \(byte 0xE9 at offset \d+",
        ),
        (bytes(range(256)) * 4, r"idp\.csv: not a CSV, TSV, XLSX.* file \(binary data at byte"),
        (b"PK\x03\x04" + b"\x00" * 200, r"idp\.csv: not a readable workbook"),
        (b'[{"key": "1001", ', r"idp\.csv: not readable JSON"),
    ],
    ids=["latin-1", "binary", "damaged-workbook", "bad-json"],
)
def test_an_unreadable_file_is_the_importers_one_line_error_and_changes_nothing(
    env, campaign_file, tmp_path, data, message
):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        three_contacts(session, make_campaign(session, campaign_file))
        before = snapshot(session)
    source = write(tmp_path / "idp.csv", data)
    rejects = tmp_path / "rej.csv"
    result = CliRunner().invoke(
        main, ["resets", "complete", str(source), "--campaign", CAMPAIGN, "--rejects", str(rejects)]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not rejects.exists()
    with db.session_scope(engine) as session:
        assert snapshot(session) == before
        assert completions(session) == 0


def test_a_bad_rejects_target_is_refused_before_anything_is_applied(session, campaign, tmp_path):
    three_contacts(session, campaign)
    before = snapshot(session)
    source = write(tmp_path / "idp.csv", "key,completed_at\n1001,2026-11-25\n")
    for target, problem in [
        (tmp_path / "missing" / "r.csv", "does not exist"),
        (tmp_path, "is a folder"),
        (source, "is the file being imported"),
    ]:
        with pytest.raises(NotifyError, match=f"--rejects .*{problem}"):
            import_completions(session, campaign, source, rejects_path=target)
    assert snapshot(session) == before


def test_a_row_the_reader_cannot_parse_is_rejected_in_its_place(session, campaign, tmp_path):
    three_contacts(session, campaign)
    # Past the 64 KiB sample a row wider than the header makes pandas give up: the csv
    # module reads the file, and reports the badly quoted row on line 3 instead of failing.
    filler = "".join("1001,2026-11-25\n" for _ in range(5000))
    source = write(
        tmp_path / "idp.csv",
        'key,completed_at\n1002,2026-11-25\n"x"y,2026-11-25\n' + filler + "1003,2026-11-25,extra\n",
    )
    rejects = tmp_path / "rejects.csv"
    summary = import_completions(session, campaign, source, rejects_path=rejects)
    assert (summary.read, summary.completed, summary.rejected) == (5003, 3, 1)
    assert summary.already_completed == 4999
    assert rejects_rows(rejects)[1][:2] == ["3", "malformed quoting (',' expected after '\"')"]


def test_sheet_and_header_row_choose_what_is_read_and_the_note_says_what_was_skipped(
    env, campaign_file, tmp_path
):
    """The reader's advice names --sheet and --header-row: resets complete takes them too."""
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        three_contacts(session, make_campaign(session, campaign_file))
    book = openpyxl.Workbook()
    book.active.title = "Summary"
    book.active.append(["key", "completed_at"])
    book.active.append([1002, datetime(2026, 11, 25, 9, 0)])
    resets = book.create_sheet("Resets")
    resets.append(["Exported by the identity provider"])
    resets.append(["key", "completed_at"])
    resets.append([1001, datetime(2026, 11, 25, 10, 0)])
    book.save(tmp_path / "idp.xlsx")
    args = ["resets", "complete", str(tmp_path / "idp.xlsx"), "--campaign", CAMPAIGN]
    wrong = CliRunner().invoke(main, [*args, "--sheet", "Resets", "--header-row", "1"])
    assert wrong.exit_code == 1
    assert wrong.output.startswith("Error: ") and "no key or email column" in wrong.output
    result = CliRunner().invoke(main, [*args, "--sheet", "Resets"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        "Read 1 row(s): completed 1 reset(s), 0 already completed, 0 rejected."
    )
    assert any(
        line.startswith("Note: ") and "line 1 above it skipped" in line
        for line in result.output.splitlines()
    ), result.output
    with db.session_scope(engine) as session:
        done = statuses(session)
    assert (done["1001"][0], done["1002"][0]) == ("completed", "pending")
