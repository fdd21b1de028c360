"""Importing the affected-customer list: file formats, encodings, header aliases, --map, extra."""

from __future__ import annotations

import csv
import json

import openpyxl
import pytest
from click.testing import CliRunner

from notify import db
from notify.cli import main
from notify.errors import NotifyError
from tests.conftest import ROOT
from tests.import_helpers import CAMPAIGN, do_import, stored


def write_rows(path, rows, delimiter=","):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


HEADER = ["Customer ID", "Full Name", "E-mail Address", "Mobile", "Data Exposed"]
ROWS = [
    ["C-1", "Ana Lima", "ana@example.com", "(415) 555-0134", "passwords; card"],
    ["C-2", "Ben Okafor", "ben@example.org", "415.555.0135", "Card Data"],
]


@pytest.mark.parametrize(
    "delimiter, suffix",
    [
        (",", ".csv"),
        (";", ".csv"),
        ("\t", ".tsv"),
        ("\t", ".csv"),
        ("|", ".txt"),
    ],
)
def test_delimiters_are_sniffed(loaded, tmp_path, delimiter, suffix):
    path = write_rows(tmp_path / f"list{suffix}", [HEADER, *ROWS], delimiter)
    summary = do_import(loaded, path)
    assert summary.counts() == {"read": 2, "imported": 2, "merged": 0, "warnings": 0, "rejected": 0}
    contacts = stored(loaded)
    assert contacts["C-1"].exposures == "card;passwords"
    assert contacts["C-1"].phone == "+14155550134"
    assert contacts["C-2"].email == "ben@example.org"
    assert contacts["C-2"].exposures == "card"


def test_bom_crlf_and_quoted_newlines_keep_physical_line_numbers(loaded, tmp_path):
    text = (
        "\ufeffCustomer ID,Full Name,Email,Phone,Exposure\r\n"
        'C-1,"Ana\r\nLima",ana@example.com,,passwords\r\n'  # lines 2-3
        "C-2,Ben,,,card\r\n"  # line 4: rejected, no email or phone
        '"C-3","Chloé\nMartin\nJr",chloe@example.net,,identity\r\n'  # lines 5-7
        "C-4,Dan,not-an-email,call me,card\r\n"  # line 8: rejected
    )
    path = tmp_path / "list.csv"
    path.write_bytes(text.encode("utf-8"))
    rejects = tmp_path / "rejects.csv"
    summary = do_import(loaded, path, rejects_path=rejects)
    assert [p.line for p in summary.rejects] == [4, 8]
    with open(rejects, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "reason", "Customer ID", "Full Name", "Email", "Phone", "Exposure"]
    assert [r[0] for r in rows[1:]] == ["4", "8"]
    contacts = stored(loaded)
    assert contacts["C-1"].name == "Ana Lima"  # a name on one line: it may reach a header
    assert contacts["C-3"].name == "Chloé Martin Jr"
    assert "Customer ID" not in {c.key for c in contacts.values()}  # BOM did not stick


