"""`notify remind`: reminders to contacts who have not reset their password yet."""

from __future__ import annotations

from datetime import tzinfo

import click
from sqlalchemy import func, select

from notify import localtime
from notify.cli import main
from notify.cli.common import App, echo_json, parse_duration, pass_app, require_terminal
from notify.cli.listing import local_option
from notify.cli.send import build_options, run_and_report, send_options
from notify.models import IN_FLIGHT_STATUSES, Message
from notify.resets import reminders


@main.command()
@click.argument("name")
@click.option(
    "--after",
    "after_text",
    required=True,
    help="Remind when the last notice was sent at least this long ago: 72h, 3d, 90m, 1h30m.",
)
@click.option(
    "--max-reminders",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most this many reminders per contact and channel, ever.",
)
@send_options
@local_option
@pass_app
def remind(
    app: App,
    name: str,
    after_text: str,
    max_reminders: int,
    channel: str,
    dry_run: bool,
    limit: int | None,
    email_rate: float | None,
    sms_rate: float | None,
    concurrency: int | None,
    assume_yes: bool,
    as_json: bool,
    zone: tzinfo,
) -> None:
    """Send the reminder notice to contacts who have not reset their password.

    A contact with exposed passwords and no completed reset gets a reminder on a channel
    when the last notice there (first notice or reminder) was sent at least --after ago,
    up to --max-reminders. Each reminder is its own message row, with a fresh reset link,
    sent once through the same engine as `notify send`: safe to run from cron. --dry-run
    counts the reminders due now, says when the next ones fall due and how many (if no one
    resets meanwhile), and plans nothing.

    \b
    Examples:
      notify remind acme-2026-11 --after 72h --max-reminders 2 --yes
      notify remind acme-2026-11 --after 3d --channel email --dry-run
    """
    after = parse_duration(after_text)
    options = build_options(
        channel, False, limit, email_rate, sms_rate, concurrency, assume_yes=True, notice="reminder"
    )
    # The engine's own view of the campaign: same channels as `notify send`, and broken
    # reminder templates are refused before anything is planned.
    from notify.send.plan import load_job  # the send engine: only when reminders go out

    job = load_job(app.engine, app.settings, name, options)
    with app.session() as session:
        due = reminders.plan_reminders(
            session, job.campaign, after, max_reminders, job.channels, dry_run=True, limit=limit
        )
        waiting = _unsent_reminders(session, job.campaign.id, job.channels)
    if dry_run:
        with app.session() as session:
            upcoming = reminders.upcoming_reminders(
                session, job.campaign, after, max_reminders, job.channels
            )
        _report_dry_run(name, due, waiting, job.channels, upcoming, after_text, as_json, zone)
        return
    where = ", ".join(f"{ch} to {app.destination(ch)}" for ch in job.channels)
    if not assume_yes and due + waiting and not _confirmed(name, due + waiting, where):
        click.echo("Nothing planned or sent.")
        return

    def plan() -> dict:
        # A fresh transaction whose first statement writes: on SQLite it takes the write
        # lock before reading, so two overlapping cron runs queue instead of failing.
        with app.session() as session:
            created = reminders.plan_reminders(
                session, job.campaign, after, max_reminders, job.channels, limit=limit
            )
        if not as_json:
            click.echo(f"Planned {created} reminder(s).")
        return {"reminders_planned": created}

    # Planning runs inside the audited run: a failure there is recorded too.
    run_and_report(app, "remind", name, options, as_json, prepare=plan)


def _unsent_reminders(session, campaign_id: int, channels: tuple[str, ...]) -> int:
    """Reminders planned earlier and not sent yet (an interrupted run): sent by this one."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                Message.campaign_id == campaign_id,
                Message.notice == "reminder",
                Message.channel.in_(channels),
                Message.status.in_(IN_FLIGHT_STATUSES),
            )
        )
        or 0
    )


def _report_dry_run(
    name: str,
    due: int,
    waiting: int,
    channels: tuple[str, ...],
    upcoming: reminders.Upcoming,
    after_text: str,
    as_json: bool,
    zone: tzinfo,
) -> None:
    if as_json:
        echo_json(
            {
                "campaign": name,
                "dry_run": True,
                "reminders_due": due,
                "reminders_unsent": waiting,
                "channels": list(channels),
                "next_due": {
                    "count": upcoming.count,
                    "first_at": localtime.iso_utc(upcoming.first_at),
                    "last_at": localtime.iso_utc(upcoming.last_at),
                },
            }
        )
        return
    click.echo(
        f"Dry run (nothing planned or sent): {plural(due, 'reminder')} due now for "
        f"{name!r} on {', '.join(channels)}"
        + (f", {waiting} planned earlier and not sent yet" if waiting else "")
        + "."
    )
    click.echo(next_due_text(name, upcoming, after_text, zone))


def next_due_text(
    name: str, upcoming: reminders.Upcoming, after_text: str, zone: tzinfo | None = None
) -> str:
    """``Next: 26 reminders fall due from 2026-12-09 10:02 UTC to ...``: when to run again."""
    if not upcoming.count:
        return (
            "Next: none will fall due (every contact with exposed passwords has reset, "
            "had the most reminders, or still waits for a notice to be sent)."
        )
    first, last = localtime.show(upcoming.first_at, zone), localtime.show(upcoming.last_at, zone)
    # Times shown to the minute: seconds apart read "from 01:34 to 01:34" otherwise.
    when = f"at {first}" if first == last else f"from {first} to {last}"
    return (
        f"Next: {plural(upcoming.count, 'reminder')} fall due {when} (unless those "
        f"contacts reset); run notify remind {name} --after {after_text} then."
    )


def plural(n: int, noun: str) -> str:
    """``1 reminder``, ``26 reminders``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _confirmed(name: str, total: int, where: str) -> bool:
    """Ask on a terminal; without one, --yes is required (as for `notify send`)."""
    require_terminal(f"about to send {total} reminder(s) for {name}")
    return click.confirm(f"Send {total} reminder(s) for campaign {name} ({where})?", default=False)
