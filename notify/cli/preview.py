"""`notify preview`: a contact's notice exactly as it would be sent."""

from __future__ import annotations

from email import message_from_bytes
from email import policy as email_policy

import click
from sqlalchemy import select

from notify import campaigns, mime
from notify import templates as notices_mod
from notify.cli import main
from notify.cli.common import App, pass_app
from notify.errors import NotFound, NotifyError
from notify.models import CHANNELS, NOTICES, Campaign, Contact
from notify.sms_segments import sms_encoding
from notify.templates import PREVIEW_TOKEN, ContactView, Notices


def _find_contact(session, campaign: Campaign, key: str) -> Contact:
    contact = session.scalar(
        select(Contact).where(Contact.campaign_id == campaign.id, Contact.key == key)
    )
    if contact is None:
        raise NotFound(
            f"no contact with key {key!r} in campaign {campaign.name!r} "
            "(search by email or phone with: notify lookup QUERY)"
        )
    return contact


def _check_request(view: ContactView, channel: str, notice: str) -> None:
    address = view.email if channel == "email" else view.phone
    if not address:
        other = "sms" if channel == "email" else "email"
        noun = "no email address" if channel == "email" else "no phone number"
        raise NotifyError(
            f"contact {view.key!r} has {noun}, so nothing is sent to them by "
            f"{channel} (try --channel {other})"
        )
    if notice == "reminder" and not notices_mod.needs_reset(view):
        raise NotifyError(
            f"reminders go only to contacts whose password was exposed; "
            f"{view.key!r} had: {', '.join(view.exposures)}"
        )


def _print_email(
    notices: Notices, campaign: Campaign, view: ContactView, notice: str, show_html: bool, raw: bool
) -> None:
    config = notices.config
    reset = notices_mod.reset_link(config, PREVIEW_TOKEN) if notices_mod.needs_reset(view) else None
    rendered = notices.render_email(view, notice=notice, reset_url=reset)
    data = mime.build_email(
        config, rendered, view.email or "", mime.preview_message_id(config, campaign.id)
    )
    if raw:  # byte for byte what the relay gets (only the Date and Message-ID will differ)
        click.echo(data.decode("utf-8", "replace").replace("\r\n", "\n"), nl=False)
        return
    message = message_from_bytes(data, policy=email_policy.default)
    for header in ("From", "To", "Reply-To", "Subject"):
        if message[header]:
            click.echo(f"{header}: {message[header]}")
    click.echo(f"Template: {rendered.template}/{notice} (version {rendered.version[:16]})")
    if reset:
        click.echo(f"Reset link: shown as {PREVIEW_TOKEN}; the real token is issued at send.")
    click.echo("")
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    click.echo(plain.get_content() if plain is not None else "", nl=False)
    if show_html:
        click.echo("\n----- HTML part -----")
        click.echo(html.get_content() if html is not None else "", nl=False)


def _print_sms(app: App, notices: Notices, view: ContactView, notice: str) -> None:
    config = notices.config
    token = notices_mod.sample_token()
    # Rendered with a token of the real length, so the segment count is the real one.
    reset = notices_mod.reset_link(config, token) if notices_mod.needs_reset(view) else None
    rendered = notices.render_sms(view, notice=notice, reset_url=reset)
    text = rendered.text.replace(token, PREVIEW_TOKEN) if reset else rendered.text
    click.echo(f"To: {view.phone}")
    click.echo(f"From: {app.settings.sms_from or config.sms_from or '(not set)'}")
    click.echo(f"Template: {rendered.template}/{notice} (version {rendered.version[:16]})")
    encoding = sms_encoding(rendered.text)
    click.echo(f"Segments: {rendered.segments} ({encoding}, {len(rendered.text)} characters)")
    if reset:
        click.echo(
            f"Reset link: shown as {PREVIEW_TOKEN}; the real token "
            f"({notices_mod.TOKEN_LENGTH} characters, counted above) is issued at send."
        )
    click.echo("")
    click.echo(text)


@main.command()
@click.option("--campaign", "campaign_name", required=True, metavar="NAME", help="The campaign.")
@click.option("--contact", "key", required=True, metavar="KEY", help="The contact's key.")
@click.option(
    "--channel",
    type=click.Choice(CHANNELS),
    help="email or sms (default: email, or sms for a contact without email).",
)
@click.option(
    "--notice",
    type=click.Choice(NOTICES),
    default="notice",
    show_default=True,
    help="The first notice, or the password reminder.",
)
@click.option("--html", "show_html", is_flag=True, help="Also print the HTML part of the email.")
@click.option("--raw", is_flag=True, help="Print the whole email as sent (MIME, all parts).")
@pass_app
def preview(
    app: App,
    campaign_name: str,
    key: str,
    channel: str | None,
    notice: str,
    show_html: bool,
    raw: bool,
) -> None:
    """Print exactly what one contact gets, without sending anything.

    Email: the headers and the text part (--html adds the HTML part, --raw prints the whole
    MIME message). SMS: the text and its segment count. No reset token is issued: the reset
    link shows the placeholder <issued-at-send> where the contact's own token will be, e.g.
    https://acme.example/reset?token=<issued-at-send>.

    \b
    Example:
      notify preview --campaign acme-2026-11 --contact C-1001
      notify preview --campaign acme-2026-11 --contact C-1001 --channel sms
      notify preview --campaign acme-2026-11 --contact C-1001 --notice reminder --html
    """
    with app.session() as session:
        campaign = campaigns.get_campaign(session, campaign_name)
        view = ContactView.from_model(_find_contact(session, campaign, key))
        notices = notices_mod.notices_for(session, campaign)  # the stored version
    channel = channel or ("email" if view.email else "sms")
    _check_request(view, channel, notice)
    config = notices.config
    if channel not in config.channels:
        when = (
            "only as the fallback when email fails"
            if config.fallback == channel
            else "never (not among its channels)"
        )
        click.echo(f"Note: campaign {config.name!r} sends {channel} {when}.", err=True)
    if channel == "email":
        _print_email(notices, campaign, view, notice, show_html, raw)
    else:
        _print_sms(app, notices, view, notice)
