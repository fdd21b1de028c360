"""`notify templates check`: see that the notices render before anyone gets them."""

from __future__ import annotations

import click

from notify import campaigns
from notify import templates as notices_mod
from notify.cli import main
from notify.cli.common import App, pass_app
from notify.resources import data_dir
from notify.templates import Notices, TemplateError


@main.group("templates")
def templates_group() -> None:
    """Check the notice templates: the built-in ones or a campaign's overrides."""


@templates_group.command("check")
@click.option(
    "--campaign",
    "campaign_name",
    metavar="NAME",
    help="Check this campaign's notices (its overrides over the defaults) with its "
    "fields. Default: the built-in notices with the example campaign.",
)
@pass_app
def templates_check(app: App, campaign_name: str | None) -> None:
    """Render every notice for every case, and fail on any problem.

    Renders the notice and the reminder, email and SMS, for all 7 combinations of exposures,
    with and without a name, with and without a reset link. Exits 1, naming file and line, on
    a syntax error, an undefined name, a missing required heading, a missing reset link, an
    SMS over 3 segments or one that does not point to the full notice, or an override file
    that notify would never read. `notify send` runs the same check before sending.
    With --campaign, it also renders every jurisdiction variant the campaign's contacts need
    (e.g. Massachusetts, Illinois, California) and checks each against its content rules.

    With --campaign it checks the version stored at `notify campaign load` (what sending
    renders), and warns when the files on disk have changed since, or when an override
    replaces one part of a notice (email.txt.j2) but not its counterpart (email.html.j2).
    A symbolic link leaving the templates folder, or anything not a regular file, is an
    error.

    \b
    Example:
      notify templates check
      notify templates check --campaign acme-2026-11
    """
    variants: list[str] = []
    if campaign_name:
        from notify.rules.check import variant_problems

        with app.session() as session:
            campaign = campaigns.get_campaign(session, campaign_name)
            checked = notices_mod.check_campaign(session, campaign)
            folder = campaign.templates_dir
            # The law of where the contacts live: every variant they need (notify.rules).
            variants = variant_problems(session, campaign, checked.notices)
        notices, problems, warnings = checked.notices, checked.problems, checked.warnings
        problems = problems + variants
        what = f"campaign {campaign_name!r}"
        source = (
            f"{folder} over the defaults" if folder else "the defaults"
        ) + f", stored version {notices.version[:16]}"
    else:
        example = data_dir("campaigns") / "example.toml"
        notices = Notices(campaigns.parse_campaign_file(example), None)
        problems, warnings = notices.check(), notices.warnings()
        what = f"the built-in notices (with the fields of {example.name})"
        source = "the defaults"
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise TemplateError(
            f"{len(problems)} problem(s) in the notices of {what}; fix them before sending"
        )
    click.echo(
        f"Templates OK for {what}: notice and reminder, email and SMS, all 7 exposure "
        f"combinations ({source})."
    )
