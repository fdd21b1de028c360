"""`notify demo`: the whole main job on built-in examples."""

from __future__ import annotations

import click

from notify.cli import main
from notify.cli.common import App, pass_app


@main.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False),
    help="Folder to run in (empty or new). Default: a fresh temporary folder.",
)
@pass_app
def demo(app: App, folder: str | None) -> None:
    """Run the whole job on the example campaign and customer list.

    Loads campaigns/example.toml, imports contacts/example.csv (some rows are rejected, to
    show why), sends every notice through the outbox, completes one password reset, prints
    the status and writes the deliveries CSV. It always uses its own SQLite database and
    outbox in the demo folder, never a configured SMTP relay or Twilio account.

    \b
    Example:
      notify demo
      notify demo --dir /tmp/breach-demo
    """
    from notify import demo as demo_lib  # the whole library: only for the demo

    target = demo_lib.demo_folder(folder)
    from notify.cli.send_progress import reporter

    demo_lib.run_demo(target, click.echo, actor=app.actor, observer=reporter(True))
