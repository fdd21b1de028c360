"""`notify status`: where a campaign stands (notify.status does the counting)."""

from __future__ import annotations

from datetime import tzinfo

import click

from notify.cli import main
from notify.cli.common import App, echo_json, pass_app
from notify.cli.listing import local_option


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@local_option
@pass_app
def status(app: App, name: str, as_json: bool, zone: tzinfo) -> None:
    """Where campaign NAME stands: messages by round, channel and status, reach, resets.

    First notices and each reminder round are counted apart (a round is a notice and its
    sequence: "reminder 1" is the first reminder). A contact is reached when at least one
    of its messages is sent or delivered; pending when none is yet but one is still to be
    sent; not reached when all ended otherwise (see `notify export unreached`).

    --json: "messages" and "totals" by channel over all rounds, and "rounds": [{"notice":
    "notice", "sequence": 0, "label": "first notice", "messages": {channel: {status: n}},
    "totals": {channel: n}, "reached": {channel: n}}, {"notice": "reminder", "sequence":
    1, ...}], then "reach" and "resets".

    \b
    Example:
      notify status acme-2026-11
      notify status acme-2026-11 --json
      NOTIFY_TIMEZONE=Europe/Berlin notify status acme-2026-11
    """
    from notify.status import campaign_status, format_status

    with app.session() as session:
        report = {**campaign_status(session, name), "database": app.database_name}
    if as_json:
        echo_json(report)
        return
    for line in format_status(report, zone):
        click.echo(line)
    click.echo(f"Database:    {report['database']}")
