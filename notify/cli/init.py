"""`notify init`: create the database, or bring its schema up to date."""

from __future__ import annotations

import click

from notify import audit as audit_log
from notify import db
from notify.cli import main
from notify.cli.common import App, pass_app


@main.command()
@pass_app
def init(app: App) -> None:
    """Create or upgrade the database schema (safe to run again).

    \b
    Example:
      NOTIFY_DATABASE_URL=postgresql+psycopg://notify@db/notify notify init
    """
    engine = db.make_engine(app.settings.database_url)
    before = db.current_revision(engine)
    head = db.upgrade(engine)
    with db.session_scope(engine) as session:
        audit_log.record(session, "init", arguments={"from": before, "to": head}, actor=app.actor)
    click.echo(init_text(app.database_name, before, head))


def init_text(database: str, before: str | None, head: str) -> str:
    """What `notify init` did, in its own words: created, upgraded from N to M, or nothing."""
    if before is None:
        return f"Created database {database} (new database, schema {head})."
    if before == head:
        return f"Database {database} is already at schema {head}; nothing to do."
    return f"Upgraded database {database} from schema {before} to {head}."
