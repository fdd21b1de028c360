"""`notify contacts import|list|remove`: the affected-customer list of a campaign."""

from __future__ import annotations

import re
import sys
from collections import Counter
from datetime import tzinfo
from typing import TYPE_CHECKING

import click

from notify import audit as audit_log
from notify import campaigns
from notify.cli import main
from notify.cli.common import App, echo_json, pass_app, table_options
from notify.cli.listing import Column, emit, list_options
from notify.errors import NotifyError

if TYPE_CHECKING:
    from notify import importer

SHOWN_PROBLEMS = 20  # per list; the rejects file has every row


@main.group()
def contacts() -> None:
    """The affected customers of a campaign: import a list, see them, take some back.

    \b
    Example:
      notify contacts import customers.csv --campaign acme-2026-11 --rejects rejects.csv
      notify contacts list --campaign acme-2026-11 --format csv > contacts.csv
      notify contacts remove --campaign acme-2026-11 C-1001 C-1002 --dry-run
    """


@contacts.command("import")
@click.argument("file", type=click.Path(path_type=str))
@click.option(
    "--campaign",
    "campaign_name",
    required=True,
    metavar="NAME",
    help="The campaign the customers belong to (see: notify campaign list).",
)
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=str),
    metavar="FILE",
    help="Write rejected rows to this CSV: line, reason, then the source columns.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate and report exactly what the import "
    "would do; write nothing to the database (--rejects is still written).",
)
@click.option(
    "--default-region",
    default="US",
    show_default=True,
    metavar="R",
    help="Region for phone numbers written without +country code (when the row has no country).",
)
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="Read COLUMN as FIELD (key, name, first_name, last_name, email, phone, "
    "exposure, passwords, card, identity, country, state, locale). Repeatable.",
)
@click.option(
    "--map-value",
    "value_maps",
    multiple=True,
    metavar="WORD=KIND",
    help="Read WORD in an exposure cell or flag header as KIND (passwords, card, "
    'identity), e.g. "PAN=card". Repeatable.',
)
@table_options
@click.option(
    "--merge-on",
    type=click.Choice(["email", "phone"]),
    default=None,
    help="A new key whose email (phone) already belongs to another contact is "
    "merged into that contact instead of becoming a second one.",
)
@click.option(
    "--update",
    is_flag=True,
    help="A row of a known contact replaces its email, "
    "phone and name (default: the first values are kept, with a warning).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Also print the summary as one JSON object on the last line.",
)
@pass_app
def contacts_import(
    app: App,
    file: str,
    campaign_name: str,
    rejects_path: str | None,
    dry_run: bool,
    default_region: str,
    mappings: tuple[str, ...],
    value_maps: tuple[str, ...],
    sheet: str | None,
    header_row: int | None,
    merge_on: str | None,
    update: bool,
    as_json: bool,
) -> None:
    """Import the affected customers in FILE into a campaign.

    FILE may be CSV or TSV (delimiter sniffed; also .gz, .bz2, .xz or .zip compressed),
    XLSX, XLSM, XLS, ODS, Parquet, JSON Lines or a JSON array of objects: the format is told
    by the content, not the name. The header is found (a title row above it is skipped, and
    said); headers are matched ignoring case, spaces and punctuation (E-mail Address = email).
    A key column (customer id, cust #, account no, member number ...) identifies a customer,
    else the email, else the phone; the summary says which. Phones become E.164, emails are
    validated; control characters are removed (a NUL rejects its row). A row without a usable
    email or phone, or without a recognized exposure (see the vocabulary in docs/cli.md), is
    rejected; a row whose key is already known is merged into that contact. A new key whose
    email or phone another contact has is a possible duplicate (a warning; --merge-on merges).

    The import is all-or-nothing, importing the same file again changes nothing, and an
    import in which every row is rejected fails (exit 1) and imports nothing.

    \b
    Example:
      notify contacts import customers.csv --campaign acme-2026-11 --rejects rejects.csv
      notify contacts import list.xlsx --campaign acme-2026-11 --sheet Affected --dry-run
      notify contacts import export.tsv --campaign acme-2026-11 \\
          --map "Kundennummer=key" --map "Handy=phone" --default-region DE --json
      notify contacts import fixes.csv --campaign acme-2026-11 --update
    """
    from notify import importer  # pandas, phonenumbers, email-validator: only for imports

    mapping = importer.parse_mapping(mappings)
    value_map = importer.parse_value_map(value_maps)
    importer.check_region(default_region)
    with (
        _ImportProgress(f"contacts import {file}", quiet=as_json) as progress,
        app.session() as session,
    ):
        campaign = campaigns.get_campaign(session, campaign_name)
        summary = importer.import_contacts(
            session,
            campaign,
            file,
            default_region=default_region,
            mapping=mapping,
            rejects_path=rejects_path,
            dry_run=dry_run,
            progress=progress.stage,
            sheet=sheet,
            header_row=header_row,
            merge_on=merge_on,
            update=update,
            value_map=value_map,
        )
        if summary.all_rejected:
            session.rollback()  # nothing of a list where no row was usable
        elif not dry_run:
            audit_log.record(
                session,
                "contacts import",
                campaign=campaign.name,
                arguments={
                    "file": file,
                    "rejects": rejects_path,
                    "default_region": default_region,
                    "map": list(mappings),
                    "map_value": list(value_maps),
                    "sheet": sheet,
                    "header_row": header_row,
                    "merge_on": merge_on,
                    "update": update,
                },
                counts={**summary.json(), "updated": summary.updated},
                actor=app.actor,
            )
    _report(summary, campaign_name, file, rejects_path)
    if as_json:
        echo_json(summary.json())
    if summary.all_rejected:
        raise SystemExit(1)


