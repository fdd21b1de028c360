"""The `notify` command line: parses arguments and prints; the library does the work.

Each area registers its commands from its own module below.
"""

from __future__ import annotations

import click

from notify import __version__
from notify.cli.common import App, NotifyGroup


@click.group(cls=NotifyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="notify")
@click.option("--actor", envvar="NOTIFY_ACTOR", help="Name recorded in the audit trail "
              "(default: the OS user).")
@click.pass_context
def main(ctx: click.Context, actor: str | None) -> None:
    """Send, track and prove data-breach notices.

    \b
    Quick start:
      notify demo                                   # the whole job on built-in examples
      notify campaign load campaigns/example.toml
      notify contacts import customers.csv --campaign acme-2026-11 --rejects rejects.csv
      notify send acme-2026-11
      notify status acme-2026-11
      notify export deliveries acme-2026-11 -o deliveries.csv

    Configuration comes from NOTIFY_* environment variables (see README).
    """
    ctx.obj = App(actor=actor)


# Import for their side effect: each module adds its commands to `main`.
from notify.cli import (  # noqa: E402,F401
    audit,
    campaign,
    contacts,
    demo,
    export,
    resets,
    send,
    serve,
    templates,
    tracking,
)
