"""A big import on SQLite sets the tally trigger and secondary indexes aside and puts them back:
the counts, the trigger and the indexes are exactly as if every row had been inserted plainly,
and a failed import restores them with everything else."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from notify import db, importer
from notify.errors import NotifyError
from notify.models import Contact, Tally
from tests.import_helpers import do_import


def _schema(engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return {
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT type, name FROM sqlite_master WHERE tbl_name = 'contacts' "
                    "AND type IN ('trigger', 'index') AND sql IS NOT NULL"
                )
            )
        }


def _counts(engine) -> tuple[int, int]:
    with db.session_scope(engine) as session:
        stored = session.scalar(select(func.count()).select_from(Contact))
        tallied = session.scalar(
            select(func.coalesce(func.sum(Tally.n), 0)).where(Tally.name == "contacts")
        )
        return stored, tallied


def _write(path, start, count):
    path.write_text(
        "id,email,exposure\n"
        + "".join(f"K{i},u{i}@example.com,card\n" for i in range(start, start + count)),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bulk_path_keeps_tallies_trigger_and_indexes(loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "BULK_TALLY", 10)
    before = _schema(loaded)
    assert ("trigger", "tally_contacts_insert") in before
    assert ("index", "ix_contacts_email") in before
    do_import(loaded, _write(tmp_path / "a.csv", 0, 50))  # the table grows from nothing
    assert _schema(loaded) == before
    assert _counts(loaded) == (50, 50)
    do_import(loaded, _write(tmp_path / "b.csv", 50, 20))  # trigger aside, indexes kept
    assert _schema(loaded) == before
    assert _counts(loaded) == (70, 70)
    do_import(loaded, _write(tmp_path / "c.csv", 70, 5))  # below the threshold: plain
    assert _counts(loaded) == (75, 75)
    with loaded.connect() as conn:  # the re-created trigger counts a plain insert again
        conn.execute(
            text(
                "INSERT INTO contacts (campaign_id, key, exposures, created_at, "
                "updated_at) SELECT campaign_id, 'X', 'card', created_at, updated_at "
                "FROM contacts LIMIT 1"
            )
        )
        conn.commit()
    assert _counts(loaded) == (76, 76)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_failed_bulk_import_restores_the_trigger_and_indexes(loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "BULK_TALLY", 10)
    before = _schema(loaded)

    def fail(self, *args):  # every row written, trigger and indexes not yet put back
        assert self.trigger and self.indexes and self.written == 30
        raise RuntimeError("disk full")

    monkeypatch.setattr(importer._Writer, "close", fail)
    path = tmp_path / "list.csv"
    path.write_text(
        "id,email,exposure\n"
        + "".join(f"K{i},u{i}@example.com,card\n" for i in range(30))
        + "K1,u1@example.com,identity\n",
        encoding="utf-8",
    )
    with pytest.raises(RuntimeError):
        do_import(loaded, path)
    assert _schema(loaded) == before
    assert _counts(loaded) == (0, 0)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_big_import_inserts_from_a_thread_and_its_error_fails_the_whole_import(
    loaded, tmp_path, monkeypatch
):
    """The bulk rows are inserted by a second thread (SQLite steps without the GIL) while the
    next block is converted; an error in that thread fails the import with nothing stored."""
    import sqlite3
    import threading

    from sqlalchemy import event

    monkeypatch.setattr(importer, "BULK_TALLY", 10)
    monkeypatch.setattr(importer, "BLOCK", 10)
    before = _schema(loaded)
    inserting: set[str] = set()

    def register(dbapi_conn, _record):  # which thread steps the INSERTs
        dbapi_conn.create_function(
            "inserted_by", 0, lambda: inserting.add(threading.current_thread().name)
        )

    loaded.dispose()
    event.listen(loaded, "connect", register)
    with loaded.begin() as conn:
        conn.execute(text("CREATE TABLE seen (x)"))
        conn.execute(
            text(
                "CREATE TRIGGER watch BEFORE INSERT ON contacts BEGIN "
                "INSERT INTO seen VALUES (inserted_by()); "
                "SELECT RAISE(ABORT, 'refused by the test') WHERE NEW.key = 'K45'; "
                "END"
            )
        )
    do_import(loaded, _write(tmp_path / "a.csv", 0, 40))
    assert _counts(loaded) == (40, 40)
    assert inserting == {"notify-sqlite-insert"}
    # A constraint failure reads as a concurrent import (the importer's wording for it).
    with pytest.raises(NotifyError, match="nothing was imported") as caught:
        do_import(loaded, _write(tmp_path / "b.csv", 40, 60))  # the 6th row fails
    causes, error = [], caught.value
    while error is not None:
        causes.append(error)
        error = error.__cause__ or error.__context__
    assert any(
        isinstance(c, sqlite3.IntegrityError) and "refused by the test" in str(c) for c in causes
    )
    assert _counts(loaded) == (40, 40)
    assert _schema(loaded) - {("trigger", "watch")} == before
