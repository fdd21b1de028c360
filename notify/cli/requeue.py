"""`notify requeue`: give a campaign's final failures another chance."""

from __future__ import annotations

import click

from notify import audit as audit_log
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app, require_terminal


@main.command()
@click.argument("name")
@click.option(
    "--channel",
    type=click.Choice(["email", "sms"]),
    help="Only this channel (default: every channel).",
)
@click.option(
    "--status",
    type=click.Choice(["failed", "undelivered", "bounced"]),
    help="Only messages that ended with this status (default: all three).",
)
@click.option(
    "--error-code",
    metavar="CODE",
    help="Only messages with this provider error code (e.g. 30003, 5.1.1).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be requeued; change nothing.")
@click.option("--yes", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@pass_app
def requeue(
    app: App,
    name: str,
    channel: str | None,
    status: str | None,
    error_code: str | None,
    dry_run: bool,
    assume_yes: bool,
    as_json: bool,
) -> None:
    """Give campaign NAME's final failures another chance (after an outage, a fix).

    For each contact whose last message on a channel ended failed, undelivered or bounced
    (and nothing there reached them), plans a new message to the contact's current address;
    the next `notify send` sends it. The failed messages keep their status: they stay the
    record of what happened. Running it again plans nothing twice.

    \b
    Examples:
      notify requeue acme-2026-11 --dry-run
      notify requeue acme-2026-11 --channel sms --status undelivered --error-code 30003 --yes
      notify send acme-2026-11 --yes
    """
    from notify import campaigns
    from notify import requeue as requeue_lib

    def plan(session, dry: bool) -> requeue_lib.RequeueResult:
        campaign = campaigns.get_campaign(session, name)
        return requeue_lib.requeue(
            session, campaign, channel=channel, status=status, error_code=error_code, dry_run=dry
        )

    if not dry_run and not assume_yes:
        with app.session() as session:
            due = plan(session, True).total
        if due:
            require_terminal(f"about to requeue {due} message(s) of {name}")
        if due and not click.confirm(
            f"Requeue {due} message(s) of campaign {name}?", default=False
        ):
            click.echo("Nothing requeued.")
            return
    with app.session() as session:
        result = plan(session, dry_run)
        if not dry_run:
            audit_log.record(
                session,
                "requeue",
                campaign=name,
                actor=app.actor,
                arguments={"channel": channel, "status": status, "error_code": error_code},
                counts=result.as_dict(),
            )
    if as_json:
        echo_json(result.as_dict())
        return
    parts = (
        "; ".join(
            f"{ch}: " + ", ".join(f"{n} {st}" for st, n in sorted(c.items()))
            for ch, c in result.by_channel.items()
            if c
        )
        or "none"
    )
    if dry_run:
        click.echo(
            f"Dry run: would requeue {result.total} message(s) of {name} ({parts}); "
            "nothing changed."
        )
    elif result.total:
        click.echo(
            f"Requeued {result.total} message(s) of {name} ({parts}); send them with: "
            f"notify send {name}"
        )
    else:
        click.echo(
            f"Nothing to requeue in {name}: no contact's last message on a channel "
            "ended failed, undelivered or bounced with these filters."
        )
