"""Shared fixtures: a fresh database per test, on SQLite and (where asked) PostgreSQL.

PostgreSQL tests read NOTIFY_TEST_POSTGRES_URL; each test gets its own schema. Under CI=true
an unreachable server is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from notify import db

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CAMPAIGN = ROOT / "campaigns" / "example.toml"
PG_URL = os.environ.get(
    "NOTIFY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _pg_available() -> str | None:
    try:
        with create_engine(PG_URL).connect() as conn:
            conn.execute(text("select 1"))
        return None
    except Exception as exc:  # pragma: no cover - depends on the machine
        return str(exc).splitlines()[0]


@pytest.fixture
def pg_url():
    """A PostgreSQL URL whose search_path is a brand-new schema, dropped afterwards."""
    problem = _pg_available()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL required under CI but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    with admin.connect() as conn:
        started = conn.execute(text("select now()")).scalar()
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    _dispose_cached_engines()
    try:
        _drop_schema(admin, schema)
    except Exception:
        # A connection this test leaked still holds locks in the schema: end the sessions
        # that were left idle in a transaction opened during this test, then drop again.
        with admin.begin() as conn:
            conn.execute(
                text(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where datname = current_database() and pid <> pg_backend_pid() "
                    "and state like 'idle in transaction%' and xact_start >= :started"
                ),
                {"started": started},
            )
        _drop_schema(admin, schema)
    admin.dispose()


def _drop_schema(admin, schema: str) -> None:
    with admin.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '10s'"))
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def _dispose_cached_engines() -> None:
    """Close the pools of engines db.connect() cached during the test, then forget them."""
    for engine in list(db._ENGINES.values()):
        engine.dispose()
    db._ENGINES.clear()
    db._engine_for.cache_clear()


@pytest.fixture
def sqlite_url(tmp_path):
    """A SQLite file of its own for this test."""
    return f"sqlite:///{tmp_path / 'notify.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """Run the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'notify.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url):
    """A migrated engine on ``db_url``."""
    eng = db.make_engine(db_url)
    db.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def env(tmp_path, db_url, monkeypatch):
    """Environment for CLI runs: this test's database and outbox, no real transports."""
    for name in list(os.environ):
        if name.startswith(("NOTIFY_", "TWILIO_")) and name != "NOTIFY_TEST_POSTGRES_URL":
            monkeypatch.delenv(name, raising=False)
    values = {"NOTIFY_DATABASE_URL": db_url, "NOTIFY_OUTBOX": str(tmp_path / "outbox")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    _dispose_cached_engines()
    yield values
    _dispose_cached_engines()


@pytest.fixture
def campaign_file(tmp_path) -> Path:
    """A copy of the example campaign in this test's folder (edit it freely)."""
    target = tmp_path / "campaign.toml"
    target.write_text(EXAMPLE_CAMPAIGN.read_text())
    return target


@pytest.fixture
def session(engine):
    """A session on ``engine`` in one transaction, committed when the test ends."""
    with db.session_scope(engine) as s:
        yield s


@pytest.fixture
def campaign(session, campaign_file):
    """The example campaign, loaded through the real loader in ``session``."""
    from notify import campaigns

    loaded_campaign, _ = campaigns.load_campaign(session, campaign_file)
    return loaded_campaign


@pytest.fixture
def loaded(engine, campaign_file):
    """The example campaign, loaded into this test's database; returns the engine."""
    from notify import campaigns

    with db.session_scope(engine) as session:
        campaigns.load_campaign(session, campaign_file)
    return engine
