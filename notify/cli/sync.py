"""`notify sync sms`: ask the SMS provider how messages ended (when callbacks cannot reach us)."""

from __future__ import annotations

import asyncio

import click

from notify import audit as audit_log
from notify import campaigns
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app
from notify.errors import NotifyError


@main.group()
def sync() -> None:
    """Ask providers how messages ended (when status callbacks cannot reach notify)."""


@sync.command("sms")
@click.argument("name")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 100),
    default=None,
    help="Parallel lookups (default: the campaign's throttle.concurrency).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@pass_app
def sync_sms(app: App, name: str, concurrency: int | None, as_json: bool) -> None:
    """Poll Twilio for every SMS of campaign NAME that is not final yet.

    Looks up each SMS in status sending or sent that has a Twilio SID, and records what
    changed (delivered, undelivered, failed with the error code). Statuses only move
    forward, so running it again, or alongside `notify serve`, is harmless.

    \b
    Example:
      notify sync sms acme-2026-11
    """
    from notify import tracking
    from notify.transports import make_messenger

    with app.session() as session:
        campaign = campaigns.get_campaign(session, name)
        config, campaign_id = campaigns.config_of(campaign), campaign.id
    workers = concurrency or config.throttle.concurrency
    messenger = make_messenger("sms", app.settings, config, workers)

    async def run() -> tracking.SyncReport:
        async with messenger:
            return await tracking.sync_sms(app.engine, campaign_id, messenger, concurrency=workers)

    arguments = {"campaign": name, "concurrency": workers, "transport": messenger.name}
    try:
        report = asyncio.run(run())
    except NotifyError as exc:
        # What was learned before the failure is committed: the trail must say so.
        with app.session() as session:
            audit_log.record(
                session,
                "sync sms",
                campaign=name,
                arguments=arguments,
                counts={"error": str(exc)},
                actor=app.actor,
                outcome="error",
            )
        raise
    counts = report.as_dict()
    with app.session() as session:
        audit_log.record(
            session, "sync sms", campaign=name, arguments=arguments, counts=counts, actor=app.actor
        )
    # Nothing was learned when every lookup failed: a cron job must not read it as success.
    failed = NotifyError(
        f"every lookup at {messenger.name} failed; nothing changed: run "
        "notify sync sms again once it answers"
    )
    if as_json:
        echo_json({"campaign": name, **counts})
        if counts["errors"] and counts["errors"] == counts["checked"]:
            raise failed
        return
    changed = ", ".join(f"{n} {status}" for status, n in counts["by_status"].items()) or "none"
    click.echo(
        f"Checked {counts['checked']} SMS of {name} with {messenger.name}: changed "
        f"{changed}; {counts['unchanged']} unchanged; {counts['not_found']} unknown to "
        f"the provider; {counts['errors']} lookup errors."
    )
    if counts["early_applied"]:
        click.echo(f"Applied {counts['early_applied']} status callbacks that had arrived early.")
    for sample in report.error_samples:
        click.echo(f"  lookup error: {sample}", err=True)
    if counts["errors"] and counts["errors"] == counts["checked"]:
        raise failed
