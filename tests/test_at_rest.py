"""At rest (issue 13): what notify creates for personal data is private whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from notify import db
from notify.cli import main


@pytest.fixture(params=[0o022, 0o000])
def loose_umask(request):
    """A umask that would make new files world-readable (0o000: world-writable too)."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_sqlite_database_wal_and_shm_are_0600(tmp_path, loose_umask):
    path = tmp_path / "notify.db"
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        db.upgrade(engine)
        with engine.connect() as conn:  # a connection open after a write: WAL and SHM exist
            conn.execute(text("SELECT count(*) FROM campaigns")).scalar()
            wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
            assert wal.exists() and shm.exists()
            assert {p.name: oct(mode(p)) for p in (path, wal, shm)} == {
                p.name: oct(0o600) for p in (path, wal, shm)
            }
    finally:
        engine.dispose()


def test_an_existing_database_keeps_the_mode_its_owner_set(tmp_path, loose_umask):
    path = tmp_path / "shared.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    path.chmod(0o640)
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    assert mode(path) == 0o640


def test_outbox_files_0600_and_folders_0700(tmp_path, loose_umask):
    """The demo sends every notice through the outbox: each file and folder it made."""
    folder = tmp_path / "new" / "demo"
    result = CliRunner().invoke(main, ["demo", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    outbox = folder / "outbox"
    emails = list((outbox / "email").glob("*.eml"))
    assert emails and (outbox / "sms.jsonl").exists()
    for file in [*emails, outbox / "sms.jsonl", folder / "notify.db"]:
        assert mode(file) == 0o600, (file, oct(mode(file)))
    for made in (folder.parent, folder, outbox, outbox / "email"):
        assert mode(made) == 0o700, (made, oct(mode(made)))
    assert not list((outbox / "email").glob(".*.tmp"))  # no temporary file left behind
