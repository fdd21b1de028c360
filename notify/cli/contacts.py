"""`notify contacts import`: the affected-customer list into a campaign."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from notify import audit as audit_log
from notify import campaigns
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app

if TYPE_CHECKING:
    from notify import importer

SHOWN_PROBLEMS = 20  # per list; the rejects file has every row


@main.group()
def contacts() -> None:
    """Import the affected-customer list (CSV, TSV or XLSX).

    \b
    Example:
      notify contacts import customers.csv --campaign acme-2026-11 --rejects rejects.csv
    """


@contacts.command("import")
@click.argument("file", type=click.Path(path_type=str))
@click.option("--campaign", "campaign_name", required=True, metavar="NAME",
              help="The campaign the customers belong to (see: notify campaign list).")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=str),
              metavar="FILE", help="Write rejected rows to this CSV: line, reason, then the "
              "source columns.")
@click.option("--dry-run", is_flag=True, help="Validate and report exactly what the import "
              "would do; write nothing to the database (--rejects is still written).")
@click.option("--default-region", default="US", show_default=True, metavar="R",
              help="Region for phone numbers written without +country code (when the row has "
              "no country).")
@click.option("--map", "mappings", multiple=True, metavar="COLUMN=FIELD",
              help="Read COLUMN as FIELD (key, name, first_name, last_name, email, phone, "
              "exposure, passwords, card, identity, country, state, locale). Repeatable.")
@click.option("--json", "as_json", is_flag=True,
              help="Also print the summary as one JSON object on the last line.")
@pass_app
def contacts_import(
    app: App, file: str, campaign_name: str, rejects_path: str | None, dry_run: bool,
    default_region: str, mappings: tuple[str, ...], as_json: bool,
) -> None:
    """Import the affected customers in FILE into a campaign.

    Headers are matched ignoring case, spaces and punctuation (E-mail Address = email);
    a key column (id, customer id, account ...) identifies a customer, else the email, else
    the phone. Phones become E.164, emails are validated. A row without a usable email or
    phone, or without a recognized exposure (passwords, card, identity), is rejected; the
    others are imported, and a row whose key is already known is merged into that contact.
    The import is all-or-nothing, and importing the same file again changes nothing.

    The file must be UTF-8 (with or without BOM) or UTF-16 with BOM; anything else is refused
    with the line of the first bad byte (re-save as "CSV UTF-8").

    \b
    Example:
      notify contacts import customers.csv --campaign acme-2026-11 --rejects rejects.csv
      notify contacts import list.xlsx --campaign acme-2026-11 --dry-run
      notify contacts import export.tsv --campaign acme-2026-11 \\
          --map "Kundennummer=key" --map "Handy=phone" --default-region DE --json
    """
    from notify import importer  # phonenumbers and email-validator: only for imports

    mapping = importer.parse_mapping(mappings)
    importer.check_region(default_region)
    show_progress = sys.stderr.isatty() and not as_json
    with app.session() as session:
        campaign = campaigns.get_campaign(session, campaign_name)
        summary = importer.import_contacts(
            session, campaign, file, default_region=default_region, mapping=mapping,
            rejects_path=rejects_path, dry_run=dry_run,
            progress=_progress if show_progress else None,
        )
        if not dry_run:
            audit_log.record(
                session, "contacts import", campaign=campaign.name,
                arguments={"file": file, "rejects": rejects_path,
                           "default_region": default_region, "map": list(mappings)},
                counts={**summary.counts(), "updated": summary.updated}, actor=app.actor,
            )
    if show_progress:
        click.echo("\r\033[K", nl=False, err=True)
    _report(summary, campaign_name, file, rejects_path)
    if as_json:
        echo_json(summary.counts())


def _progress(rows: int) -> None:
    click.echo(f"\rread {rows:,} rows...", nl=False, err=True)


def _report(summary: importer.ImportSummary, campaign: str, file: str,
            rejects_path: str | None) -> None:
    """The summary line, then the first rejected and warned rows with their line and reason."""
    verb = "Dry run (nothing written): would import" if summary.dry_run else "Imported"
    click.echo(f"{verb} {file} into {campaign}: {outcome_text(summary)}.")
    for note in summary.notes:
        click.echo(f"Note: {note}.")
    _problems("Rejected", summary.rejects, summary.rejected,
              f"see {rejects_path}" if rejects_path else "see --rejects")
    _problems("Warnings", summary.warned, summary.warnings, "")
    if rejects_path and summary.rejected:
        click.echo(f"Rejected rows written to {rejects_path}.")


def outcome_text(summary: importer.ImportSummary) -> str:
    """``41 rows: 0 new, 36 already present, 0 changed; 1 repeated in the file, 4 rejected;
    2 with warnings``: what the import did to the campaign, in the order a person asks it
    (a re-import of the same file reads "0 new, N already present, 0 changed")."""
    repeats = summary.merged - summary.present  # rows naming a contact named earlier in the file
    text = (f"{summary.read:,} row{'s' if summary.read != 1 else ''}: {summary.imported:,} new, "
            f"{summary.present:,} already present, {summary.updated:,} changed")
    rest = [f"{n:,} {what}" for n, what in ((repeats, "repeated in the file"),
                                              (summary.rejected, "rejected")) if n]
    if rest:
        text += "; " + ", ".join(rest)
    if summary.warnings:
        text += f"; {summary.warnings:,} with warnings"
    return text


def _problems(title: str, problems: list[importer.Problem], total: int, hint: str) -> None:
    if not total:
        return
    click.echo(f"{title}:")
    for problem in problems[:SHOWN_PROBLEMS]:
        click.echo(f"  line {problem.line}: {problem.reason}")
    if total > SHOWN_PROBLEMS:
        click.echo(f"  ... and {total - SHOWN_PROBLEMS:,} more" + (f"; {hint}" if hint else ""))