class _ImportProgress:
    """The import's progress on stderr (notify.cli.progress.RowProgress): rows read, rate
    and time left estimated from the share of the file done; nothing with --json."""

    def __init__(self, label: str, quiet: bool) -> None:
        from notify.cli.progress import RowProgress

        self.rows = RowProgress(label, total=1000, unit="")
        self.quiet = quiet
        self.count = 0
        self.stage_name = "read"
        self.rows.line = self._line  # type: ignore[method-assign]

    def __enter__(self) -> _ImportProgress:
        if not self.quiet:
            self.rows.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self.rows.__exit__(*exc)

    def stage(self, name: str, rows: int, fraction: float) -> None:
        """Called by the importer: the stage (read, check, write), rows so far, share done."""
        if self.quiet:
            return
        self.stage_name, self.count = name, rows or self.count
        self.rows.update(int(1000 * min(1.0, fraction)))

    def _line(self, now: float | None = None) -> str:
        from notify.cli.progress import _duration

        rows = self.rows
        now = rows.clock() if now is None else now
        elapsed = now - rows.started
        share = rows.done / 1000
        words = {"read": "reading", "check": "checking", "write": "writing"}[self.stage_name]
        text = f"{rows.label}: {words}, {self.count:,} rows, {int(100 * share)}%"
        if self.count and elapsed > 0:
            text += f", {self.count / elapsed:,.0f} rows/s"
        if 0 < share < 1:
            text += f", {_duration(elapsed / share * (1 - share))} left"
        return text + f", {_duration(elapsed)} elapsed"


