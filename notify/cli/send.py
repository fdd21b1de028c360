"""`notify send`: plan and send a campaign's notices."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import click

from notify import audit as audit_log
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app, require_terminal
from notify.config import LEASE_SECONDS
from notify.errors import ConfigError, NotifyError

if TYPE_CHECKING:  # the engine (jinja2, aiosmtplib, twilio) loads when a send starts
    from notify.send.options import SendOptions

# docs/contracts.md: a lease lasts at most 30 s. Below a second, a busy database could let a live
# worker's lease run out between two renewals (every third of the lease).
LEASE_RANGE = (1.0, LEASE_SECONDS)


def _max_outage(ctx: click.Context, param: click.Parameter, text: str) -> float:
    """--max-outage DURATION -> seconds, kept in the context for :func:`build_options`."""
    from notify.cli.common import parse_duration

    try:
        seconds = parse_duration(text).total_seconds()
    except NotifyError:
        raise click.BadParameter(f"{text!r} is not a duration (examples: 15m, 90s, 1h)") from None
    if seconds <= 0:
        raise click.BadParameter(f"{text!r}: must be longer than 0s")
    ctx.meta["notify.max_outage"] = seconds
    return seconds


def send_options(func):
    """The flags `notify send` and `notify remind` share."""
    options = [
        click.option(
            "--channel",
            "channel",
            type=click.Choice(["email", "sms", "all"]),
            default="all",
            show_default=True,
            help="Which channel to send.",
        ),
        click.option("--dry-run", is_flag=True, help="Render and count; send nothing."),
        click.option("--limit", type=click.IntRange(min=1), help="Send at most N messages."),
        click.option(
            "--email-rate",
            type=click.FloatRange(min=0),
            help="Emails per second across all workers (0 = no limit).",
        ),
        click.option(
            "--sms-rate",
            type=click.FloatRange(min=0),
            help="SMS per second across all workers (0 = no limit).",
        ),
        click.option(
            "--concurrency", type=click.IntRange(min=1), help="Messages in flight per channel."
        ),
        click.option(
            "--outbox",
            is_flag=True,
            expose_value=False,
            callback=_use_outbox,
            help="Write every message to the outbox folder (NOTIFY_OUTBOX, default "
            "./outbox) instead of SMTP or Twilio.",
        ),
        click.option("--yes", "assume_yes", is_flag=True, help="Do not ask for confirmation."),
        click.option(
            "--json", "as_json", is_flag=True, help="Print the summary as one JSON object."
        ),
        click.option(
            "--max-outage",
            default="15m",
            show_default=True,
            metavar="DURATION",
            expose_value=False,
            callback=_max_outage,
            help="How long a provider may stay unavailable (the channel pauses, "
            "nothing is spent) before the run stops with exit status 75, "
            "everything unsent still pending: 90s, 15m, 1h.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _use_outbox(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(App).outbox = True


def build_options(
    channel: str,
    dry_run: bool,
    limit: int | None,
    email_rate: float | None,
    sms_rate: float | None,
    concurrency: int | None,
    assume_yes: bool,
    notice: str | None = None,
) -> SendOptions:
    """SendOptions from the shared flags (and NOTIFY_LEASE_SECONDS from the environment)."""
    from notify.send.options import SendOptions

    options = SendOptions(
        channels=None if channel == "all" else (channel,),
        dry_run=dry_run,
        limit=limit,
        email_rate=email_rate,
        sms_rate=sms_rate,
        concurrency=concurrency,
        assume_yes=assume_yes,
        notice=notice,
        lease_seconds=lease_seconds(),
    )
    context = click.get_current_context(silent=True)
    if context is not None and "notify.max_outage" in context.meta:
        options.max_outage = context.meta["notify.max_outage"]
    return options


def lease_seconds(env: Mapping[str, str] | None = None) -> float:
    """How long a claimed batch stays leased without renewal: NOTIFY_LEASE_SECONDS, else 30.

    A shorter lease makes survivors take a dead worker's batch over sooner, at the price of
    more frequent renewals (every third of the lease).
    """
    text = (os.environ if env is None else env).get("NOTIFY_LEASE_SECONDS", "").strip()
    if not text:
        return LEASE_SECONDS
    low, high = LEASE_RANGE
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also rejects nan and inf
        raise ConfigError(
            f"NOTIFY_LEASE_SECONDS: {text!r} is not a number of seconds from {low:g} to {high:g}"
        )
    return value


def confirm_send(app: App, name: str, options: SendOptions) -> bool:
    """Ask before sending for real; refuses without --yes when nobody can answer."""
    if options.dry_run or options.assume_yes:
        return True
    from notify.send.plan import pending_counts

    counts = pending_counts(app.engine, app.settings, name, options)
    total = sum(counts.values())
    if total == 0:
        return True
    require_terminal(f"about to send {total} messages for {name}")
    what = ", ".join(f"{n} {ch} to {app.destination(ch)}" for ch, n in counts.items())
    return click.confirm(f"Send {what} for campaign {name}?", default=False)


def run_and_report(
    app: App,
    command: str,
    name: str,
    options: SendOptions,
    as_json: bool,
    prepare: Callable[[], dict] | None = None,
) -> None:
    """Run the engine, print the summary, write the audit record, set the exit status.

    ``prepare`` (remind's planning) runs first, inside the audited run, and returns counts
    for the record and the summary.
    """
    from notify.cli.send_progress import reporter
    from notify.send.runner import send_campaign

    if options.observer is None:
        options.observer = reporter(options.progress and not options.dry_run)
    arguments = {
        "channels": options.channels,
        "limit": options.limit,
        "email_rate": options.email_rate,
        "sms_rate": options.sms_rate,
        "concurrency": options.concurrency,
        "notice": options.notice,
    }
    # The record is written however the run ends (failed, Ctrl-C, outage too long).
    with audit_log.recorded_run(
        app.session,
        command,
        campaign=name,
        actor=app.actor,
        arguments=arguments,
        enabled=not options.dry_run,
    ) as run:
        extra_counts = prepare() if prepare is not None else {}
        run.counts = dict(extra_counts)
        summary = send_campaign(app.engine, app.settings, name, options)
        run.counts.update(summary.as_dict()["run"])
        # channel -> "smtp:HOST" | "twilio" | "outbox" (the record is written on leaving)
        arguments.update({f"{ch}_transport": t for ch, t in summary.transports.items()})
        run.outcome = "interrupted" if summary.interrupted else "ok"
    if as_json:
        echo_json({**extra_counts, **summary.as_dict()})
    else:
        for line in summary.lines():
            click.echo(line)
    if summary.interrupted:
        sys.exit(130)


@main.command()
@click.argument("name")
@send_options
@pass_app
def send(
    app: App,
    name: str,
    channel: str,
    dry_run: bool,
    limit: int | None,
    email_rate: float | None,
    sms_rate: float | None,
    concurrency: int | None,
    assume_yes: bool,
    as_json: bool,
) -> None:
    """Send campaign NAME's notices: every contact once per channel.

    Safe to run again at any time (after a crash, Ctrl-C, or in several processes at
    once): it resumes and sends only what was not sent. Rates are global per channel.
    Email goes to NOTIFY_SMTP_HOST, SMS to Twilio (TWILIO_ACCOUNT_SID); a channel with
    neither is an error unless the outbox folder is asked for (--outbox, or NOTIFY_OUTBOX
    set). Each message records where it went.

    \b
    Examples:
      notify send acme-2026-11 --dry-run
      notify send acme-2026-11 --yes
      notify send acme-2026-11 --outbox --yes        # to ./outbox, nothing leaves
      notify send acme-2026-11 --channel email --email-rate 50 --concurrency 20 --yes
    """
    options = build_options(channel, dry_run, limit, email_rate, sms_rate, concurrency, assume_yes)
    if not confirm_send(app, name, options):
        click.echo("Nothing sent.")
        return
    run_and_report(app, "send", name, options, as_json)
