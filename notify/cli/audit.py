"""`notify audit`: show the audit trail (who changed what, when, with which counts)."""

from __future__ import annotations

from datetime import tzinfo

import click

from notify import audit as audit_log
from notify.cli import main
from notify.cli.common import App, pass_app
from notify.cli.listing import Column, emit, list_options

AUDIT_COLUMNS = (
    Column("id"),
    Column("at", time=True),
    Column("actor"),
    Column("command"),
    Column("campaign"),
    Column("outcome"),
    Column("arguments"),
    Column("counts"),
)


def _as_dict(record) -> dict:
    return {
        "id": record.id,
        "at": record.at,
        "actor": record.actor,
        "command": record.command,
        "campaign": record.campaign,
        "outcome": record.outcome,
        "arguments": record.arguments or {},
        "counts": record.counts or {},
    }


@main.command("audit")
@click.option("--campaign", default=None, metavar="NAME", help="Only records of this campaign.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the newest N records.")
@list_options
@pass_app
def audit(app: App, campaign: str | None, limit: int | None, fmt: str, zone: tzinfo) -> None:
    """Show the audit trail, oldest first: when, who, what, arguments (secrets masked),
    counts and outcome of every command that changed something.

    The trail is append-only: notify never changes or deletes a record. --format json
    prints {"campaign": ..., "records": [...]}; CSV and JSON times are UTC ISO-8601.

    \b
    Example:
      notify audit --campaign acme-2026-11
      notify audit --format csv > audit.csv
      notify audit --json
    """
    with app.session() as session:
        rows = [_as_dict(r) for r in audit_log.records(session, campaign)]
    if limit:
        rows = rows[-limit:]
    emit(
        rows,
        AUDIT_COLUMNS,
        fmt,
        zone,
        empty="No audit records" + (f" for {campaign}." if campaign else "."),
        json_value={"campaign": campaign, "records": rows},
    )