def _report(
    summary: importer.ImportSummary, campaign: str, file: str, rejects_path: str | None
) -> None:
    """The summary line, what was read (format, sheet, key), then the rejected and warned
    rows, repeated reasons grouped."""
    if summary.all_rejected:
        verb = "Nothing imported (every row was rejected) from"
    elif summary.dry_run:
        verb = "Dry run (nothing written): would import"
    else:
        verb = "Imported"
    click.echo(f"{verb} {file} into {campaign}: {outcome_text(summary)}.")
    read = f"Read {summary.kind}" + (f", sheet {summary.sheet!r}" if summary.sheet else "")
    key = (
        f"key column {summary.key_column!r}"
        if summary.key_column
        else "no key column: contacts are keyed by email, else phone"
    )
    click.echo(f"{read}; {key}.")
    if summary.possible_duplicates:
        click.echo(
            f"Possible duplicates: {summary.possible_duplicates:,} new contact(s) share "
            "an email or phone with another key (see the warnings; --merge-on email|"
            "phone merges them)."
        )
    for note in summary.notes:
        click.echo(f"Note: {note}.")
    _problems(
        "Rejected",
        summary.rejects,
        summary.rejected,
        f"see {rejects_path}" if rejects_path else "see --rejects",
    )
    _problems("Warnings", summary.warned, summary.warnings, "")
    if rejects_path and summary.rejected:
        click.echo(f"Rejected rows written to {rejects_path}.")


def outcome_text(summary: importer.ImportSummary) -> str:
    """``41 rows: 0 new, 36 already present, 0 changed; 1 repeated in the file, 4 rejected;
    2 with warnings``: what the import did to the campaign, in the order a person asks it
    (a re-import of the same file reads "0 new, N already present, 0 changed")."""
    repeats = summary.merged - summary.present  # rows naming a contact named earlier in the file
    text = (
        f"{summary.read:,} row{'s' if summary.read != 1 else ''}: {summary.imported:,} new, "
        f"{summary.present:,} already present, {summary.updated:,} changed"
    )
    rest = [
        f"{n:,} {what}"
        for n, what in ((repeats, "repeated in the file"), (summary.rejected, "rejected"))
        if n
    ]
    if rest:
        text += "; " + ", ".join(rest)
    if summary.warnings:
        text += f"; {summary.warnings:,} with warnings"
    return text


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
SHOWN_LINES = 5  # line numbers shown for a repeated reason


def _problems(title: str, problems: list[importer.Problem], total: int, hint: str) -> None:
    """Problems grouped by reason (values aside), in order of first line: one line each."""
    if not total:
        return
    click.echo(f"{title}:")
    # A reason repeated word for word is one group; reasons that differ only in the values
    # they quote (each email its own) are grouped by their pattern.
    repeated = Counter(p.reason for p in problems)
    groups: dict[str, list[importer.Problem]] = {}
    for problem in problems:
        key = problem.reason if repeated[problem.reason] > 1 else _QUOTED.sub('"…"', problem.reason)
        groups.setdefault(key, []).append(problem)
    shown = 0
    for pattern, members in groups.items():
        if shown >= SHOWN_PROBLEMS:
            break
        shown += 1
        if len(members) == 1:
            click.echo(f"  line {members[0].line}: {members[0].reason}")
            continue
        same = all(m.reason == members[0].reason for m in members)
        lines = ", ".join(str(m.line) for m in members[:SHOWN_LINES])
        more = ", ..." if len(members) > SHOWN_LINES else ""
        click.echo(
            f"  {len(members):,} rows: {members[0].reason if same else pattern} "
            f"(lines {lines}{more})"
        )
    hidden = sum(len(m) for m in list(groups.values())[shown:]) + total - len(problems)
    if hidden > 0:
        click.echo(f"  ... and {hidden:,} more" + (f"; {hint}" if hint else ""))


LIST_COLUMNS = (
    Column("key"),
    Column("name"),
    Column("email"),
    Column("phone"),
    Column("exposures"),
    Column("country"),
    Column("state"),
    Column("created_at", time=True),
)


@contacts.command("list")
@click.option(
    "--campaign",
    "campaign_name",
    required=True,
    metavar="NAME",
    help="The campaign whose contacts to list.",
)
@list_options
@pass_app
def contacts_list(app: App, campaign_name: str, fmt: str, zone: tzinfo) -> None:
    """List a campaign's contacts: key, name, email, phone, exposures, country, state, added.

    \b
    Example:
      notify contacts list --campaign acme-2026-11
      notify contacts list --campaign acme-2026-11 --csv > contacts.csv
      notify contacts list --campaign acme-2026-11 --json
    """
    from notify import roster

    with app.session() as session:
        campaign = campaigns.get_campaign(session, campaign_name)
        rows = list(roster.contact_rows(session, campaign))
    emit(
        rows,
        LIST_COLUMNS,
        fmt,
        zone,
        empty=f"No contacts in {campaign_name} yet. Import some with: notify contacts "
        f"import FILE --campaign {campaign_name}",
    )


