"""Credit-monitoring enrollment codes: one per identity-exposed contact, never shared, never
two, also with two workers planning at once (PostgreSQL) and after a crash."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import codes, db
from notify.campaigns import get_campaign
from notify.cli import main
from notify.config import load_settings
from notify.models import Contact, EnrollmentCode, Message
from notify.send.options import SendOptions
from notify.send.plan import plan
from notify.send.runner import send_campaign
from tests.factories import add_contacts, campaign_toml, make_campaign

NAME = "acme-2026-11"


def run(*args):
    return CliRunner().invoke(main, list(args))


def write_codes(path: Path, n: int, start: int = 0, extra: str = "") -> Path:
    lines = ["batch,code" + extra] + [f"b1,MON-{i:05d}" for i in range(start, start + n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def assignments(engine) -> dict[str, str]:
    with db.session_scope(engine) as session:
        rows = session.execute(
            select(Contact.key, EnrollmentCode.code, Contact.enrollment_code).join(
                EnrollmentCode, EnrollmentCode.contact_id == Contact.id
            )
        )
        found = {}
        for key, code, copy in rows:
            assert key not in found, f"{key} has two codes"
            assert code == copy
            found[key] = code
        return found


def test_read_codes_takes_any_usual_delimiter_and_a_bom(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_bytes("\ufeffName;CODE\r\nAnn;X-1\r\nBo;X-2\r\n".encode())
    assert codes.read_codes(path) == ["X-1", "X-2"]
    path.write_text("code\nY-1\n")
    assert codes.read_codes(path) == ["Y-1"]


def test_import_reads_the_code_column_and_is_idempotent(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    make_campaign(engine, campaign_toml(tmp_path))
    path = write_codes(tmp_path / "codes.csv", 5)
    result = run("codes", "import", str(path), "--campaign", NAME)
    assert result.exit_code == 0, result.output
    assert "Added 5 code(s) to the pool of acme-2026-11 (0 already there)" in result.output
    again = run("codes", "import", str(path), "--campaign", NAME, "--json")
    assert again.exit_code == 0
    assert '"added": 0' in again.output and '"already_in_pool": 5' in again.output
    with db.session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(EnrollmentCode)) == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,value\n1,A\n", 'line 1: no column "code"'),
        ("code\nA-1\n\n,\nA-2\nA-1\n", 'line 6, column "code": A-1... already on line 2'),
        ("name,code\nx,A-1\ny,\n", 'line 3, column "code": empty'),
        ("code\n", "no codes"),
    ],
)
def test_bad_code_files_are_one_line_and_import_nothing(env, tmp_path, content, message):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    make_campaign(engine, campaign_toml(tmp_path))
    path = tmp_path / "codes.csv"
    path.write_text(content)
    result = run("codes", "import", str(path), "--campaign", NAME)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    with db.session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(EnrollmentCode)) == 0


def test_send_gives_each_identity_contact_one_code_and_the_notice_shows_it(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 4, exposures="identity;passwords")
    add_contacts(engine, campaign, 2, start=10, exposures="card")
    assert (
        run(
            "codes", "import", str(write_codes(tmp_path / "c.csv", 6)), "--campaign", NAME
        ).exit_code
        == 0
    )
    options = SendOptions(email_rate=0, progress=False)
    send_campaign(engine, load_settings(), NAME, options)
    given = assignments(engine)
    assert sorted(given) == ["C-00000", "C-00001", "C-00002", "C-00003"]  # identity only
    assert len(set(given.values())) == 4
    mails = {p.read_text() for p in (Path(env["NOTIFY_OUTBOX"]) / "email").glob("*.eml")}
    for code in given.values():
        assert sum(f"Your enrollment code is {code}." in m for m in mails) == 1
    # Sending again changes nothing: nobody gets a second code.
    send_campaign(engine, load_settings(), NAME, options)
    assert assignments(engine) == given
    out = tmp_path / "codes-out.csv"
    result = run("export", "codes", NAME, "-o", str(out))
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["contact_key"]: r["code"] for r in rows} == given
    assert list(rows[0]) == list(codes.EXPORT_COLUMNS)
    assert rows[0]["assigned_at"].endswith("Z")


def test_send_refuses_to_start_when_the_pool_is_too_small(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path, channels='["email"]'))
    add_contacts(engine, campaign, 3, exposures="identity")
    imported = run("codes", "import", str(write_codes(tmp_path / "c.csv", 2)), "--campaign", NAME)
    assert "1 more code(s) are needed" in imported.output
    result = run("send", NAME, "--yes")
    assert result.exit_code == 1
    assert (
        "3 contact(s) with identity data exposed need a credit-monitoring code but only 2 "
        "code(s) are free"
    ) in result.output
    with db.session_scope(engine) as session:  # nothing planned, nothing given
        assert session.scalar(select(func.count()).select_from(Message)) == 0
    assert assignments(engine) == {}
    run("codes", "import", str(write_codes(tmp_path / "d.csv", 1, start=50)), "--campaign", NAME)
    assert run("send", NAME, "--yes").exit_code == 0
    assert len(set(assignments(engine).values())) == 3


def test_a_crash_before_the_commit_gives_no_code(engine, campaign_file, tmp_path):
    campaign = make_campaign(engine, campaign_file)
    add_contacts(engine, campaign, 3, exposures="identity")
    with db.session_scope(engine) as session:
        codes.import_codes(session, get_campaign(session, NAME), write_codes(tmp_path / "c", 3))
    with pytest.raises(RuntimeError), db.session_scope(engine) as session:
        plan(session, get_campaign(session, NAME), ("email", "sms"))
        raise RuntimeError("killed before the commit")
    assert assignments(engine) == {}
    with db.session_scope(engine) as session:
        plan(session, get_campaign(session, NAME), ("email", "sms"))
    assert len(set(assignments(engine).values())) == 3


@pytest.mark.postgres
def test_two_workers_planning_at_once_never_share_or_double_a_code(pg_url, tmp_path):
    """Two threads, each with its own engine and connections, plan the same campaign at the
    same moment, several times over: every identity contact ends with exactly one code, no
    code goes to two contacts, and neither worker fails."""
    setup = db.make_engine(pg_url)
    db.upgrade(setup)
    campaign = make_campaign(setup, campaign_toml(tmp_path))
    per_round, rounds, errors = 300, 4, []
    n = per_round * rounds
    with db.session_scope(setup) as session:
        codes.import_codes(session, get_campaign(session, NAME), write_codes(tmp_path / "c", n))
    added = iter(range(rounds))

    def more_contacts() -> None:  # before each round: new contacts both workers race for
        add_contacts(
            setup, campaign, per_round, start=next(added) * per_round, exposures="identity"
        )

    barrier = threading.Barrier(2, action=more_contacts)

    def worker(start: int) -> None:
        engine = db.make_engine(pg_url)
        try:
            for _ in range(rounds):
                barrier.wait(timeout=60)
                with db.session_scope(engine) as session:
                    plan(session, get_campaign(session, NAME), ("email",))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
            barrier.abort()
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    given = assignments(setup)
    assert len(given) == n
    assert len(set(given.values())) == n
    with db.session_scope(setup) as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(EnrollmentCode)
                .where(EnrollmentCode.contact_id.is_(None))
            )
            == 0
        )
    setup.dispose()
