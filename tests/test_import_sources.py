"""Importing through pandas: every format (told by content), the header found, workbook
bounds, clean text. Every file is built here."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import zipfile

import openpyxl
import pandas as pd
import pytest
from click.testing import CliRunner

from notify import tabular
from notify.cli import main
from notify.errors import NotifyError
from tests.import_helpers import CAMPAIGN, do_import, stored

HEADER = ["Customer ID", "Full Name", "E-mail Address", "Mobile", "Data Exposed"]
ROWS = [
    ["C-1", "Ana Lima", "ana@example.com", "(415) 555-0134", "passwords; card"],
    ["C-2", "Ben Okafor", "", "", "card"],  # rejected: no email and no phone
    ["C-3", "Chloé Martin", "chloe@example.net", "", "DOB"],
]


def csv_bytes(rows=None, delimiter=",") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter).writerows(rows or [HEADER, *ROWS])
    return buffer.getvalue().encode("utf-8")


def frame() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=HEADER)


def xlsx(path, rows, title=None):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    if title:
        sheet.title = title
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def _xls(path):
    xlwt = pytest.importorskip("xlwt")
    workbook = xlwt.Workbook()
    sheet = workbook.add_sheet("Customers")
    for r, row in enumerate([HEADER, *ROWS]):
        for c, value in enumerate(row):
            sheet.write(r, c, value)
    workbook.save(str(path))


# Each builder writes the same list (header on line 1, rows on lines 2-4) in one format, under
# a name that says nothing (the content decides).
BUILDERS = {
    "csv": lambda p: p.write_bytes(csv_bytes()),
    "tsv": lambda p: p.write_bytes(csv_bytes(delimiter="\t")),
    "semicolons": lambda p: p.write_bytes(csv_bytes(delimiter=";")),
    "csv.gz": lambda p: p.write_bytes(gzip.compress(csv_bytes())),
    "csv.bz2": lambda p: p.write_bytes(bz2.compress(csv_bytes())),
    "csv.xz": lambda p: p.write_bytes(lzma.compress(csv_bytes())),
    "csv.zip": lambda p: p.write_bytes(_zip("list.csv", csv_bytes())),
    "xlsx": lambda p: xlsx(p, [HEADER, *ROWS]),
    "xlsm": lambda p: (
        frame().to_excel(p.with_suffix(".xlsm"), index=False, engine="openpyxl")
        or os.replace(p.with_suffix(".xlsm"), p)
    ),
    "xls": _xls,
    "ods": lambda p: (
        frame().to_excel(p.with_suffix(".ods"), index=False, engine="odf")
        or os.replace(p.with_suffix(".ods"), p)
    ),
    "parquet": lambda p: frame().to_parquet(p, index=False),
    "jsonl": lambda p: p.write_text(
        "\n".join(json.dumps(dict(zip(HEADER, r, strict=True))) for r in ROWS) + "\n",
        encoding="utf-8",
    ),
    "json array": lambda p: p.write_text(
        json.dumps([dict(zip(HEADER, r, strict=True)) for r in ROWS], indent=2), encoding="utf-8"
    ),
}
KINDS = {
    "csv": "CSV",
    "tsv": "TSV",
    "semicolons": "CSV",
    "csv.gz": "CSV",
    "csv.bz2": "CSV",
    "csv.xz": "CSV",
    "csv.zip": "CSV",
    "xlsx": "XLSX workbook",
    "xlsm": "XLSX workbook",
    "xls": "XLS workbook",
    "ods": "ODS workbook",
    "parquet": "Parquet",
    "jsonl": "JSON Lines",
    "json array": "JSON array",
}


@pytest.mark.parametrize("fmt", BUILDERS)
def test_every_format_is_read_by_content(loaded, tmp_path, fmt):
    path = tmp_path / "customers.dat"  # the name says nothing
    BUILDERS[fmt](path)
    summary = do_import(loaded, path)
    assert summary.kind == KINDS[fmt]
    assert summary.counts() == {"read": 3, "imported": 2, "merged": 0, "warnings": 0, "rejected": 1}
    line = {"json array": 9, "jsonl": 2}.get(fmt, 3)  # the line the rejected record starts on
    assert [(p.line, p.reason) for p in summary.rejects] == [(line, "no email and no phone")]
    contacts = stored(loaded)
    assert contacts["C-1"].phone == "+14155550134"
    assert contacts["C-1"].exposures == "card;passwords"
    assert contacts["C-3"].name == "Chloé Martin"
    assert contacts["C-3"].exposures == "identity"  # DOB is identity data
    assert summary.key_column == "Customer ID"


def test_a_workbook_named_csv_is_read_as_a_workbook(loaded, tmp_path):
    path = xlsx(tmp_path / "export.csv", [HEADER, *ROWS])
    summary = do_import(loaded, path)
    assert summary.kind == "XLSX workbook" and summary.imported == 2


def test_typed_cells_read_as_people_see_them(loaded, tmp_path):
    path = tmp_path / "typed.parquet"
    pd.DataFrame(
        {
            "Account No": [1001, 1002],
            "Email": ["a@example.com", "b@example.com"],
            "Phone": [4155550134.0, None],
            "Card Exposed": [True, False],
            "Passwords": ["yes", "x"],
        }
    ).to_parquet(path)
    do_import(loaded, path)
    contacts = stored(loaded)
    assert contacts["1001"].phone == "+14155550134"  # not 4155550134.0
    assert contacts["1001"].exposures == "card;passwords"
    assert contacts["1002"].exposures == "passwords"


def test_json_lines_keep_their_physical_lines(loaded, tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text(
        '{"email": "a@example.com", "exposure": "card"}\n\n'
        '{"email": "", "exposure": "card"}\n'
        '{"email": "c@example.com", "exposure": "toast"}\n',
        encoding="utf-8",
    )
    summary = do_import(loaded, path)
    assert [p.line for p in summary.rejects] == [3, 4]


# --------------------------------------------------------------------------- header


def test_a_title_row_above_the_header_is_skipped_and_said(loaded, tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(b"Affected customers, December 2026\n\n" + csv_bytes())
    summary = do_import(loaded, path)
    assert summary.imported == 2
    assert [p.line for p in summary.rejects] == [5]  # physical lines: the header is line 3
    assert any("the header is on line 3; line 1 above it skipped" in n for n in summary.notes)


def test_workbook_title_rows_and_sheet_row_numbers(loaded, tmp_path):
    path = xlsx(
        tmp_path / "list.xlsx",
        [["ACME breach: affected customers"], [], HEADER, ROWS[0], [], ROWS[1], ROWS[2]],
    )
    summary = do_import(loaded, path)
    assert [p.line for p in summary.rejects] == [6]
    assert any("line 3; line 1 above it skipped" in n for n in summary.notes)


def test_header_row_option_overrides(loaded, tmp_path):
    # Row 1 would be taken for the header (it names two fields); the real header is row 2.
    path = xlsx(tmp_path / "list.xlsx", [["Email", "Phone", "see row 2"], HEADER, *ROWS])
    wrong = do_import(loaded, path, dry_run=True)
    assert wrong.all_rejected
    assert wrong.rejects[0].reason == (
        "5 cells but the header has 3 columns (is the header row right? see --header-row)"
    )
    summary = do_import(loaded, path, header_row=2)
    assert summary.imported == 2 and [p.line for p in summary.rejects] == [4]
    with pytest.raises(NotifyError, match="--header-row 40: .* line 40 is empty"):
        do_import(loaded, path, header_row=40)


def test_the_first_sheet_with_a_recognizable_header_is_read_and_named(loaded, tmp_path):
    workbook = openpyxl.Workbook()
    notes = workbook.active
    notes.title = "Read me"
    notes.append(["This workbook lists the customers affected by the incident."])
    data = workbook.create_sheet("Affected")
    for row in [HEADER, *ROWS]:
        data.append(row)
    other = workbook.create_sheet("Other")
    other.append(["Email", "Exposure"])
    other.append(["zed@example.com", "card"])
    path = tmp_path / "book.xlsx"
    workbook.save(path)
    summary = do_import(loaded, path)
    assert summary.sheet == "Affected" and summary.imported == 2
    assert any("read sheet 'Affected'" in n for n in summary.notes)
    by_name = do_import(loaded, path, sheet="other", dry_run=True)
    assert by_name.sheet == "Other" and by_name.imported == 1
    by_number = do_import(loaded, path, sheet="3", dry_run=True)
    assert by_number.sheet == "Other"
    with pytest.raises(
        NotifyError,
        match=r"--sheet Nope: .* no such sheet \(sheets: 'Read me', "
        "'Affected', 'Other'\\)",
    ):
        do_import(loaded, path, sheet="Nope")


def test_sheet_on_a_csv_is_an_error(loaded, tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(csv_bytes())
    with pytest.raises(NotifyError, match="--sheet 2: .* is not a workbook"):
        do_import(loaded, path, sheet="2")


# --------------------------------------------------------------------------- bounds, damage


def _xlsx_bytes(tmp_path) -> bytes:
    return xlsx(tmp_path / "base.xlsx", [HEADER, *ROWS]).read_bytes()


def _replace_part(data: bytes, name: str, content: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(
                info.filename, content if info.filename == name else source.read(info.filename)
            )
        if name not in source.namelist():
            target.writestr(name, content)
    return buffer.getvalue()


def _cli_import(env, campaign_file, path):
    runner = CliRunner()
    assert runner.invoke(main, ["campaign", "load", str(campaign_file)]).exit_code == 0
    return runner.invoke(main, ["contacts", "import", str(path), "--campaign", CAMPAIGN])


def _one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_decompression_bomb_is_refused_before_parsing(env, campaign_file, tmp_path):
    bomb = _replace_part(_xlsx_bytes(tmp_path), "xl/media/padding.bin", b"\0" * 5_000_000)
    path = tmp_path / "bomb.xlsx"
    path.write_bytes(bomb)
    result = _cli_import(env, campaign_file, path)
    _one_line_error(
        result, str(path), "a decompression bomb", "limit 100:1", "nothing was imported"
    )


def test_a_workbook_beyond_the_size_bound_is_refused(env, campaign_file, tmp_path, monkeypatch):
    monkeypatch.setattr(tabular, "MAX_WORKBOOK_BYTES", 100_000)
    big = _replace_part(_xlsx_bytes(tmp_path), "xl/media/photo.bin", os.urandom(200_000))
    path = tmp_path / "big.xlsx"
    path.write_bytes(big)
    result = _cli_import(env, campaign_file, path)
    _one_line_error(result, str(path), "uncompressed (limit 100,000)", "nothing was imported")


ENTITY_BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b']><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    b'count="1" uniqueCount="1"><si><t>&lol9;</t></si></sst>'
)


@pytest.mark.parametrize("damage", ["truncated", "entity bomb", "not xml"])
def test_a_damaged_workbook_is_one_line_naming_the_file(env, campaign_file, tmp_path, damage):
    data = _xlsx_bytes(tmp_path)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "entity bomb":
        data = _replace_part(data, "xl/sharedStrings.xml", ENTITY_BOMB)
    else:
        data = _replace_part(data, "xl/worksheets/sheet1.xml", b"<<<not xml")
    path = tmp_path / "damaged.xlsx"
    path.write_bytes(data)
    result = _cli_import(env, campaign_file, path)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], result.output


# --------------------------------------------------------------------------- clean text


def test_control_characters_and_bidi_overrides_are_removed_with_a_warning(loaded, tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(
        csv_bytes(
            [
                ["Customer ID", "Name", "Email", "Exposure", "Plan"],
                ["C-1", "Ana\x1b]0;pwned\x07 Lima", "ana@example.com", "card", "Gold"],
                ["C-2", "Ben \u202eevil\u202c", "ben@example.com", "card", "Basic\x9b"],
                ["C-3", "Chloé", "chloe@example.com", "card", "\u2066Gold\u2069"],
            ]
        )
    )
    summary = do_import(loaded, path)
    assert [p.line for p in summary.warned] == [2, 3, 4]
    assert summary.warned[0].reason == "control characters removed from column 'Name'"
    assert "column 'Plan'" in summary.warned[1].reason
    contacts = stored(loaded)
    assert contacts["C-1"].name == "Ana]0;pwned Lima"
    assert contacts["C-2"].name == "Ben evil"
    assert contacts["C-2"].extra == {"plan": "Basic"}
    assert contacts["C-3"].extra == {"plan": "Gold"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_nul_rejects_its_row_with_its_line(loaded, tmp_path, fmt):
    path = tmp_path / f"list.{fmt}"
    if fmt == "csv":
        # Past the first 64 KB, where a sample-based check would not look.
        filler = "".join(f"F-{i},Filler,f{i}@example.com,card\n" for i in range(3000))
        path.write_bytes(
            (
                "Customer ID,Name,Email,Exposure\n"
                + filler
                + "C-1,Ana\x00Lima,ana@example.com,card\n"
                + "C-2,Ben,ben@example.com,card\n"
            ).encode()
        )
        line = 3002
    else:
        path.write_text(
            '{"id": "C-0", "email": "z@example.com", "exposure": "card"}\n'
            '{"id": "C-1", "email": "ana@example.com", "exposure": "card", '
            '"name": "Ana\\u0000Lima"}\n'
            '{"id": "C-2", "email": "ben@example.com", "exposure": "card"}\n',
            encoding="utf-8",
        )
        line = 2
    summary = do_import(loaded, path)
    assert [p.line for p in summary.rejects] == [line]
    assert "NUL" in summary.rejects[0].reason
    contacts = stored(loaded)
    assert "C-1" not in contacts and "C-2" in contacts
    assert not any("\x00" in (c.name or "") for c in contacts.values())


def test_a_short_list_with_terminal_escapes_is_text_not_binary(loaded, tmp_path):
    """A few escape sequences in a small file are a hostile name, not a binary file: cleaned
    with a warning like any other control character (they were refused as 'binary data')."""
    path = tmp_path / "list.csv"
    path.write_bytes(
        csv_bytes(
            [
                ["Customer ID", "Name", "Email", "Exposure"],
                ["C-1", "Ann\x1b]0;pwned\x07\x1b[2J\x1b[H", "ann@example.com", "card"],
            ]
        )
    )
    summary = do_import(loaded, path)
    assert [p.line for p in summary.warned] == [2]
    assert stored(loaded)["C-1"].name == "Ann]0;pwned[2J[H"