@contacts.command("remove")
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@click.option(
    "--campaign",
    "campaign_name",
    required=True,
    metavar="NAME",
    help="The campaign the contacts belong to.",
)
@click.option(
    "--keys-from",
    "keys_from",
    type=click.Path(dir_okay=False, path_type=str),
    metavar="FILE",
    help="Read the keys from FILE: its key column (any list format "
    "import reads), or one key a line.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Also print the counts as one JSON object on the last line.",
)
@pass_app
def contacts_remove(
    app: App,
    keys: tuple[str, ...],
    campaign_name: str,
    keys_from: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Take back contacts imported by mistake (KEY... or --keys-from FILE).

    All or nothing: a key that is not in the campaign, or a contact who already has a message
    handed to a provider (sent, delivered, failed ... anything but pending or skipped), is
    named and nothing is removed. Their unsent messages and reset record go with them; the
    removal is audited.

    \b
    Example:
      notify contacts remove --campaign acme-2026-11 C-1001 C-1002 --dry-run
      notify contacts remove --campaign acme-2026-11 --keys-from wrong-list.csv --yes
    """
    from notify import roster

    if bool(keys) == bool(keys_from):
        raise NotifyError("name the contacts by KEY... or --keys-from FILE (one of the two)")
    wanted = list(keys) if keys else roster.keys_from_file(keys_from or "")
    with app.session() as session:
        campaign = campaigns.get_campaign(session, campaign_name)
        plan = roster.remove(session, campaign, wanted, dry_run=True)
        if plan.unknown or plan.refused:
            _refusal(plan, campaign_name)
            if as_json:
                echo_json(plan.counts())
            raise SystemExit(1)
        if dry_run:
            click.echo(
                f"Dry run (nothing removed): would remove {len(plan.removed):,} "
                f"contact(s) from {campaign_name} and {plan.messages:,} unsent "
                "message(s)."
            )
            if as_json:
                echo_json(plan.counts())
            return
        if not yes:
            if not sys.stdin.isatty():
                raise NotifyError("removing contacts needs confirmation: add --yes")
            click.confirm(
                f"Remove {len(plan.removed):,} contact(s) from {campaign_name}?", abort=True
            )
        result = roster.remove(session, campaign, wanted)
        audit_log.record(
            session,
            "contacts remove",
            campaign=campaign.name,
            arguments={"keys": result.removed[:1000], "keys_from": keys_from},
            counts=result.counts(),
            actor=app.actor,
        )
    click.echo(
        f"Removed {len(result.removed):,} contact(s) from {campaign_name} and "
        f"{result.messages:,} unsent message(s)."
    )
    if as_json:
        echo_json(result.counts())


def _refusal(plan, campaign: str) -> None:
    """Why nothing was removed: unknown keys and contacts already handed over, a few each."""
    click.echo(f"Nothing removed from {campaign}:", err=True)
    if plan.unknown:
        shown = ", ".join(repr(k) for k in plan.unknown[:10])
        more = f" and {len(plan.unknown) - 10:,} more" if len(plan.unknown) > 10 else ""
        click.echo(f"  {len(plan.unknown):,} key(s) not in the campaign: {shown}{more}", err=True)
    for key, statuses in list(plan.refused.items())[:10]:
        click.echo(
            f"  {key!r}: a message was already handed to a provider ({statuses}); "
            "it cannot be taken back",
            err=True,
        )
    if len(plan.refused) > 10:
        click.echo(f"  ... and {len(plan.refused) - 10:,} more handed over", err=True)
