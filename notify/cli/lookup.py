"""`notify lookup`: one customer, found by key, email or phone (notify.lookup does the search)."""

from __future__ import annotations

import sys
from datetime import tzinfo

import click

from notify.cli import main
from notify.cli.common import App, echo_json, pass_app
from notify.cli.listing import local_option


@main.command()
@click.argument("query")
@click.option(
    "--campaign",
    "campaign",
    default=None,
    metavar="NAME",
    help="Only this campaign (default: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@local_option
@pass_app
def lookup(app: App, query: str, campaign: str | None, as_json: bool, zone: tzinfo) -> None:
    """Find a customer by key, email (any case) or phone (any format) and show whether,
    how and when they were reached.

    The first line is the verdict; then the contact, exposures, reset state, and every
    message with its timeline of events, and the database read. When nothing matches it
    says so (this database has no record of them) and exits 1.

    \b
    Example:
      notify lookup ann@example.com
      notify lookup "(415) 555-0100" --campaign acme-2026-11
      notify lookup C-1042 --json
      notify lookup C-1042 --local
    """
    from notify import lookup

    if not query.strip():  # an empty shell variable: "no contact matches ''" reads as an answer
        raise click.UsageError("QUERY is empty: give a key, an email or a phone number")
    with app.session() as session:
        result = {**lookup.lookup(session, query, campaign), "database": app.database_name}
    if as_json:
        echo_json(result)
    elif result["matches"]:
        for line in lookup.format_lookup(result, zone):
            click.echo(line)
        click.echo(f"(read from database {result['database']})")
    else:
        # An answer, not an error: worded so that it cannot be read as "not notified".
        click.echo(lookup.no_match_text(result, result["database"]))
    if not result["matches"]:
        sys.exit(1)
