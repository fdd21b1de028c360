"""`notify report regulators`: filled reports for the regulators a campaign must notify."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from notify import audit as audit_log
from notify.cli import main
from notify.cli.common import App, as_of_day, as_of_option, echo_json, pass_app


@main.group("report")
def report_group() -> None:
    """Reports for the people a breach must also be reported to (regulators)."""


@report_group.command("regulators")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the reports to (created if missing).",
)
@as_of_option("due dates")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def report_regulators(
    app: App, name: str, output: Path, as_of: datetime | None, as_json: bool
) -> None:
    """Write, for each regulator campaign NAME must notify (by the residents' numbers and the
    law of their jurisdiction, see notify rules check), a filled report as Markdown and HTML:
    residents affected by state or country, dates, what happened, what was done, contact,
    what the regulator asks for and by when, and the notice as sent (for a placeholder
    person: no personal data). Also counts.csv: jurisdiction, residents, notified, reached,
    unreached. Not legal advice: check each regulator's current form before filing.

    \b
    Example:
      notify report regulators acme-2026-11 -o regulators/
    """
    from notify.regulators import write_reports

    if str(output) == "-":
        raise click.UsageError(
            "-o -: the reports are several files; name a folder (e.g. -o regulators/)"
        )
    day = as_of_day(as_of)
    with app.session() as session:
        files = write_reports(session, name, output, day)
        audit_log.record(
            session,
            "report regulators",
            campaign=name,
            arguments={"campaign": name, "output": str(output)},
            counts={"files": len(files)},
            actor=app.actor,
        )
    reports = sorted(p.name for p in files if p.suffix == ".md")
    if as_json:
        echo_json(
            {
                "campaign": name,
                "output": str(output),
                "reports": reports,
                "files": [p.name for p in files],
            }
        )
        return
    click.echo(
        f"Wrote {len(reports)} regulator report(s) (Markdown and HTML) and counts.csv "
        f"for {name} to {output}:"
    )
    for report in reports:
        click.echo(f"  {report[:-3]}")
