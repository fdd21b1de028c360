"""The command line loads a command's module only when that command runs."""

from __future__ import annotations

import importlib
import subprocess
import sys

from notify import cli, db


def test_every_command_is_mapped_to_the_module_that_defines_it():
    for module in set(cli.COMMANDS.values()):
        importlib.import_module(f"notify.cli.{module}")
    defined = {
        name: command.callback.__module__.rsplit(".", 1)[-1]
        for name, command in cli.main.commands.items()
    }
    assert defined == cli.COMMANDS


def test_status_does_not_load_the_send_engine_or_templates(env):
    db.connect(env["NOTIFY_DATABASE_URL"])  # status reads an existing database only
    code = (
        "import sys\n"
        "from notify.cli import main\n"
        "try:\n"
        "    main(['status', 'nope'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 1, exc.code\n"
        "heavy = [m for m in ('notify.send.runner', 'notify.importer', 'notify.templates', "
        "'jinja2', 'aiosmtplib', 'twilio') if m in sys.modules]\n"
        "print('loaded:', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "unknown campaign 'nope'" in result.stderr
    assert result.stdout.strip() == "loaded: []"
