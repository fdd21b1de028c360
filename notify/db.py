"""Engines, sessions and schema upgrades for SQLite (default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, CursorResult, Engine, Result, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker

from notify.errors import ConfigError, NotifyError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE/DELETE (or an INSERT run with ``preserve_rowcount``) touched.

    Session.execute is typed as returning a plain Result; for these statements it is a
    CursorResult, which alone carries the count.
    """
    return cast(CursorResult[Any], result).rowcount or 0


def insert_for(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can skip rows hitting a unique constraint (both dialects support it)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)  # notify supports SQLite and PostgreSQL only


def insert_ignoring_duplicates(
    session: Session, table: Table, columns: list[str], source: Any
) -> int:
    """INSERT ... SELECT that skips rows a unique constraint already holds; returns how many
    were inserted (what makes planning safe to run again)."""
    stmt = insert_for(session, table).from_select(columns, source).on_conflict_do_nothing()
    # rowcount of an INSERT is only kept when asked for (SQLAlchemy 2.x).
    return rowcount(session.execute(stmt.execution_options(preserve_rowcount=True)))


def is_sqlite(engine: Engine | Connection) -> bool:
    """True for the embedded default; PostgreSQL is the multi-worker engine."""
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _private_sqlite_file(_dialect, _record, cargs, cparams) -> None:
    # A database this connection would create is created 0600 first (its WAL and SHM then
    # follow its mode): it holds contacts and events, whatever the umask says.
    if not cparams.get("uri") and cargs:
        from notify.files import prepare_sqlite_file

        prepare_sqlite_file(str(cargs[0]))


def _sqlite_begin(conn) -> None:
    # BEGIN IMMEDIATE on writer() engines: a deferred transaction that reads, then writes
    # after another connection committed, fails at once with "database is locked" (its
    # snapshot is stale) instead of waiting; taking the write lock first makes it wait.
    immediate = conn.get_execution_options().get("notify_immediate")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def writer(engine: Engine) -> Engine:
    """The engine for transactions that read, then write, while others write too.

    On SQLite they take the write lock at BEGIN and so wait their turn (busy_timeout)
    instead of failing; on PostgreSQL this is the engine itself.
    """
    return engine.execution_options(notify_immediate=True) if is_sqlite(engine) else engine


def make_engine(url: str) -> Engine:
    """Create an engine with the pragmas and pool settings notify relies on."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "do_connect", _private_sqlite_file)
            event.listen(engine, "connect", _sqlite_pragmas)
            # pysqlite's own transaction handling defers BEGIN; emit it ourselves so a
            # transaction (including DDL) is atomic, as on PostgreSQL.
            event.listen(engine, "begin", _sqlite_begin)

            @event.listens_for(engine, "connect")
            def _no_pysqlite_tx(dbapi_conn, _record):
                dbapi_conn.isolation_level = None

            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    except (ArgumentError, ImportError, ValueError) as exc:
        hint = (
            ""
            if "://" in url
            else f" (a SQLite file is written sqlite:///{Path(url).expanduser().resolve()}, "
            "or given as a path with notify --db PATH)"
        )
        raise ConfigError(
            f"NOTIFY_DATABASE_URL: cannot use {mask_url(url)!r}: {exc}{hint}"
        ) from None


def database_url(value: str) -> str:
    """``--db``'s value as a URL: a URL stays as is, anything else is a SQLite file path
    (made absolute, so that what is opened does not depend on a later change of folder)."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def sqlite_file(url: str) -> Path | None:
    """The absolute path of the file a SQLite URL opens; None for other databases and for
    in-memory SQLite."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database or ""
    if name in ("", ":memory:") or name.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(name).expanduser().resolve()


def describe(url: str) -> str:
    """Which database a URL names, safe to print: a SQLite file as its absolute path, any
    other URL without its password."""
    path = sqlite_file(url)
    return str(path) if path is not None else mask_url(url)


def require_existing(url: str) -> None:
    """Refuse a SQLite file that does not exist, instead of creating an empty database.

    Only the commands that set a database up (``init``, ``campaign load``, ``demo``) may
    create one: any other command on a missing file would create ./notify.db and answer from
    it, e.g. "no contact matches" for a customer who was notified (from another database).
    """
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise NotifyError(
            f"no database at {path}: choose the database with --db URL|PATH "
            "or NOTIFY_DATABASE_URL (or create one with notify init)"
        )


def mask_url(url: str) -> str:
    """The URL with any password replaced, safe to print."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def _alembic_config(engine: Engine) -> Config:
    # alembic is imported only when the schema is checked, not on every command's start-up.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


@lru_cache(maxsize=1)
def _head() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(create_engine("sqlite://")))
    head = script.get_current_head()
    if head is None:  # only a broken install ships no migrations
        raise RuntimeError(f"no Alembic migrations in {MIGRATIONS}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None when it has no notify schema."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# The newest migration. Checked against alembic's scripts by the tests; with it, a command on
# a current database starts without importing alembic (a quarter of a second of start-up).
HEAD = "0012_message_transport"


def _stored_revision(engine: Engine) -> str | None:
    """``alembic_version`` read with one plain query; None if absent or unreadable."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def upgrade(engine: Engine) -> str:
    """Create or upgrade the schema to the newest revision; safe to run any number of times."""
    if _stored_revision(engine) == HEAD:
        return HEAD
    try:
        if current_revision(engine) == _head():
            return _head()
        from alembic import command

        command.upgrade(_alembic_config(engine), "head")
    except DBAPIError as exc:
        if not unavailable(exc):
            raise
        raise NotifyError(f"cannot open database {mask_url(str(engine.url))}: {exc.orig}") from None
    return _head()


def unavailable(exc: DBAPIError) -> bool:
    """True when the database itself failed (unreachable, gone, locked, full, not a database
    file), as opposed to a statement it rejected (a bug, which keeps its traceback)."""
    return isinstance(exc, OperationalError | InterfaceError) or type(exc) is DatabaseError


# Engines handed out by connect(), by URL (tests dispose them between databases).
_ENGINES: dict[str, Engine] = {}


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    _ENGINES[url] = engine
    return engine


def connect(url: str) -> Engine:
    """An engine whose schema is current (upgraded on first use), cached per URL."""
    return _engine_for(url)


def sessionmaker_for(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (objects outlive their transaction)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error (all-or-nothing)."""
    session = sessionmaker_for(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
