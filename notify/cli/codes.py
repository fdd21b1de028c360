"""`notify codes import`: the pool of credit-monitoring enrollment codes of a campaign."""

from __future__ import annotations

from pathlib import Path

import click

from notify import audit as audit_log
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app


@main.group("codes")
def codes_group() -> None:
    """Credit-monitoring enrollment codes: one per contact whose identity data was exposed."""


@codes_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--campaign",
    "campaign_name",
    required=True,
    metavar="NAME",
    help="The campaign whose pool the codes join.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def codes_import(app: App, file: Path, campaign_name: str, as_json: bool) -> None:
    """Add the enrollment codes of FILE (a CSV with a column "code"; other columns are
    ignored) to the pool of campaign NAME.

    Each contact whose identity data was exposed gets exactly one code, never shared, when
    `notify send` plans the campaign; notices show it as contact.enrollment_code. Once a
    campaign has a pool, send refuses to start while the pool is smaller than the contacts
    waiting for a code. The import is all or nothing: an empty code or the same code twice
    is an error naming its line. Importing the same file again adds nothing.

    \b
    Example:
      notify codes import monitoring-codes.csv --campaign acme-2026-11
    """
    from notify import codes
    from notify.campaigns import get_campaign

    with app.session() as session:
        campaign = get_campaign(session, campaign_name)
        summary = codes.import_codes(session, campaign, file)
        session.flush()
        state = codes.pool_state(session, campaign)
        audit_log.record(
            session,
            "codes import",
            campaign=campaign_name,
            arguments={"file": str(file)},
            counts={"read": summary.read, "added": summary.added, "already": summary.already},
            actor=app.actor,
        )
    if as_json:
        echo_json(
            {
                "campaign": campaign_name,
                "read": summary.read,
                "added": summary.added,
                "already_in_pool": summary.already,
                "pool": state.total,
                "free": state.free,
                "assigned": state.assigned,
                "waiting": state.waiting,
            }
        )
        return
    click.echo(
        f"Added {summary.added:,} code(s) to the pool of {campaign_name} "
        f"({summary.already:,} already there). Pool: {state.total:,} code(s), "
        f"{state.assigned:,} given, {state.free:,} free; {state.waiting:,} contact(s) "
        f"with identity data exposed are waiting for one."
    )
    if state.free < state.waiting:
        click.echo(
            f"Warning: {state.waiting - state.free:,} more code(s) are needed before "
            f"notify send will start.",
            err=True,
        )
