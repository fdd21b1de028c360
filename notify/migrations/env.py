"""Alembic environment: uses the engine notify.db hands over (no alembic.ini needed)."""

from alembic import context

from notify.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # `alembic` run by hand: take the URL from the environment
    from notify.config import load_settings
    from notify.db import make_engine

    engine = make_engine(load_settings().database_url)


def _foreign_keys(connection, state: str) -> None:
    """Set SQLite's foreign key enforcement on the driver's connection, outside any
    transaction (notify's engines begin one explicitly, in which the pragma is a no-op)."""
    cursor = connection.connection.dbapi_connection.cursor()
    cursor.execute(f"PRAGMA foreign_keys={state}")
    cursor.close()


with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a SQLite table (copy, DROP, rename). With foreign keys enforced,
        # the DROP first deletes the table's rows, and ON DELETE CASCADE empties every table
        # that points to it (rebuilding campaigns deleted every contact and message). SQLite's
        # own procedure for altering a table turns enforcement off meanwhile; the pragma only
        # takes effect outside a transaction.
        _foreign_keys(connection, "OFF")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    try:
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite:
            connection.rollback()
            _foreign_keys(connection, "ON")
