"""`notify contacts list` and `notify contacts remove`, and the import's progress lines."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import db
from notify.cli import main
from notify.cli.contacts import _ImportProgress
from notify.models import AuditRecord, Contact, Message, PasswordReset, Tally
from tests.import_helpers import CAMPAIGN

LIST = (
    "Customer ID,Name,Email,Phone,Exposure\n"
    "C-1,Ana Lima,ana@example.com,(415) 555-0134,passwords\n"
    "C-2,Ben,ben@example.com,,card\n"
    "C-3,=cmd(),chloe@example.com,,identity\n"
)


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


@pytest.fixture
def imported(env, campaign_file, tmp_path):
    assert invoke("campaign", "load", str(campaign_file)).exit_code == 0
    path = tmp_path / "list.csv"
    path.write_text(LIST, encoding="utf-8")
    assert invoke("contacts", "import", str(path), "--campaign", CAMPAIGN).exit_code == 0
    return db.connect(env["NOTIFY_DATABASE_URL"])


def test_list_as_table_csv_and_json(imported):
    table = invoke("contacts", "list", "--campaign", CAMPAIGN)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["key", "name", "email", "phone", "exposures"]
    assert lines[1].startswith("C-1") and "+14155550134" in lines[1]
    for args in (["--csv"], ["--format", "csv"]):
        rows = list(
            csv.reader(
                io.StringIO(invoke("contacts", "list", "--campaign", CAMPAIGN, *args).stdout)
            )
        )
        assert rows[0] == [
            "key",
            "name",
            "email",
            "phone",
            "exposures",
            "country",
            "state",
            "created_at",
        ]
        assert rows[3][1] == "'=cmd()"  # a formula cell neutralized, as in the exports
        assert rows[1][4] == "passwords"
    for args in (["--json"], ["--format", "json"]):
        data = json.loads(
            invoke("contacts", "list", "--campaign", CAMPAIGN, *args).stdout.splitlines()[-1]
        )
        assert [c["key"] for c in data] == ["C-1", "C-2", "C-3"]
        assert data[0]["exposures"] == ["passwords"] and data[0]["created_at"].endswith("Z")
    unknown = invoke("contacts", "list", "--campaign", "nope")
    assert unknown.exit_code == 1 and "unknown campaign" in unknown.output


def _contacts(engine) -> set[str]:
    with db.session_scope(engine) as session:
        return set(session.scalars(select(Contact.key)))


def _audits(engine) -> list[AuditRecord]:
    with db.session_scope(engine) as session:
        records = list(
            session.scalars(select(AuditRecord).where(AuditRecord.command == "contacts remove"))
        )
        session.expunge_all()
        return records


def test_remove_dry_run_then_for_real_audited(imported, tmp_path):
    dry = invoke("contacts", "remove", "--campaign", CAMPAIGN, "C-2", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert "Dry run (nothing removed): would remove 1 contact(s)" in dry.stdout
    assert _contacts(imported) == {"C-1", "C-2", "C-3"}
    assert _audits(imported) == []
    refused = invoke("contacts", "remove", "--campaign", CAMPAIGN, "C-2")  # no tty, no --yes
    assert refused.exit_code == 1 and "add --yes" in refused.output
    done = invoke("contacts", "remove", "--campaign", CAMPAIGN, "C-2", "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "removed": 1,
        "unknown": 0,
        "refused": 0,
        "messages_removed": 0,
    }
    assert _contacts(imported) == {"C-1", "C-3"}
    [record] = _audits(imported)
    assert record.arguments["keys"] == ["C-2"] and record.counts["removed"] == 1
    with db.session_scope(imported) as session:  # the count follows (triggers)
        assert session.scalar(select(func.sum(Tally.n)).where(Tally.name == "contacts")) == 2


def test_remove_keys_from_a_file(imported, tmp_path):
    keys = tmp_path / "wrong.csv"
    keys.write_text("Cust #,Note\nC-1,test row\nC-3,wrong list\n", encoding="utf-8")
    result = invoke("contacts", "remove", "--campaign", CAMPAIGN, "--keys-from", str(keys), "--yes")
    assert result.exit_code == 0, result.output
    assert _contacts(imported) == {"C-2"}
    plain = tmp_path / "keys.txt"
    plain.write_text("C-2\n\n", encoding="utf-8")
    assert (
        invoke(
            "contacts", "remove", "--campaign", CAMPAIGN, "--keys-from", str(plain), "--yes"
        ).exit_code
        == 0
    )
    assert _contacts(imported) == set()


def test_remove_refuses_a_contact_already_handed_over_and_unknown_keys(imported):
    with db.session_scope(imported) as session:
        contacts = {c.key: c for c in session.scalars(select(Contact))}
        for key, status in (("C-1", "sent"), ("C-2", "pending"), ("C-3", "skipped")):
            session.add(
                Message(
                    campaign_id=contacts[key].campaign_id,
                    contact_id=contacts[key].id,
                    channel="email",
                    notice="notice",
                    sequence=0,
                    status=status,
                    address=contacts[key].email,
                )
            )
        session.add(
            PasswordReset(campaign_id=contacts["C-1"].campaign_id, contact_id=contacts["C-1"].id)
        )
    result = invoke("contacts", "remove", "--campaign", CAMPAIGN, "C-1", "C-2", "C-9", "--yes")
    assert result.exit_code == 1
    assert "Nothing removed from acme-2026-11:" in result.output
    assert "1 key(s) not in the campaign: 'C-9'" in result.output
    assert "'C-1': a message was already handed to a provider (sent)" in result.output
    assert _contacts(imported) == {"C-1", "C-2", "C-3"}  # all or nothing
    assert _audits(imported) == []
    ok = invoke("contacts", "remove", "--campaign", CAMPAIGN, "C-2", "C-3", "--yes")
    assert ok.exit_code == 0, ok.output
    assert "and 2 unsent message(s)" in ok.stdout  # pending and skipped go with them
    assert _contacts(imported) == {"C-1"}
    with db.session_scope(imported) as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1


def test_remove_needs_keys_one_way(imported, tmp_path):
    none = invoke("contacts", "remove", "--campaign", CAMPAIGN)
    assert none.exit_code == 1 and "KEY... or --keys-from FILE" in none.output
    both = invoke("contacts", "remove", "--campaign", CAMPAIGN, "C-1", "--keys-from", "x.txt")
    assert both.exit_code == 1 and "KEY... or --keys-from FILE" in both.output


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_import_progress_lines_say_rows_rate_and_time_left():
    stream = io.StringIO()
    clock = Clock()
    progress = _ImportProgress("contacts import big.csv", quiet=False)
    progress.rows.stream, progress.rows.terminal, progress.rows.clock = stream, False, clock
    progress.rows.started = clock.now
    progress.stage("read", 0, 0.15)
    clock.now += 10
    progress.stage("write", 500_000, 0.5)
    assert progress.rows.line() == (
        "contacts import big.csv: writing, 500,000 rows, 50%, "
        "50,000 rows/s, 0:10 left, 0:10 elapsed"
    )
    quiet = _ImportProgress("x", quiet=True)
    quiet.stage("write", 10, 0.5)
    assert quiet.count == 0  # --json: no progress at all


def test_import_progress_off_a_terminal_prints_plain_lines(
    env, campaign_file, tmp_path, monkeypatch
):
    from notify.cli import progress as progress_module

    monkeypatch.setattr(progress_module, "INTERVAL", 0.05)
    assert invoke("campaign", "load", str(campaign_file)).exit_code == 0
    path = tmp_path / "list.csv"
    path.write_text(
        "Email,Exposure\n" + "".join(f"u{i}@example.com,card\n" for i in range(20_000)),
        encoding="utf-8",
    )
    result = invoke("contacts", "import", str(path), "--campaign", CAMPAIGN)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("contacts import")]
    assert lines, result.stderr
    assert "rows" in lines[-1] and "elapsed" in lines[-1] and "\r" not in lines[-1]
