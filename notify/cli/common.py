"""What every command shares: settings, the database, one-line errors, JSON output."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

import click
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from notify import db, times
from notify.config import Settings, load_settings
from notify.errors import NotifyError


@dataclass
class App:
    """Lazily built per-invocation state: commands that need no database never open one."""

    actor: str | None = None
    database: str | None = None  # --db: a URL or a SQLite file path; wins over the environment
    _settings: Settings | None = field(default=None, repr=False)
    # Set by the commands that set a database up (init, campaign load, demo): only they may
    # create a SQLite file; every other command refuses a missing one.
    creates: bool = False
    outbox: bool = False  # --outbox: every channel to the outbox folder

    @cached_property
    def settings(self) -> Settings:
        settings = self._settings or load_settings()
        if self.database:
            settings = replace(settings, database_url=db.database_url(self.database))
        if self.outbox:
            settings = settings.outbox_only()
        return settings

    def destination(self, channel: str) -> str:
        """Where ``channel``'s messages go, for prompts: the recorded transport, and the
        folder for the outbox."""
        transport = self.settings.transport(channel)
        if transport == "outbox":
            return f"outbox folder {self.settings.outbox.resolve()}"
        return transport

    @cached_property
    def engine(self) -> Engine:
        if not self.creates:
            db.require_existing(self.settings.database_url)
        return db.connect(self.settings.database_url)

    @property
    def database_name(self) -> str:
        """The database this command reads, as printed (absolute path, or URL masked)."""
        return db.describe(self.settings.database_url)

    def session(self):
        """A transaction scope (commit on success, rollback on error)."""
        return db.session_scope(self.engine)


pass_app = click.make_pass_decorator(App, ensure=True)


def json_line(data: Any) -> str:
    """``data`` as JSON on one line (keys snake_case: see docs/cli.md)."""
    return json.dumps(data, ensure_ascii=False, default=str, sort_keys=False)


def echo_json(data: Any) -> None:
    """One JSON object on one line (the last line of stdout for --json)."""
    click.echo(json_line(data))


def db_failure(exc: DBAPIError) -> str:
    """One line for a database failure in the middle of a command."""
    reason = " ".join(str(exc.orig or exc).split())[:300]
    return (
        f"the database failed: {reason}. Every committed change is kept; "
        "run the command again once the database is back (a send resumes)."
    )


class NotifyGroup(click.Group):
    """Turns foreseeable errors into one line on stderr and a non-zero exit, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NotifyError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted; nothing half-done was kept.", err=True)
            sys.exit(130)
        except DBAPIError as exc:  # e.g. the database restarted or the disk filled up
            if not db.unavailable(exc):
                raise
            click.echo(f"Error: {db_failure(exc)}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            sys.exit(1)


_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


_DURATION_UNITS = ("weeks", "days", "hours", "minutes", "seconds")


def parse_duration(text: str) -> timedelta:
    """``72h``, ``3d``, ``90m``, ``1h30m``, ``2w`` -> timedelta; NotifyError otherwise.

    A bare number is refused rather than guessed (hours? days?): a wrong guess would nag
    people too early or far too late.
    """
    compact = (text or "").strip().lower().replace(" ", "")
    match = _DURATION.match(compact)
    if not compact or not match or not any(match.groups()):
        raise NotifyError(f"--after: {text!r} is not a duration (examples: 72h, 3d, 90m, 1h30m)")
    parts = {
        unit: int(value)
        for unit, value in zip(_DURATION_UNITS, match.groups(), strict=True)
        if value
    }
    return timedelta(**parts)


def require_terminal(about: str) -> None:
    """Refuse to wait for an answer nobody can give: a command that asks before it acts
    needs --yes when stdin is not a terminal (cron, a pipe). ``about`` says what it was
    about to do ("about to send 3 messages for acme-2026-11")."""
    if not sys.stdin.isatty():
        raise NotifyError(f"{about}; add --yes to confirm when not running on a terminal")


F = TypeVar("F", bound=Callable[..., Any])


def table_options(func: F) -> F:
    """``--sheet`` and ``--header-row``: which sheet of a workbook, and which line is the
    header, for every command that reads a list file (``tabular.read_table``)."""
    func = click.option(
        "--header-row",
        type=click.IntRange(min=1),
        metavar="N",
        help="The header is on this line (sheet row). Default: the first of the first "
        "20 rows in which at least two cells name fields.",
    )(func)
    return click.option(
        "--sheet",
        metavar="NAME|N",
        help="The workbook sheet to read, by name or "
        "number (1 = first). Default: the first sheet with a recognizable header.",
    )(func)


def as_of_option(judged: str) -> Callable[[F], F]:
    """The --as-of YYYY-MM-DD flag of the commands that judge dates against the law
    (`rules check`, `report regulators`); ``judged`` names what is judged on that day."""
    return click.option(
        "--as-of",
        "as_of",
        type=click.DateTime(formats=["%Y-%m-%d"]),
        default=None,
        metavar="YYYY-MM-DD",
        help=f"Judge {judged} on this day (default: today, UTC).",
    )


def as_of_day(as_of: datetime | None) -> date:
    """The day --as-of names, else today in UTC (deadlines are calendar dates)."""
    return as_of.date() if as_of else times.utcnow().date()
