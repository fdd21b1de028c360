"""`notify campaign load|list`: campaign files into the database, and what is there."""

from __future__ import annotations

from datetime import tzinfo

import click

from notify import audit as audit_log
from notify import campaigns
from notify.cli import main
from notify.cli.common import App, pass_app
from notify.cli.listing import Column, emit, list_options


@main.group()
def campaign() -> None:
    """Load and list campaigns (one TOML file each)."""


@campaign.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@pass_app
def campaign_load(app: App, file: str) -> None:
    """Create or update the campaign described by FILE, and store its notices.

    Loading the same name again updates it. An unknown key or a bad value is an error
    naming it, and nothing is stored. The notices (the `templates` folder, relative to FILE
    and within its folder, over the built-in defaults) are read once and stored in the
    database as a version: sending renders from it, so workers need no templates folder.
    To change the notices, edit them and load again: a new version; messages already sent
    keep theirs. A symbolic link leaving the folder, or anything that is not a regular file,
    is an error.

    \b
    Example:
      notify campaign load campaigns/example.toml
    """
    config = campaigns.parse_campaign_file(file)  # validate before opening the database
    app.creates = True  # loading the first campaign is how a database is set up
    with app.session() as session:
        loaded = campaigns.load(session, file)
        audit_log.record(
            session,
            "campaign load",
            campaign=loaded.campaign.name,
            arguments={"file": file, "template_version": loaded.template_version},
            counts={
                "created": int(loaded.created),
                "templates_changed": int(loaded.templates_changed),
            },
            actor=app.actor,
        )
    verb = "Created" if loaded.created else "Updated"
    click.echo(
        f"{verb} campaign {config.name!r} ({config.organization}); "
        f"channels: {', '.join(config.channels)}."
    )
    source = f"{config.templates} over the defaults" if config.templates else "the defaults"
    state = "new version" if loaded.templates_changed else "unchanged"
    click.echo(f"Templates: {source}, stored as version {loaded.template_version[:16]} ({state}).")
    for warning in loaded.warnings:
        click.echo(f"Warning: {warning}", err=True)


CAMPAIGN_COLUMNS = (
    Column("name"),
    Column("organization"),
    Column("channels"),
    Column("updated_at", time=True),
)


@campaign.command("list")
@list_options
@pass_app
def campaign_list(app: App, fmt: str, zone: tzinfo) -> None:
    """List the loaded campaigns: name, organization, channels, last loaded.

    \b
    Example:
      notify campaign list
      notify campaign list --format csv > campaigns.csv
    """
    with app.session() as session:
        rows = [
            {
                "name": c.name,
                "organization": c.settings.get("organization"),
                "channels": c.settings.get("channels"),
                "updated_at": c.updated_at,
            }
            for c in campaigns.list_campaigns(session)
        ]
    emit(
        rows,
        CAMPAIGN_COLUMNS,
        fmt,
        zone,
        empty="No campaigns yet. Load one with: notify campaign load FILE",
    )
