"""`notify audit`: show the audit trail (who changed what, when, with which counts)."""

from __future__ import annotations

import json

import click

from notify import audit as audit_log
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app


def _as_dict(record) -> dict:
    return {
        "id": record.id,
        "at": record.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "actor": record.actor,
        "command": record.command,
        "campaign": record.campaign,
        "arguments": record.arguments or {},
        "counts": record.counts or {},
        "outcome": record.outcome,
    }


def _compact(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


@main.command("audit")
@click.option("--campaign", default=None, metavar="NAME", help="Only records of this campaign.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Only the newest N records.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_app
def audit(app: App, campaign: str | None, limit: int | None, as_json: bool) -> None:
    """Show the audit trail, oldest first: when, who, what, arguments (secrets masked),
    counts and outcome of every command that changed something.

    The trail is append-only: notify never changes or deletes a record.

    \b
    Example:
      notify audit --campaign acme-2026-11
      notify audit --json
    """
    with app.session() as session:
        rows = [_as_dict(r) for r in audit_log.records(session, campaign)]
    if limit:
        rows = rows[-limit:]
    if as_json:
        echo_json({"campaign": campaign, "records": rows})
        return
    if not rows:
        click.echo("No audit records" + (f" for {campaign}." if campaign else "."))
        return
    for row in rows:
        where = f" [{row['campaign']}]" if row["campaign"] else ""
        outcome = "" if row["outcome"] == "ok" else f" ({row['outcome']})"
        click.echo(f"{row['at']}  {row['actor']}  {row['command']}{where}{outcome}  "
                   f"args={_compact(row['arguments'])}  counts={_compact(row['counts'])}")
