"""`notify rules check`: deadlines, regulators and notice variants by jurisdiction."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from notify.cli import main
from notify.cli.common import App, as_of_day, as_of_option, echo_json, pass_app


@main.group("rules")
def rules_group() -> None:
    """Breach-notification law as data (not legal advice; see docs/compliance.md)."""


@rules_group.command("check")
@click.argument("name")
@as_of_option("deadlines")
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

    day = as_of_day(as_of)
    with app.session() as session:
        report = check_campaign(session, name, day)
    if as_json:
        echo_json(report.as_json())
    else:
        for line in format_report(report):
            click.echo(line)
    if report.failed:
        sys.exit(1)
