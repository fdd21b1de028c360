"""`notify resets export|complete`: forced password resets, who must reset and who did."""

from __future__ import annotations

import click

from notify import audit as audit_log
from notify import campaigns, export
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app, table_options
from notify.cli.export import summary, where
from notify.cli.progress import RowProgress
from notify.resets import completions


@main.group()
def resets() -> None:
    """Forced password resets: who must reset, and who did."""


@resets.command("export")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE.csv",
    help="CSV file to write (replaced atomically); - for standard output.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def resets_export(app: App, name: str, output: str, as_json: bool) -> None:
    """Write the password resets of campaign NAME as CSV.

    One row per contact with exposed passwords: campaign, contact_key, email, phone,
    reset_status (pending, completed or expired: every link sent has expired),
    reset_completed_at, links_sent, link_expires_at. Give it to the identity provider to
    force the resets.

    \b
    Example:
      notify resets export acme-2026-11 -o resets.csv
      notify resets export acme-2026-11 -o - | idp-import --force-reset
    """
    with app.session() as session:
        campaign = campaigns.get_campaign(session, name)
        with RowProgress(f"resets export {name}") as progress:
            rows = export.export_resets(session, campaign, output, progress=progress.update)
        # Exports of personal data are recorded too: compliance asks who took a copy.
        audit_log.record(
            session,
            "resets export",
            campaign=name,
            arguments={"output": output},
            counts={"rows": rows},
            actor=app.actor,
        )
    summary(
        output,
        as_json,
        {"campaign": name, "export": "resets", "rows": rows, "output": output},
        f"Wrote {rows:,} reset(s) of {name!r} to {where(output)}.",
    )


@resets.command("complete")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--campaign", "campaign_name", required=True, help="Campaign name.")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False),
    help="Write rows that could not be applied here (line, reason, source columns).",
)
@table_options
@click.option("--dry-run", is_flag=True, help="Check and count; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (last line).")
@pass_app
def resets_complete(
    app: App,
    file: str,
    campaign_name: str,
    rejects: str | None,
    sheet: str | None,
    header_row: int | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Apply password-reset completions reported by the identity provider.

    FILE is the identity provider's list, in any format `contacts import` reads (CSV, TSV,
    XLSX, ODS, JSON, Parquet), with a key or email column and completed_at (ISO-8601). Rows already
    completed are counted, not errors, so the same file can be applied again safely. Rows
    that match no contact with exposed passwords are rejected (line numbers: header = 1).
    A file that cannot be read changes nothing.

    \b
    Examples:
      notify resets complete idp-resets.csv --campaign acme-2026-11 --rejects rejected.csv
      notify resets complete idp.xlsx --campaign acme-2026-11 --sheet Resets --dry-run
    """
    with app.session() as session:
        campaign = campaigns.get_campaign(session, campaign_name)
        summary = completions.import_completions(
            session,
            campaign,
            file,
            rejects_path=rejects,
            dry_run=dry_run,
            sheet=sheet,
            header_row=header_row,
        )
        if not dry_run:
            audit_log.record(
                session,
                "resets complete",
                campaign=campaign_name,
                arguments={
                    "file": file,
                    "rejects": rejects,
                    "sheet": sheet,
                    "header_row": header_row,
                },
                counts=summary.as_dict(),
                actor=app.actor,
            )
    for line in summary.lines():
        click.echo(line)
    if rejects and summary.rejected:
        click.echo(f"Rejected rows written to {rejects}.")
    if as_json:
        echo_json(summary.as_dict())
