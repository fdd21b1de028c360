"""`notify serve`: the webhook server (Twilio status callbacks, reset completions, health)."""

from __future__ import annotations

import logging

import click

from notify import audit as audit_log
from notify.cli import main
from notify.cli.common import App, pass_app
from notify.config import check_webhook_secret


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; loopback unless a proxy or Twilio must reach it directly.",
)
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="TCP port to listen on.",
)
@pass_app
def serve(app: App, host: str, port: int) -> None:
    """Serve the web view and receive Twilio status callbacks and reset completions.

    Routes: POST /webhooks/twilio/status (checked with X-Twilio-Signature against
    NOTIFY_PUBLIC_URL + path, using TWILIO_AUTH_TOKEN), POST /webhooks/resets (signed with
    NOTIFY_WEBHOOK_SECRET, at least 32 bytes), GET /healthz ("busy" while another process
    holds the SQLite write lock). Unsigned or badly signed requests get 403, change nothing
    and are logged (at most once a minute per kind). A request must send its headers within
    15 s and its body within 10 s. The web view for support and compliance is at / (sign in
    with an account from `notify users add`; see docs/web.md). Stop it with Ctrl-C.

    \b
    Example:
      NOTIFY_PUBLIC_URL=https://notify.acme.example notify serve --port 8080
    """
    from notify import server  # aiohttp is only loaded by the command that needs it

    settings = app.settings
    check_webhook_secret(settings.webhook_secret)  # before anything is opened or recorded
    engine = app.engine  # connects and upgrades the schema before we listen
    with app.session() as session:
        audit_log.record(session, "serve", arguments={"host": host, "port": port}, actor=app.actor)
    if settings.status_callback_url and settings.twilio_auth_token:
        click.echo(f"Twilio status callbacks expected at {settings.status_callback_url}")
    else:
        click.echo(
            "Warning: Twilio status callbacks will be refused (403): set "
            "NOTIFY_PUBLIC_URL and TWILIO_AUTH_TOKEN to verify their signatures. "
            "Without them, use: notify sync sms NAME",
            err=True,
        )
    if not settings.webhook_secret:
        click.echo(
            "Warning: NOTIFY_WEBHOOK_SECRET is not set: reset completions will be refused.",
            err=True,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server.serve(engine, settings, host, port, announce=click.echo)
