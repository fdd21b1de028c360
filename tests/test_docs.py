"""Docs that cannot rot: every command has help with an example, and docs/cli.md is current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click
import pytest

from notify.cli import main

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("generate_cli", ROOT / "docs" / "generate_cli.py")
generate_cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generate_cli)

COMMANDS = list(generate_cli.walk(main, ["notify"]))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, command):
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    if not isinstance(command, click.Group):
        assert "Example" in command.help, f"{' '.join(path)} --help shows no example"


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_is_in_cli_md(path, command):
    text = (ROOT / "docs" / "cli.md").read_text()
    assert f"## {' '.join(path)}\n" in text, f"docs/cli.md lacks {' '.join(path)}"


def test_every_top_level_command_is_checked():
    """The walk sees the lazily loaded commands too (else the tests above check nothing)."""
    from notify import cli

    assert {path[1] for path, _ in COMMANDS if len(path) == 2} == set(cli.COMMANDS)


def test_cli_md_is_current():
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == generate_cli.render(), "docs/cli.md is stale: python docs/generate_cli.py"


def test_readme_names_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "python -m pip install -e '.[test,postgres]' && python -m pytest" in readme
    assert "notify demo" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pip install -e '.[test,postgres]' && python -m pytest" in ci
