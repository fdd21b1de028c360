"""`notify sync sms`, `notify bounces import`, `notify status` and `notify lookup`."""

from __future__ import annotations

import asyncio
import sys
from datetime import tzinfo
from pathlib import Path

import click

from notify import audit as audit_log
from notify import campaigns
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app
from notify.cli.listing import local_option
from notify.errors import NotifyError

# --- notify sync sms --------------------------------------------------------------------------


@main.group()
def sync() -> None:
    """Ask providers how messages ended (when status callbacks cannot reach notify)."""


@sync.command("sms")
@click.argument("name")
@click.option("--concurrency", type=click.IntRange(1, 100), default=None,
              help="Parallel lookups (default: the campaign's throttle.concurrency).")
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
            return await tracking.sync_sms(app.engine, campaign_id, messenger,
                                           concurrency=workers)

    arguments = {"campaign": name, "concurrency": workers, "transport": messenger.name}
    try:
        report = asyncio.run(run())
    except NotifyError as exc:
        # What was learned before the failure is committed: the trail must say so.
        with app.session() as session:
            audit_log.record(session, "sync sms", campaign=name, arguments=arguments,
                             counts={"error": str(exc)}, actor=app.actor, outcome="error")
        raise
    counts = report.as_dict()
    with app.session() as session:
        audit_log.record(session, "sync sms", campaign=name, arguments=arguments,
                         counts=counts, actor=app.actor)
    if as_json:
        echo_json({"campaign": name, **counts})
        return
    changed = ", ".join(f"{n} {status}" for status, n in counts["by_status"].items()) or "none"
    click.echo(f"Checked {counts['checked']} SMS of {name} with {messenger.name}: changed "
               f"{changed}; {counts['unchanged']} unchanged; {counts['not_found']} unknown to "
               f"the provider; {counts['errors']} lookup errors.")
    if counts["early_applied"]:
        click.echo(f"Applied {counts['early_applied']} status callbacks that had arrived early.")
    for sample in report.error_samples:
        click.echo(f"  lookup error: {sample}", err=True)


# --- notify bounces import ----------------------------------------------------------------------


@main.group()
def bounces() -> None:
    """Read bounce messages (delivery status notifications) returned to the sender."""


@bounces.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--campaign", "campaign_name", metavar="NAME",
              help="Match only emails of this campaign.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@pass_app
def bounces_import(app: App, path: Path, campaign_name: str | None, as_json: bool) -> None:
    """Apply the DSN bounces in PATH (.eml files, a folder of them, or an mbox).

    A DSN returned to a VERP address (the campaign's bounce_address with a tag,
    bounces+TAG@acme.example) whose tag verifies applies to that one email only. Without a
    tag, each recipient report is matched by Original-Recipient or Final-Recipient only to
    an email sent to that address in the last 30 days (within --campaign when given), and
    its event says "matched by recipient". "Action: failed" marks the email bounced (Status
    and Diagnostic-Code kept, clipped to their columns) and queues the SMS fallback when the
    campaign has one; delayed, delivered, relayed and expanded are recorded as events only.
    A DSN that cannot be applied (a tag that does not verify, another campaign's email, a
    value the database refuses) is listed with its file, position and reason and skipped;
    the others still apply. Files that are not DSNs or match nothing are listed by name.

    \b
    Example:
      notify bounces import ~/Maildir/bounces/cur
      notify bounces import bounces.mbox --campaign acme-2026-11 --json
    """
    from notify import bounces as dsn

    if not path.exists():
        raise NotifyError(f"{path}: no such file or folder")
    with app.session() as session:
        campaign = campaigns.get_campaign(session, campaign_name) if campaign_name else None
        report = dsn.import_path(session, path, campaign=campaign)
        counts = report.counts()
        audit_log.record(session, "bounces import", campaign=campaign_name,
                         arguments={"path": str(path)}, counts=counts, actor=app.actor)
    if as_json:
        echo_json({**counts, "unmatched_items": report.unmatched,
                   "unparseable_items": [{"file": f, "reason": r} for f, r in report.unparseable],
                   "skipped_items": [{"file": s.file, "position": s.position, "reason": s.reason}
                                     for s in report.skipped],
                   "fallbacks_by_campaign": [
                       {"campaign": name, "fallbacks_queued": n}
                       for name, n in sorted(report.fallbacks_by_campaign.items())]})
        return
    _print_bounces(report)


def _print_bounces(report) -> None:
    click.echo(f"Read {report.messages} message(s): {report.dsns} delivery status "
               f"notification(s) with {report.recipients} recipient report(s).")
    click.echo(f"Bounced: {report.bounced} email(s) newly marked bounced; "
               f"{report.already_final} already final.")
    click.echo(f"Events only (delayed/delivered/relayed/expanded): {report.events_only}.")
    click.echo(f"Matched: {report.verified} by a verified VERP tag, {report.by_recipient} by "
               "recipient (an email to that address in the last 30 days).")
    for name, n in sorted(report.fallbacks_by_campaign.items()):
        click.echo(f"Queued {n} SMS fallback(s) for {name}; send them with: notify send {name}")
    if not report.fallbacks:
        click.echo("Queued 0 SMS fallbacks.")
    if report.unmatched:
        click.echo(f"Unmatched ({len(report.unmatched)}): no email found for")
        for item in report.unmatched:
            click.echo(f"  {item}")
    if report.unparseable:
        click.echo(f"Unparseable ({len(report.unparseable)}):")
        for name, reason in report.unparseable:
            click.echo(f"  {name}: {reason}")
    if report.skipped:
        click.echo(f"Skipped ({len(report.skipped)}), not applied:")
        for item in report.skipped:
            click.echo(f"  {item.file}, {item.position}: {item.reason}")


# --- notify status / lookup ---------------------------------------------------------------------


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


@main.command()
@click.argument("query")
@click.option("--campaign", "campaign", default=None, metavar="NAME",
              help="Only this campaign (default: all).")
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
