"""`notify plan`: messages, segments, time, cost and deadlines before a send."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from notify.cli import main
from notify.cli.common import App, echo_json, pass_app


@main.command("plan")
@click.argument("name")
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
    default=None,
    metavar="YYYY-MM-DD[THH:MM]",
    help="When sending would start, UTC (default: now).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object.")
@pass_app
def plan_command(app: App, name: str, start: datetime | None, as_json: bool) -> None:
    """What sending campaign NAME will take, before it starts (changes nothing).

    Per channel: the messages still to send, SMS segments (each SMS rendered as it will be
    sent), the time at the campaign's rates and at common SMS sender limits (long code 1
    segment/s, toll-free 3/s, short code 100/s), the estimated cost from the campaign's
    prices (prices = { email = ..., sms_segment = ..., currency = "USD" }), and the finish
    date against each jurisdiction's notice deadline. Warns when the SMS rate times the
    segments per message is more than the sender type allows.

    \b
    Example:
      notify plan acme-2026-11
      notify plan acme-2026-11 --start 2026-12-07T09:00 --json
    """
    from notify.plan import format_plan, make_plan

    when = start.replace(tzinfo=UTC) if start else datetime.now(UTC)
    with app.session() as session:
        plan = make_plan(session, name, when)
    if as_json:
        echo_json(plan.as_json())
        return
    for line in format_plan(plan):
        click.echo(line)
