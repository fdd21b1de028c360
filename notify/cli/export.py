"""`notify export deliveries|events|unreached`: compliance CSVs, streamed and atomic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from notify import audit as audit_log
from notify.cli import main
from notify.cli.common import App, json_line, pass_app
from notify.cli.progress import RowProgress
from notify.csvsafe import is_stdout

_OUTPUT = click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE.csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file to write (replaced only once complete); - for standard output.",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
_BOM = click.option(
    "--bom",
    is_flag=True,
    help="Start the file with a UTF-8 byte-order mark "
    "(Excel then reads accents and non-Latin names right).",
)


def where(output: Path | str) -> str:
    """How a summary names the output: the file, or standard output for ``-``."""
    return "standard output" if is_stdout(output) else str(output)


def summary(output: Path | str, as_json: bool, data: dict, text: str) -> None:
    """Print an export's summary: to standard error when standard output holds the CSV
    (``-o -``), so that a pipe gets the CSV alone."""
    err = is_stdout(output)
    click.echo(json_line(data) if as_json else text, err=err)


@main.group()
def export() -> None:
    """Compliance exports as CSV (streamed at any size; written atomically)."""


def _export_command(what: str, writer: str) -> Callable[[Callable[[], None]], click.Command]:
    """Register ``notify export WHAT NAME -o FILE.csv [--json]``, which writes the CSV with
    ``notify.export.<writer>`` (imported only when the command runs) and records the export
    in the audit trail. The decorated function only lends the command its help: its docstring.
    """

    def register(describe: Callable[[], None]) -> click.Command:
        @export.command(what, help=describe.__doc__)
        @click.argument("name")
        @_OUTPUT
        @_JSON
        @_BOM
        @pass_app
        def command(app: App, name: str, output: Path, as_json: bool, bom: bool) -> None:
            from notify import export as exports

            write: Callable[..., int] = getattr(exports, writer)
            total = exports.progress_total(app.engine, name, what)
            unit = "contacts looked at" if what == "unreached" else "rows"
            with RowProgress(f"export {what} {name}", total, unit) as progress:
                rows = write(app.engine, name, output, progress=progress.update, bom=bom)
            # Exports carry personal data out of the system: the trail records who took what.
            with app.session() as session:
                audit_log.record(
                    session,
                    f"export {what}",
                    campaign=name,
                    arguments={"campaign": name, "output": str(output), "bom": bom},
                    counts={"rows": rows},
                    actor=app.actor,
                )
            summary(
                output,
                as_json,
                {"campaign": name, "export": what, "rows": rows, "output": str(output)},
                f"Wrote {rows:,} {what} row(s) of {name} to {where(output)}.",
            )

        return command

    return register


@_export_command("deliveries", "export_deliveries")
def deliveries() -> None:
    """One row per message of campaign NAME: who, which channel and address, status,
    attempts, provider id, errors, timestamps (ISO-8601 UTC), content hash, reset state.

    Columns: campaign, contact_key, name, channel, address, exposures, template, status,
    attempts, provider_message_id, error_code, error_message, first_attempt_at, sent_at,
    delivered_at, last_event_at, content_sha256, reset_status, reset_completed_at; then,
    appended (read them by name): template_version, state, country.

    \b
    Example:
      notify export deliveries acme-2026-11 -o deliveries.csv
      notify export deliveries acme-2026-11 -o deliveries.csv --bom   # for Excel
    """


@_export_command("events", "export_events")
def events() -> None:
    """The raw event log of campaign NAME (every status change, callback, bounce, reset).

    Columns: id, at, campaign, contact_key, message_id, channel, source, kind, applied,
    detail (JSON).

    \b
    Example:
      notify export events acme-2026-11 -o events.csv
    """


@_export_command("unreached", "export_unreached")
def unreached() -> None:
    """Contacts of campaign NAME that no channel reached (no message sent or delivered),
    for postal or substitute notice, with why: the last status of each channel.

    Columns: key, name, email, phone, exposures, country, state, why.

    \b
    Example:
      notify export unreached acme-2026-11 -o unreached.csv
    """


@_export_command("codes", "export_codes")
def codes() -> None:
    """Who got which credit-monitoring enrollment code in campaign NAME (one row per code
    given; see notify codes import), for the monitoring provider and for audits.

    Columns: campaign, contact_key, name, email, phone, code, assigned_at.

    \b
    Example:
      notify export codes acme-2026-11 -o codes.csv
    """
