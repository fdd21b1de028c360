"""List output every list command shares: ``--format table|csv|json`` and ``--local``.

A list command declares its columns once and hands its rows (dicts) to :func:`emit`:

    @main.command("list")
    @list_options
    @pass_app
    def things(app: App, fmt: str, zone: tzinfo) -> None:
        rows = [{"name": ..., "created_at": datetime(...)} for ...]
        emit(rows, COLUMNS, fmt, zone, empty="No things yet.")

- ``table`` (the default): a header line and aligned columns, for people; times in the
  screen zone (``--local`` / NOTIFY_TIMEZONE, see :mod:`notify.localtime`).
- ``csv``: a header line, then one line per row; times in UTC ISO-8601, cells a spreadsheet
  would run as formulas neutralized (as in the exports), lists joined with ``;``.
- ``json``: one JSON value on one line (an array of objects unless the command gives its own
  shape); snake_case keys, times in UTC ISO-8601.

``--json`` and ``--csv`` are short for ``--format json`` and ``--format csv``.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

import click

from notify import localtime
from notify.csvsafe import neutralize

FORMATS = ("table", "csv", "json")


@dataclass(frozen=True)
class Column:
    """One column of a list: the row key, its header (default: the key), and how to show it."""

    key: str
    header: str | None = None
    time: bool = False  # a datetime: screen zone in a table, UTC ISO-8601 in CSV and JSON

    @property
    def title(self) -> str:
        """The header cell (table and CSV)."""
        return self.header or self.key


def local_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--local`` to a command that shows times; the command receives ``zone``.

    The zone is NOTIFY_TIMEZONE when set, else the machine's zone with --local, else UTC
    (:func:`notify.localtime.screen_zone`). A bad NOTIFY_TIMEZONE is a one-line error.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, local: bool, **kwargs: Any) -> Any:
        return func(*args, zone=localtime.screen_zone(local), **kwargs)

    return click.option(
        "--local",
        is_flag=True,
        help="Show times in the local time zone (NOTIFY_TIMEZONE, else the machine's) "
        "instead of UTC.",
    )(wrapper)


def list_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--format table|csv|json``, ``--csv``, ``--json`` and ``--local`` to a list
    command; the command receives ``fmt`` (one of FORMATS) and ``zone``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any, output_format: str | None, as_json: bool, as_csv: bool, **kwargs: Any
    ) -> Any:
        chosen = {f for f, on in (("json", as_json), ("csv", as_csv)) if on}
        if output_format:
            chosen.add(output_format)
        if len(chosen) > 1:
            raise click.UsageError(f"choose one output format, not {' and '.join(sorted(chosen))}")
        return func(*args, fmt=chosen.pop() if chosen else "table", **kwargs)

    options = [
        click.option(
            "--format",
            "output_format",
            type=click.Choice(FORMATS),
            help="Output: an aligned table with a header (default), CSV with a header, or JSON.",
        ),
        click.option("--csv", "as_csv", is_flag=True, help="Same as --format csv."),
        click.option("--json", "as_json", is_flag=True, help="Same as --format json."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return local_option(wrapper)


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    fmt: str,
    zone: tzinfo | None = None,
    *,
    empty: str = "",
    json_value: Any = None,
) -> None:
    """Print ``rows`` as ``fmt`` (see the module docstring).

    ``empty`` is printed instead of a table when there is no row (CSV still prints its
    header, JSON an empty array). ``json_value``, when given, is printed for ``json`` in
    place of the rows (a command whose JSON has been an object keeps its shape); its times
    are converted like the rows'.
    """
    if fmt == "json":
        value = json_value if json_value is not None else [dict(row) for row in rows]
        click.echo(json.dumps(_jsonable(value), ensure_ascii=False, default=str))
    elif fmt == "csv":
        write_csv(rows, columns)
    elif not rows:
        if empty:
            click.echo(empty)
    else:
        for line in table_lines(rows, columns, zone):
            click.echo(line)


def table_lines(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], zone: tzinfo | None = None
) -> list[str]:
    """A header and aligned rows (numbers right-aligned), two spaces between columns."""
    cells = [[_screen(row.get(c.key), c, zone) for c in columns] for row in rows]
    numeric = [
        all(
            isinstance(row.get(c.key), int | float) and not isinstance(row.get(c.key), bool)
            for row in rows
        )
        for c in columns
    ]
    table = [[c.title for c in columns], *cells]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    out = []
    for line in table:
        parts = [
            cell.rjust(w) if right else cell.ljust(w)
            for cell, w, right in zip(line, widths, numeric, strict=True)
        ]
        out.append("  ".join(parts).rstrip())
    return out


def write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    """The rows as CSV with a header on standard output (RFC 4180 line ends, as the exports)."""
    stream = click.get_text_stream("stdout")
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow([c.title for c in columns])
    for row in rows:
        writer.writerow([neutralize(_file_cell(row.get(c.key), c)) for c in columns])
    stream.flush()


def _screen(value: Any, column: Column, zone: tzinfo | None) -> str:
    if column.time or isinstance(value, datetime):
        return localtime.show(value, zone)
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def _file_cell(value: Any, column: Column) -> Any:
    if column.time or isinstance(value, datetime):
        return localtime.iso_utc(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return value


def _jsonable(value: Any) -> Any:
    """Times as UTC ISO-8601 text, recursively; the rest as it is."""
    if isinstance(value, datetime):
        return localtime.iso_utc(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
