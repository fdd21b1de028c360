"""Importing the affected-customer list: merging by key, re-imports, dry runs, all-or-nothing."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import db, importer
from notify.cli import main
from notify.models import AuditRecord, Contact
from tests.import_helpers import CAMPAIGN, do_import, stored


def snapshot(engine) -> list[tuple]:
    """Every stored contact, every column: equal snapshots mean nothing changed."""
    table = Contact.__table__
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(table).order_by(table.c.key))]


def write_rows(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


LIST = [
    ["Customer ID", "Name", "Email", "Phone", "Exposure", "Country"],
    ["C-1", "Ana Lima", "ana@example.com", "", "passwords", ""],
    ["C-2", "Ben Okafor", "ben@example.org", "(415) 555-0135", "card", "US"],
    ["C-1", "", "", "(415) 555-0134", "card", "US"],  # same key: merged, blanks filled
    ["C-3", "", "", "", "card", ""],  # rejected
    ["C-2", "Benjamin", "other@example.org", "(415) 555-0199", "card", "CA"],  # conflicts
]


def test_same_key_in_one_file_is_one_contact(loaded, tmp_path):
    summary = do_import(loaded, write_rows(tmp_path / "list.csv", LIST))
    assert summary.counts() == {"read": 5, "imported": 2, "merged": 2, "warnings": 1, "rejected": 1}
    assert summary.imported == summary.read - summary.rejected - summary.merged
    contacts = stored(loaded)
    assert set(contacts) == {"C-1", "C-2"}
    ana = contacts["C-1"]
    assert (ana.exposures, ana.phone, ana.country) == ("card;passwords", "+14155550134", "US")
    assert ana.created_at.tzinfo is not None  # read back through models.UTCDateTime
    assert abs(datetime.now(UTC) - ana.created_at) < timedelta(minutes=5)
    ben = contacts["C-2"]  # the first values are kept, the differing ones reported
    assert (ben.name, ben.email, ben.phone, ben.country) == (
        "Ben Okafor",
        "ben@example.org",
        "+14155550135",
        "US",
    )
    [warning] = summary.warned
    assert warning.line == 6
    assert 'email "other@example.org" differs from line 3 ("ben@example.org")' in warning.reason
    assert "phone +14155550199 differs from line 3 (+14155550135)" in warning.reason


def test_reimporting_the_same_file_changes_nothing(loaded, tmp_path):
    path = write_rows(tmp_path / "list.csv", LIST)
    do_import(loaded, path)
    before = snapshot(loaded)
    summary = do_import(loaded, path)
    assert summary.imported == 0
    assert summary.merged == summary.read - summary.rejected == 4
    assert summary.updated == 0
    assert snapshot(loaded) == before  # not even updated_at moved


def test_a_later_import_unites_exposures_and_fills_blanks(loaded, tmp_path):
    do_import(
        loaded,
        write_rows(
            tmp_path / "first.csv",
            [
                ["id", "email", "phone", "exposure"],
                ["C-1", "ana@example.com", "", "passwords"],
                ["C-2", "ben@example.org", "", "card"],
            ],
        ),
    )
    ben_updated_at = stored(loaded)["C-2"].updated_at
    summary = do_import(
        loaded,
        write_rows(
            tmp_path / "second.csv",
            [
                ["id", "email", "phone", "exposure", "state"],
                ["C-1", "ANA@example.com", "(415) 555-0134", "identity", "CA"],
                ["C-2", "ben@example.org", "", "card", ""],
                ["C-4", "dan@example.net", "", "card", ""],
            ],
        ),
    )
    assert summary.counts() == {"read": 3, "imported": 1, "merged": 2, "warnings": 0, "rejected": 0}
    assert summary.updated == 1
    contacts = stored(loaded)
    ana = contacts["C-1"]
    assert (ana.exposures, ana.phone, ana.state, ana.email) == (
        "identity;passwords",
        "+14155550134",
        "CA",
        "ana@example.com",
    )
    assert contacts["C-2"].updated_at == ben_updated_at  # nothing new for Ben: not rewritten
    assert set(contacts) == {"C-1", "C-2", "C-4"}


def test_dry_run_reports_the_same_numbers_and_writes_nothing(loaded, tmp_path):
    do_import(loaded, write_rows(tmp_path / "first.csv", LIST[:3]))
    before = snapshot(loaded)
    path = write_rows(tmp_path / "list.csv", LIST + [["C-9", "", "z@example.com", "", "pii", ""]])
    rejects = tmp_path / "rejects.csv"
    dry = do_import(loaded, path, dry_run=True, rejects_path=rejects)
    assert snapshot(loaded) == before
    assert rejects.read_text(encoding="utf-8").splitlines()[1].startswith("5,")  # a report
    real = do_import(loaded, path)
    assert (
        dry.counts()
        == real.counts()
        == {"read": 6, "imported": 1, "merged": 4, "warnings": 1, "rejected": 1}
    )
    assert (dry.rejects, dry.warned, dry.updated) == (real.rejects, real.warned, real.updated)
    assert snapshot(loaded) != before


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_interrupted_import_leaves_the_database_and_rejects_file_as_they_were(
    loaded, tmp_path, monkeypatch, failure
):
    do_import(loaded, write_rows(tmp_path / "first.csv", LIST[:2]))
    before = snapshot(loaded)
    rows = [LIST[0]] + [[f"K-{i}", "", f"u{i}@example.com", "", "card", ""] for i in range(9)]
    rows += [["C-1", "", "", "(415) 555-0134", "identity", ""], ["C-8", "", "", "", "card", ""]]
    path = write_rows(tmp_path / "list.csv", rows)
    monkeypatch.setattr(importer, "CHUNK", 2)  # several chunks are written before the failure

    def crash(self):
        # Every row was processed and the 9 new contacts already inserted (5 chunks).
        assert "C-1" in self.changes and self.summary.imported == 9
        written = self.writer.conn.exec_driver_sql("SELECT count(*) FROM contacts").scalar()
        assert written == 1 + 9
        raise failure("interrupted")

    monkeypatch.setattr(importer._Importer, "finish", crash)
    with pytest.raises(failure):
        do_import(loaded, path, rejects_path=tmp_path / "rejects.csv")
    assert snapshot(loaded) == before
    assert not (tmp_path / "rejects.csv").exists()
    assert not list(tmp_path.glob(".rejects.csv.*"))  # no temporary file left behind


def test_cli_json_summary_and_audit_record(env, campaign_file, tmp_path):
    path = write_rows(tmp_path / "list.csv", LIST)
    runner = CliRunner()
    runner.invoke(main, ["campaign", "load", str(campaign_file)])
    dry = runner.invoke(
        main, ["contacts", "import", str(path), "--campaign", CAMPAIGN, "--dry-run", "--json"]
    )
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith("Dry run (nothing written)")
    real = runner.invoke(main, ["contacts", "import", str(path), "--campaign", CAMPAIGN, "--json"])
    assert real.exit_code == 0, real.output
    counts = json.loads(real.stdout.strip().splitlines()[-1])
    assert counts == json.loads(dry.stdout.strip().splitlines()[-1])
    assert counts == {
        "read": 5,
        "imported": 2,
        "merged": 2,
        "warnings": 1,
        "rejected": 1,
        "possible_duplicates": 0,
    }
    assert all(type(v) is int for v in counts.values())
    assert "  line 5: no email and no phone" in real.stdout
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        records = list(
            session.scalars(select(AuditRecord).where(AuditRecord.command == "contacts import"))
        )
        assert len(records) == 1  # the dry run changed nothing, so it is not audited
        assert records[0].campaign == CAMPAIGN
        assert records[0].counts["imported"] == 2 and records[0].counts["rejected"] == 1
        assert records[0].arguments["file"] == str(path)
        assert session.scalar(select(func.count()).select_from(Contact)) == 2