def test_xlsx_uses_sheet_row_numbers_and_plain_numbers(loaded, tmp_path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Account", "Name", "Cell", "E-mail", "Exposed"])
    sheet.append([1001, "Ana Lima", 4155550134, "ana@example.com", "Passwords"])
    sheet.append([])  # an empty row: skipped, but it still has a number
    sheet.append([1002, "Ben", None, None, "card"])  # row 4: rejected
    sheet.append([1003, "Chloé", "+44 20 7946 0958", None, "identity, card"])
    path = tmp_path / "list.xlsx"
    workbook.save(path)
    summary = do_import(loaded, path)
    assert summary.counts()["imported"] == 2
    assert [(p.line, p.reason) for p in summary.rejects] == [(4, "no email and no phone")]
    contacts = stored(loaded)
    assert contacts["1001"].phone == "+14155550134"  # not "4155550134.0"
    assert contacts["1003"].phone == "+442079460958"
    assert contacts["1003"].exposures == "identity;card"


def test_utf16_unicode_text_and_excel_sep_hint(loaded, tmp_path):
    utf16 = tmp_path / "unicode.txt"
    utf16.write_bytes("Email\tPhone\tExposure\r\nzoé@example.de\t\tcard\r\n".encode("utf-16"))
    summary = do_import(loaded, utf16)
    assert summary.imported == 1
    hinted = tmp_path / "hinted.csv"
    hinted.write_text("sep=;\nEmail;Exposure\nana@example.com;passwords, card\n", encoding="utf-8")
    summary = do_import(loaded, hinted)
    assert summary.counts()["imported"] == 1
    assert stored(loaded)["ana@example.com"].exposures == "card;passwords"
    assert "zoé@example.de" in stored(loaded)


def test_header_aliases_ignore_case_and_punctuation(loaded, tmp_path):
    path = write_rows(
        tmp_path / "list.csv",
        [
            [
                "ACCOUNT ID",
                "Given Name",
                "Surname",
                "EMAIL_ADDRESS",
                "Cell Phone",
                "Exposure-Type",
                "Province",
                "Language",
                "Loyalty Tier",
            ],
            [
                "A-7",
                "Ana",
                "Lima",
                "ana@example.com",
                "+1 415 555 0134",
                "SSN",
                "ON",
                "fr-CA",
                "Gold",
            ],
        ],
    )
    do_import(loaded, path)
    contact = stored(loaded)["A-7"]
    assert (contact.name, contact.email, contact.phone) == (
        "Ana Lima",
        "ana@example.com",
        "+14155550134",
    )
    assert (contact.exposures, contact.state, contact.locale) == ("identity", "ON", "fr-CA")
    # Other columns are kept for templates; first/last names under their field names.
    assert contact.extra == {"first_name": "Ana", "last_name": "Lima", "loyalty_tier": "Gold"}


def test_map_adds_aliases(loaded, tmp_path):
    path = write_rows(
        tmp_path / "kunden.csv",
        [
            ["Kundennummer", "E-Post", "Handy", "Daten"],
            ["K-1", "ana@example.de", "030 901820", "Passwords"],
        ],
    )
    with pytest.raises(NotifyError, match="no email or phone column"):
        do_import(loaded, path)
    summary = do_import(
        loaded,
        path,
        default_region="DE",
        mapping={"Kundennummer": "key", "e-post": "email", "Handy": "phone", "Daten": "exposure"},
    )
    assert summary.counts()["imported"] == 1
    contact = stored(loaded)["K-1"]
    assert (contact.email, contact.phone, contact.exposures) == (
        "ana@example.de",
        "+4930901820",
        "passwords",
    )


def test_two_phone_columns_are_settled_with_map(loaded, tmp_path):
    path = write_rows(
        tmp_path / "list.csv",
        [
            ["Email", "Phone", "Mobile", "Exposure"],
            ["ana@example.com", "+1 415 555 0134", "(646) 555-0141", "card"],
        ],
    )
    with pytest.raises(
        NotifyError,
        match="'Phone' and 'Mobile' both look like the phone; "
        'choose one with --map "Mobile=phone"',
    ):
        do_import(loaded, path)
    assert stored(loaded) == {}
    do_import(loaded, path, mapping={"Mobile": "phone"})
    contact = stored(loaded)["ana@example.com"]
    assert contact.phone == "+16465550141"
    assert contact.extra == {"phone": "+1 415 555 0134"}  # the other one is kept as data


def test_exposure_flag_columns(loaded, tmp_path):
    path = write_rows(
        tmp_path / "flags.csv",
        [
            ["Email", "Passwords", "Card", "Identity"],
            ["a@example.com", "yes", "", "no"],
            ["b@example.com", "X", "TRUE", "1"],
            ["c@example.com", "no", "0", ""],  # line 4: rejected
            ["d@example.com", "maybe", "y", "n"],  # line 5: neither yes nor no: rejected
        ],
    )
    summary = do_import(loaded, path)
    contacts = stored(loaded)
    assert contacts["a@example.com"].exposures == "passwords"
    assert contacts["b@example.com"].exposures == "identity;card;passwords"
    assert "d@example.com" not in contacts
    assert [p.line for p in summary.rejects] == [4, 5]
    assert summary.rejects[1].reason == (
        "column 'Passwords' is \"maybe\", neither yes nor no "
        "(yes, true, 1, x / no, false, 0, empty)"
    )


def test_example_list_through_the_cli(env, campaign_file, tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["campaign", "load", str(campaign_file)]).exit_code == 0
    rejects = tmp_path / "rejects.csv"
    result = runner.invoke(
        main,
        [
            "contacts",
            "import",
            str(ROOT / "contacts" / "example.csv"),
            "--campaign",
            CAMPAIGN,
            "--rejects",
            str(rejects),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts == {
        "read": 41,
        "imported": 36,
        "merged": 1,
        "warnings": 2,
        "rejected": 4,
        "possible_duplicates": 0,
    }
    assert (
        "41 rows: 36 new, 0 already present, 0 changed; 1 repeated in the file, "
        "4 rejected; 2 with warnings."
    ) in result.stdout
    assert "line 37: no email and no phone" in result.stdout
    assert "line 38: no recognized exposure" in result.stdout
    with open(rejects, encoding="utf-8", newline="") as handle:
        assert [row[0] for row in csv.reader(handle)][1:] == ["37", "38", "39", "40"]
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    contacts = stored(engine)
    assert len(contacts) == 36
    assert contacts["C-1005"].email == "emilie.dubois@xn--bcher-kva.example"
    assert contacts["C-1004"].email == "DAVID.CHEN@example.com"
    assert contacts["C-1004"].phone == "+14155550136"  # 001-415-555-0136
    assert contacts["C-1010"].exposures == "card;passwords"  # the duplicate, merged
    assert contacts["C-1032"].name == '=HYPERLINK("http://x.example","Fiona")'  # data, as is
    assert contacts["C-1001"].extra == {"plan": "Premium"}
