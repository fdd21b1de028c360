"""Importing: customers known by any key, possible duplicates, --merge-on, --update, and the
words people use for exposures (every vocabulary entry, flag headers, --map-value)."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from notify import exposures
from notify.cli import main
from notify.errors import NotifyError
from notify.importer import parse_value_map
from tests.import_helpers import CAMPAIGN, do_import, stored


def write_rows(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.mark.parametrize(
    "header",
    [
        "Cust #",
        "Cust ID",
        "Customer #",
        "Acct #",
        "Customer Number",
        "Customer No.",
        "Client ID",
        "Account Number",
        "Member No",
        "User ID",
        "acct_no",
        "CustID",
    ],
)
def test_key_aliases_name_the_key_column(loaded, tmp_path, header):
    path = write_rows(
        tmp_path / "list.csv", [[header, "Email", "Exposure"], ["K-1", "ana@example.com", "card"]]
    )
    summary = do_import(loaded, path)
    assert summary.key_column == header
    assert set(stored(loaded)) == {"K-1"}


def test_without_a_key_column_the_summary_says_so(env, campaign_file, tmp_path):
    path = write_rows(tmp_path / "list.csv", [["Email", "Exposure"], ["a@example.com", "card"]])
    runner = CliRunner()
    runner.invoke(main, ["campaign", "load", str(campaign_file)])
    result = runner.invoke(main, ["contacts", "import", str(path), "--campaign", CAMPAIGN])
    assert result.exit_code == 0, result.output
    assert "Read CSV; no key column: contacts are keyed by email, else phone." in result.stdout
    keyed = write_rows(
        tmp_path / "keyed.csv", [["Cust #", "Email", "Exposure"], ["K-1", "b@example.com", "card"]]
    )
    result = runner.invoke(main, ["contacts", "import", str(keyed), "--campaign", CAMPAIGN])
    assert "Read CSV; key column 'Cust #'." in result.stdout


FIRST = [
    ["Customer Number", "Email", "Phone", "Exposure", "Name"],
    ["C-1", "ana@example.com", "(415) 555-0134", "passwords", "Ana"],
    ["C-2", "ben@example.com", "(415) 555-0135", "card", "Ben"],
]
SECOND = [
    ["Cust #", "Email", "Phone", "Exposure", "Name"],
    ["100", "ANA@example.com", "", "card", "Ana Lima"],  # Ana's email under another key
    ["101", "", "415.555.0135", "identity", "Ben O."],  # Ben's phone under another key
    ["102", "new@example.com", "", "card", ""],
]


def test_another_key_for_a_known_address_is_a_possible_duplicate(env, campaign_file, tmp_path):
    runner = CliRunner()
    runner.invoke(main, ["campaign", "load", str(campaign_file)])
    first = write_rows(tmp_path / "first.csv", FIRST)
    second = write_rows(tmp_path / "second.csv", SECOND)
    assert (
        runner.invoke(main, ["contacts", "import", str(first), "--campaign", CAMPAIGN]).exit_code
        == 0
    )
    result = runner.invoke(
        main, ["contacts", "import", str(second), "--campaign", CAMPAIGN, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "read": 3,
        "imported": 3,
        "merged": 0,
        "warnings": 2,
        "rejected": 0,
        "possible_duplicates": 2,
    }
    assert (
        'line 2: possible duplicate: email "ANA@example.com" also belongs to key "C-1", '
        'this row\'s key is "100"; imported as a new contact (--merge-on email merges '
        "them)"
    ) in result.stdout
    assert (
        'line 3: possible duplicate: phone "+14155550135" also belongs to key "C-2"'
        in result.stdout
    )


@pytest.mark.parametrize("merge_on", ["email", "phone"])
def test_merge_on_unites_the_rows_with_the_existing_contact(loaded, tmp_path, merge_on):
    do_import(loaded, write_rows(tmp_path / "first.csv", FIRST))
    summary = do_import(loaded, write_rows(tmp_path / "second.csv", SECOND), merge_on=merge_on)
    contacts = stored(loaded)
    if merge_on == "email":
        assert set(contacts) == {"C-1", "C-2", "101", "102"}
        assert contacts["C-1"].exposures == "card;passwords"  # exposures united
        assert summary.possible_duplicates == 1  # Ben's phone: not what was asked to merge on
    else:
        assert set(contacts) == {"C-1", "C-2", "100", "102"}
        assert contacts["C-2"].exposures == "identity;card"
        assert summary.possible_duplicates == 1
    assert summary.merged == 1 and summary.imported == 2


def test_merge_on_within_one_file(loaded, tmp_path):
    summary = do_import(
        loaded,
        write_rows(
            tmp_path / "list.csv",
            [
                ["id", "email", "exposure"],
                ["A", "x@example.com", "card"],
                ["B", "X@example.com", "passwords"],
            ],
        ),
        merge_on="email",
    )
    assert summary.counts()["merged"] == 1
    assert stored(loaded)["A"].exposures == "card;passwords"
    assert set(stored(loaded)) == {"A"}


def test_update_replaces_email_phone_and_name(loaded, tmp_path):
    do_import(loaded, write_rows(tmp_path / "first.csv", FIRST))
    fixes = write_rows(
        tmp_path / "fixes.csv",
        [
            ["Customer Number", "Email", "Phone", "Exposure", "Name"],
            ["C-1", "ana.lima@example.org", "(646) 555-0141", "passwords", "Ana Lima"],
            ["C-2", "", "", "card", ""],  # nothing to replace with: blanks do not erase
        ],
    )
    kept = do_import(loaded, fixes)  # without --update: the first values stay, with warnings
    assert stored(loaded)["C-1"].email == "ana@example.com"
    assert "kept the first (--update replaces it)" in kept.warned[0].reason
    summary = do_import(loaded, fixes, update=True)
    ana = stored(loaded)["C-1"]
    assert (ana.email, ana.phone, ana.name) == ("ana.lima@example.org", "+16465550141", "Ana Lima")
    assert summary.updated == 1 and summary.warnings == 0
    ben = stored(loaded)["C-2"]
    assert (ben.email, ben.phone, ben.name) == ("ben@example.com", "+14155550135", "Ben")
    again = do_import(loaded, fixes, update=True)
    assert again.updated == 0  # the same corrections again change nothing


# --------------------------------------------------------------------------- vocabulary


VOCABULARY = [(word, kind) for kind, words in exposures.VOCABULARY.items() for word in words]


@pytest.mark.parametrize("word, kind", VOCABULARY, ids=[w for w, _ in VOCABULARY])
def test_every_vocabulary_word_is_an_exposure(word, kind):
    assert exposures.parse_exposures(word) == ({kind}, [])
    assert exposures.parse_exposures(word.upper().replace(" ", "-")) == ({kind}, [])


def test_the_vocabulary_through_an_import(loaded, tmp_path):
    rows = [["id", "email", "exposure"]]
    rows += [[f"K{i}", f"u{i}@example.com", word] for i, (word, _) in enumerate(VOCABULARY)]
    summary = do_import(loaded, write_rows(tmp_path / "list.csv", rows))
    assert summary.rejected == 0 and summary.warnings == 0
    contacts = stored(loaded)
    for i, (word, kind) in enumerate(VOCABULARY):
        assert contacts[f"K{i}"].exposures == kind, word


@pytest.mark.parametrize(
    "header, kind",
    [
        ("Password Exposed", "passwords"),
        ("SSN/DOB Exposed (Y/N)", "identity"),
        ("Card compromised?", "card"),
        ("Passwords", "passwords"),
        ("PAN leaked", "card"),
        ("Driver's License Affected", "identity"),
        ("Credentials Y/N", "passwords"),
    ],
)
def test_flag_headers(loaded, tmp_path, header, kind):
    path = write_rows(
        tmp_path / "flags.csv", [["Email", header], ["a@example.com", "Y"], ["b@example.com", "N"]]
    )
    summary = do_import(loaded, path)
    assert stored(loaded)["a@example.com"].exposures == kind
    assert [p.line for p in summary.rejects] == [3]  # "N": no exposure at all


def test_a_column_named_for_the_data_is_not_a_flag(loaded, tmp_path):
    # "PAN" alone holds card numbers: kept as data, never read as yes/no.
    path = write_rows(
        tmp_path / "list.csv",
        [["Email", "PAN", "Exposure"], ["a@example.com", "4111111111111111", "card"]],
    )
    do_import(loaded, path)
    assert stored(loaded)["a@example.com"].extra == {"pan": "4111111111111111"}


def test_a_flag_that_is_neither_yes_nor_no_rejects_without_echoing_data(loaded, tmp_path):
    path = write_rows(
        tmp_path / "flags.csv",
        [["Email", "SSN exposed"], ["a@example.com", "unknown"], ["b@example.com", "123-45-6789"]],
    )
    summary = do_import(loaded, path)
    assert [p.reason for p in summary.rejects] == [
        "column 'SSN exposed' is \"unknown\", neither yes nor no (yes, true, 1, x / no, false, "
        "0, empty)",
        "column 'SSN exposed' is a value that is not a flag (not shown: it looks like data), "
        "neither yes nor no (yes, true, 1, x / no, false, 0, empty)",
    ]


def test_map_value_adds_words(loaded, tmp_path):
    path = write_rows(
        tmp_path / "list.csv",
        [
            ["Email", "Exposure", "Tokens leaked"],
            ["a@example.com", "session tokens", ""],
            ["b@example.com", "", "yes"],
        ],
    )
    rejected = do_import(loaded, path, dry_run=True)
    assert rejected.all_rejected
    words = parse_value_map(["session tokens=passwords", "Tokens=passwords"])
    assert words == {"sessiontokens": "passwords", "tokens": "passwords"}
    summary = do_import(loaded, path, value_map=words)
    assert summary.rejected == 0
    assert {c.exposures for c in stored(loaded).values()} == {"passwords"}


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("PAN", "expected WORD=KIND"),
        ("PAN=money", "unknown kind 'money'"),
        ("=card", "WORD=KIND"),
    ],
)
def test_map_value_errors(item, fragment):
    with pytest.raises(NotifyError, match=fragment):
        parse_value_map([item])


def test_international_fast_path_agrees_with_phonenumbers():
    """Numbers written +CC ... skip parse() when that cannot change the answer."""
    import random

    import phonenumbers

    from notify.addresses import normalize_phone
    from notify.importer import _other_phone

    for raw in (
        "+44 020 7946 0958",
        "+44 20 7946 0958",
        "+33 01 23 45 67 89",
        "+7 8 495 123 45 67",
        "+39 06 6982 0000",
        "+61 02 9374 4000",
    ):
        assert _other_phone(raw, "US") == normalize_phone(raw, "US"), raw
    assert _other_phone("+44 020 7946 0958", "US") == ("+442079460958", None)
    rng = random.Random(11)
    codes = [44, 33, 49, 39, 34, 61, 52, 54, 7, 91, 55, 81, 31, 353, 972, 86, 27, 65, 380, 90]
    checked = 0
    for _ in range(8000):
        code = rng.choice(codes)
        national = str(rng.randint(10**6, 10**11 - 1))
        if rng.random() < 0.2:  # prefixes parse() strips: 0, GB's 180020, RU's 8, AR's 15...
            national = rng.choice(["0", "180020", "8", "15", "9", "1"]) + national[:8]
        raw = f"+{code} {national[:3]} {national[3:]}"
        assert _other_phone(raw, "US") == normalize_phone(raw, "US"), raw
        checked += phonenumbers.is_valid_number(phonenumbers.parse(raw, "US"))
    assert checked > 400  # the sample holds plenty of valid numbers, not only refusals


def test_helper_process_judges_international_numbers_as_the_importer_would():
    """A big list of distinct international numbers is judged in a helper process (while the
    other columns are cleaned); its verdicts are the importer's own, in the same order."""
    import random

    from notify import importer

    rng = random.Random(7)
    codes = [44, 33, 49, 39, 61, 7, 91, 353, 86, 27]
    numbers = [
        f"+{rng.choice(codes)}{rng.randint(10**6, 10**11 - 1)}"
        for _ in range(importer.HELPER_PHONES)
    ]
    numbers += ["+1", "+4420", "+442079460958", "+440207946095", None]
    verdicts = importer._Verdicts(numbers)
    judged = verdicts.result()
    assert verdicts.output, "the helper process did not answer"
    assert judged == {n: importer._international(n) for n in numbers if n is not None}
    assert judged["+442079460958"] == ("+442079460958", None)
    assert judged["+440207946095"] is None  # a national 0: normalize_phone decides
    assert sum(v == (None, "not a valid phone number") for v in judged.values()) > 100
    small = importer._Verdicts(numbers[:50])
    assert small.result() == {n: importer._international(n) for n in numbers[:50]}
    assert not small.output  # a short list is judged in this process


def test_validity_for_codes_several_regions_share_is_phonenumbers_own():
    """+44 (GB, GG, IM, JE), +7 (RU, KZ), +61, +262, +590...: the region is found once and
    its verdict reused; the answer is is_valid_number's, for valid and invalid numbers."""
    import random

    import phonenumbers

    from notify.intl_phones import _is_valid

    rng = random.Random(3)
    codes = [44, 7, 61, 262, 590, 599, 47, 358, 212, 290, 672, 33, 49]
    valid = 0
    for _ in range(20000):
        code = rng.choice(codes)
        national = str(rng.randint(10**5, 10**11 - 1))
        if rng.random() < 0.4:  # leading digits of the regions sharing a code
            national = (
                rng.choice(["20", "7", "1624", "1481", "1534", "7700", "495", "4", "33", "6"])
                + national[: rng.randint(5, 9)]
            )
        number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
        expected = phonenumbers.is_valid_number(number)
        assert _is_valid(number, code, str(number.national_number)) == expected, (code, national)
        valid += expected
    assert valid > 1000
