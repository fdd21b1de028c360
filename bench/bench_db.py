"""What the SQL-filled benches share: a fresh database with the example campaign loaded (a
SQLite file, or a PostgreSQL schema of its own dropped afterwards) and the integer series
their fills select from, so each bench holds only its fill and its timings.

The benches run as scripts (``python bench/status_bench.py``), so this module is imported
from the ``bench`` folder on ``sys.path``; it puts the repository root there for ``notify``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notify import campaigns, db  # noqa: E402

EXAMPLE = ROOT / "campaigns" / "example.toml"
PG_URL = os.environ.get(
    "NOTIFY_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def series(sqlite: bool) -> str:
    """A SELECT of the integers 1..:n as column ``i``: PostgreSQL's generate_series (so the
    tally triggers run once per statement, as for a real plan), a recursive CTE on SQLite."""
    if sqlite:
        return (
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
            "SELECT i FROM s"
        )
    return "SELECT generate_series(1, :n) AS i"


def add_sent_emails(
    conn: Connection, campaign_id: int, notice: str = "notice", sequence: int = 0, every: int = 1
) -> None:
    """One sent email (``notice``, round ``sequence``) to every ``every``-th contact of the
    campaign, written straight in SQL (the tally triggers count them as for a real send)."""
    conn.execute(
        text(
            "INSERT INTO messages (campaign_id, contact_id, channel, notice, sequence, "
            "is_fallback, status, address, attempts, created_at, sent_at) "
            "SELECT campaign_id, id, 'email', :notice, :seq, false, 'sent', email, 1, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM contacts "
            "WHERE campaign_id = :c AND id % :every = 0"
        ),
        {"c": campaign_id, "notice": notice, "seq": sequence, "every": every},
    )


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A brand-new schema in the PostgreSQL at ``url``, dropped afterwards with all it holds;
    yields the URL whose search_path is that schema (a bench never touches other data)."""
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def example_database(sqlite: bool, prefix: str) -> Iterator[tuple[Engine, int, str]]:
    """A migrated database (a SQLite file in a new ``prefix`` folder, else a schema of its
    own at PG_URL) with the example campaign loaded; yields (engine, campaign id, name)."""
    with _database_url(sqlite, prefix) as url:
        engine = db.make_engine(url)
        try:
            db.upgrade(engine)
            with db.session_scope(engine) as session:
                campaign, _ = campaigns.load_campaign(session, EXAMPLE)
                campaign_id, name = campaign.id, campaign.name
            yield engine, campaign_id, name
        finally:
            engine.dispose()


@contextmanager
def _database_url(sqlite: bool, prefix: str) -> Iterator[str]:
    if sqlite:
        yield f"sqlite:///{tempfile.mkdtemp(prefix=prefix)}/bench.db"
    else:
        with postgres_schema(PG_URL) as url:
            yield url
