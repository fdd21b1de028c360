"""`notify rules check`: deadlines, regulators and notice variants by jurisdiction."""

from __future__ import annotations

import sys
from datetime import date, datetime

import click

from notify.cli import main
from notify.cli.common import App, echo_json, pass_app


def today() -> date:
    """Today in UTC (the deadlines are calendar dates)."""
    from datetime import UTC

    return datetime.now(UTC).date()


@main.group("rules")
def rules_group() -> None:
    """Breach-notification law as data (not legal advice; see docs/compliance.md)."""


@rules_group.command("check")
@click.argument("name")
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    metavar="YYYY-MM-DD",
    help="Judge deadlines on this day (default: today, UTC).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_app
def rules_check(app: App, name: str, as_of: datetime | None, as_json: bool) -> None:
    """Check campaign NAME against the law of where its contacts live.

    Per jurisdiction (from each contact's state and country; contacts without them count
    under "unknown"): residents affected, the individual-notice deadline and days left, each
    regulator notice (required by its threshold or not, and its due date), the consumer
    reporting agencies, credit-monitoring months required, the notice variant, and whether
    the campaign's notices meet it. Exits 1 when a deadline has passed with residents not
    reached, or a requirement is not met.

    \b
    Example:
      notify rules check acme-2026-11
      notify rules check acme-2026-11 --as-of 2026-12-20 --json
    """
    from notify.rules.check import check_campaign, format_report

    day = as_of.date() if as_of else today()
    with app.session() as session:
        report = check_campaign(session, name, day)
    if as_json:
        echo_json(report.as_json())
    else:
        for line in format_report(report):
            click.echo(line)
    if report.failed:
        sys.exit(1)
