"""`notify bounces import`: apply delivery status notifications (bounces) to messages."""

from __future__ import annotations

from pathlib import Path

import click

from notify import audit as audit_log
from notify import campaigns
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app
from notify.errors import NotifyError


@main.group()
def bounces() -> None:
    """Read bounce messages (delivery status notifications) returned to the sender."""


@bounces.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--campaign", "campaign_name", metavar="NAME", help="Match only emails of this campaign."
)
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
        audit_log.record(
            session,
            "bounces import",
            campaign=campaign_name,
            arguments={"path": str(path)},
            counts=counts,
            actor=app.actor,
        )
    if as_json:
        echo_json(
            {
                **counts,
                "unmatched_items": report.unmatched,
                "unparseable_items": [{"file": f, "reason": r} for f, r in report.unparseable],
                "skipped_items": [
                    {"file": s.file, "position": s.position, "reason": s.reason}
                    for s in report.skipped
                ],
                "fallbacks_by_campaign": [
                    {"campaign": name, "fallbacks_queued": n}
                    for name, n in sorted(report.fallbacks_by_campaign.items())
                ],
            }
        )
        return
    _print_bounces(report)


def _print_bounces(report) -> None:
    click.echo(
        f"Read {report.messages} message(s): {report.dsns} delivery status "
        f"notification(s) with {report.recipients} recipient report(s)."
    )
    click.echo(
        f"Bounced: {report.bounced} email(s) newly marked bounced; "
        f"{report.already_final} already final."
    )
    click.echo(f"Events only (delayed/delivered/relayed/expanded): {report.events_only}.")
    click.echo(
        f"Matched: {report.verified} by a verified VERP tag, {report.by_recipient} by "
        "recipient (an email to that address in the last 30 days)."
    )
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
