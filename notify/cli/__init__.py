"""The `notify` command line: parses arguments and prints; the library does the work.

Each area registers its commands on ``main`` from its own module, loaded when one of its
commands is used (``COMMANDS``).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from notify import __version__
from notify.cli.common import App, NotifyGroup
from notify.cli.terminal import installed

# Which module under notify/cli/ defines each command. A command's module is imported only
# when that command runs (or help lists them all), so `notify status` does not pay for
# importing the send engine, Jinja2 or the importer.
COMMANDS = {
    "audit": "audit",
    "bounces": "bounces",
    "campaign": "campaign",
    "codes": "codes",
    "contacts": "contacts",
    "demo": "demo",
    "export": "export",
    "init": "init",
    "lookup": "lookup",
    "plan": "plan",
    "preview": "preview",
    "remind": "remind",
    "report": "report",
    "requeue": "requeue",
    "resets": "resets",
    "rules": "rules",
    "send": "send",
    "serve": "serve",
    "status": "status",
    "sync": "sync",
    "templates": "templates",
    "users": "users",
}


class LazyGroup(NotifyGroup):
    """The top-level group: loads a command's module on first use (click's lazy pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"notify.cli.{COMMANDS[cmd_name]}")  # registers on main
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run notify with every character it prints to stdout and stderr made visible
        (notify/cli/terminal.py): data from outside never drives the operator's terminal."""
        with installed():
            return super().main(*args, **kwargs)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="notify")
@click.option(
    "--actor",
    envvar="NOTIFY_ACTOR",
    help="Name recorded in the audit trail (default: the OS user).",
)
@click.option(
    "--db",
    "database",
    metavar="URL|PATH",
    help="The database to use: a SQLAlchemy URL, or the path of a SQLite file "
    "(overrides NOTIFY_DATABASE_URL).",
)
@click.pass_context
def main(ctx: click.Context, actor: str | None, database: str | None) -> None:
    """Send, track and prove data-breach notices.

    \b
    Quick start:
      notify demo                                   # the whole job on built-in examples
      notify campaign load campaigns/example.toml
      notify contacts import customers.csv --campaign acme-2026-11 --rejects rejects.csv
      notify send acme-2026-11
      notify status acme-2026-11
      notify export deliveries acme-2026-11 -o deliveries.csv

    Configuration comes from NOTIFY_* environment variables (see README). Only init,
    campaign load and demo create a database; other commands refuse a missing SQLite file.
    """
    ctx.obj = App(actor=actor, database=database)
