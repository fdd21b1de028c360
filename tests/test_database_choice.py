"""Which database a command uses: --db over NOTIFY_DATABASE_URL, and only the commands that
set a database up create one (a read command on a missing file must not answer from an
empty database it just made)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from notify import db
from notify.cli import main

# A missing database is a SQLite matter (a server database is created by its administrator).
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def run(*args):
    return CliRunner().invoke(main, list(args))


@SQLITE_ONLY
def test_db_path_overrides_the_environment(env, tmp_path, campaign_file):
    chosen = tmp_path / "chosen" / "breach.db"
    chosen.parent.mkdir()
    loaded = run("--db", str(chosen), "campaign", "load", str(campaign_file))
    assert loaded.exit_code == 0, loaded.output
    assert chosen.exists()
    env_file = db.sqlite_file(env["NOTIFY_DATABASE_URL"])
    assert not env_file.exists()  # the environment's database was not touched
    status = run("--db", str(chosen), "status", "acme-2026-11", "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["database"] == str(chosen)
    # A relative path is taken from the current folder, and shown absolute.
    relative = run("--db", "chosen/breach.db", "status", "acme-2026-11")
    assert relative.exit_code == 0, relative.output
    assert relative.stdout.splitlines()[-1] == f"Database:    {chosen}"
    url = run("--db", f"sqlite:///{chosen}", "campaign", "list")
    assert url.exit_code == 0 and "acme-2026-11" in url.stdout


@SQLITE_ONLY
@pytest.mark.parametrize(
    "args",
    [
        ["status", "acme-2026-11"],
        ["lookup", "100202"],
        ["send", "acme-2026-11", "--yes"],
        ["campaign", "list"],
        ["contacts", "import", "contacts.csv", "--campaign", "acme-2026-11"],
        ["export", "deliveries", "acme-2026-11", "-o", "out.csv"],
        ["audit", "--json"],
    ],
)
def test_read_commands_never_create_a_database(env, tmp_path, args):
    (tmp_path / "contacts.csv").write_text("key,email,exposures\nC-1,a@example.com,card\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for how in ("env", "--db"):
        target = elsewhere / f"{how.strip('-')}.db"
        if how == "env":
            result = CliRunner(env={"NOTIFY_DATABASE_URL": f"sqlite:///{target}"}).invoke(
                main, args
            )
        else:
            result = run("--db", str(target), *args)
        assert result.exit_code == 1, result.output
        assert result.output == (
            f"Error: no database at {target}: choose the database with "
            "--db URL|PATH or NOTIFY_DATABASE_URL (or create one with "
            "notify init)\n"
        )
        assert not target.exists()
    assert sorted(p.name for p in elsewhere.iterdir()) == []
    assert not (tmp_path / "notify.db").exists()


@SQLITE_ONLY
def test_init_and_campaign_load_create_the_database(env, tmp_path, campaign_file):
    first = tmp_path / "a.db"
    assert run("--db", str(first), "init").exit_code == 0
    assert first.exists()
    second = tmp_path / "b.db"
    assert run("--db", str(second), "campaign", "load", str(campaign_file)).exit_code == 0
    assert second.exists()


def test_database_names_are_printed_without_password():
    url = "postgresql+psycopg://notify:s3cret@db.example:5432/notify"
    assert "s3cret" not in db.describe(url) and "db.example" in db.describe(url)
    assert db.describe("sqlite:///rel/notify.db").startswith("/")
    assert db.database_url("x.db").startswith("sqlite:////")
    assert db.database_url(url) == url


@SQLITE_ONLY
@pytest.mark.parametrize(
    "args",
    [["send", "acme-2026-11", "--yes"], ["remind", "acme-2026-11", "--after", "72h", "--yes"]],
)
def test_a_cron_run_without_environment_prints_one_line(env, tmp_path, args):
    """A cron job with no environment, in a folder with no database: the one error line, not a
    second about the audit record that cannot be written into a database that is not there."""
    import os
    import subprocess
    import sys

    clean = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    result = subprocess.run(
        [sys.executable, "-m", "notify", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: no database at {tmp_path.resolve() / 'notify.db'}: choose "
        "the database with --db URL|PATH or NOTIFY_DATABASE_URL (or create "
        "one with notify init)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_path_in_the_environment_variable_says_how_to_write_it(tmp_path):
    """NOTIFY_DATABASE_URL is a URL; a bare path (the natural first try) says the URL form."""
    target = tmp_path / "notify.db"
    result = CliRunner(env={"NOTIFY_DATABASE_URL": str(target)}).invoke(main, ["campaign", "list"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: NOTIFY_DATABASE_URL: cannot use ")
    assert result.output.endswith(
        f"(a SQLite file is written sqlite:///{target.resolve()}, or "
        "given as a path with notify --db PATH)\n"
    )
    assert not target.exists()


@SQLITE_ONLY
@pytest.mark.parametrize("command", [["init"], ["campaign", "load", "CAMPAIGN"]])
def test_a_database_in_a_missing_folder_names_the_folder(env, tmp_path, campaign_file, command):
    """Not "the database failed: unable to open database file ... once the database is back"."""
    target = tmp_path / "no" / "such" / "notify.db"
    args = [str(campaign_file) if a == "CAMPAIGN" else a for a in command]
    result = run("--db", str(target), *args)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot create the database {target}: folder "
        f"{target.parent} does not exist (create it first, or choose "
        "another path with --db)\n"
    )
    assert not (tmp_path / "no").exists()
