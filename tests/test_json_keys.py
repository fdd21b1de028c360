"""Every command's JSON uses snake_case identifiers as keys, at every depth (docs/cli.md).

The test walks the command tree: each command with --json (or --format json) must be run
here on a database where every part of the job has happened (the demo's, plus a bounce, a
reminder and a reset completion), and every key of what it prints must match KEY.
A command added later with --json is run with a guess of its arguments (the campaign name
for NAME and --campaign); if the guess fails, add the command to RUNS.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from notify.cli import main
from tests.factories import campaign_toml

KEY = re.compile(r"^[a-z][a-z0-9_]*$")
NAME = "acme-2026-11"

DSN = """\
From: Mail Delivery Subsystem <mailer-daemon@relay.example>
To: security@acme.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Delivery failed.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example

Final-Recipient: rfc822; {address}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--B--
"""


def bad_keys(value, path="$") -> list[str]:
    """Every key (with where it is) that is not a snake_case identifier."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not (isinstance(key, str) and KEY.match(key)):
                found.append(f"{path}: {key!r}")
            found += bad_keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += bad_keys(item, f"{path}[{i}]")
    return found


def json_commands() -> dict[tuple[str, ...], click.Command]:
    """Every command that can print JSON: --json, or --format with a json choice."""
    found = {}

    def walk(group: click.Group, path: tuple[str, ...]) -> None:
        ctx = click.Context(group, info_name=" ".join(path) or "notify")
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                walk(command, (*path, name))
                continue
            for param in command.params:
                choices = getattr(param.type, "choices", ()) or ()
                if "--json" in getattr(param, "opts", ()) or (
                    "--format" in getattr(param, "opts", ()) and "json" in choices
                ):
                    found[(*path, name)] = command
                    break

    walk(main, ())
    return found


def runs(folder: Path, demo_db: str) -> dict[tuple[str, ...], list[list[str]]]:
    """The invocations (without --json) that exercise each command on the demo's data."""
    completions = folder / "completions.csv"
    completions.write_text(
        "key,completed_at\nC-1003,2026-11-28T09:00:00Z\nnobody,2026-11-28T09:00:00Z\n"
    )
    more = folder / "more.csv"
    more.write_text((folder / "example.csv").read_text())
    out = str(folder / "out.csv")
    codes = folder / "codes.csv"
    # Enough monitoring codes for every contact with identity data (a send needs them).
    codes.write_text("code\n" + "".join(f"MON-{i:04d}\n" for i in range(100)))
    return {
        ("audit",): [["audit"], ["audit", "--campaign", NAME]],
        ("bounces", "import"): [["bounces", "import", str(folder / "bounce.eml")]],
        ("campaign", "list"): [["campaign", "list"]],
        ("codes", "import"): [["codes", "import", str(codes), "--campaign", NAME]],
        ("export", "codes"): [["export", "codes", NAME, "-o", out]],
        ("contacts", "import"): [
            ["contacts", "import", str(more), "--campaign", NAME, "--dry-run"]
        ],
        ("contacts", "remove"): [
            ["contacts", "remove", "--campaign", NAME, "C-1001", "nobody", "--dry-run"]
        ],
        ("export", "deliveries"): [["export", "deliveries", NAME, "-o", out]],
        ("export", "events"): [["export", "events", NAME, "-o", out]],
        ("export", "unreached"): [["export", "unreached", NAME, "-o", out]],
        ("lookup",): [["lookup", "C-1001"], ["lookup", "C-1003"]],
        ("remind",): [
            ["remind", NAME, "--after", "1s", "--dry-run"],
            ["remind", NAME, "--after", "1s", "--yes", "--channel", "email", "--email-rate", "0"],
        ],
        ("requeue",): [["requeue", NAME, "--dry-run"], ["requeue", NAME, "--yes"]],
        ("resets", "complete"): [["resets", "complete", str(completions), "--campaign", NAME]],
        ("resets", "export"): [["resets", "export", NAME, "-o", out]],
        ("send",): [["send", NAME, "--dry-run"], ["send", NAME, "--yes"]],
        ("status",): [["status", NAME]],
        ("sync", "sms"): [["sync", "sms", NAME]],
    }


def guess(path: tuple[str, ...], command: click.Command, folder: Path) -> list[str]:
    """Arguments for a command this file does not know yet: NAME, --campaign, and a fresh
    path for a required -o."""
    args = list(path)
    for param in command.params:
        if isinstance(param, click.Argument) and param.required:
            args.append(NAME)
        elif isinstance(param, click.Option) and param.required:
            if "--campaign" in param.opts:
                args += ["--campaign", NAME]
            elif "-o" in param.opts:
                args += ["-o", str(folder / ("-".join(path) + "-out"))]
    return args


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """The demo's database, plus a bounce file for one of its emails."""
    for name in [n for n in __import__("os").environ if n.startswith(("NOTIFY_", "TWILIO_"))]:
        if name != "NOTIFY_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    folder = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--dir", str(folder)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    url = f"sqlite:///{folder / 'notify.db'}"
    monkeypatch.setenv("NOTIFY_DATABASE_URL", url)
    monkeypatch.setenv("NOTIFY_OUTBOX", str(folder / "outbox"))
    monkeypatch.chdir(folder)
    from notify.resources import data_dir

    (folder / "example.csv").write_text((data_dir("contacts") / "example.csv").read_text())
    # A second campaign by email only, with the SMS fallback: a bounce queues one.
    email_only = campaign_toml(tmp_path, name='"email-only"', channels='["email"]')
    for args in (
        ["campaign", "load", str(email_only)],
        ["contacts", "import", str(folder / "example.csv"), "--campaign", "email-only"],
        ["send", "email-only", "--yes", "--email-rate", "0"],
    ):
        assert CliRunner().invoke(main, args).exit_code == 0, args
    (folder / "bounce.eml").write_text(DSN.format(address="ana.lima@example.com"))
    return folder, url


def last_json(output: str):
    lines = [line for line in output.splitlines() if line.strip()]
    return json.loads(lines[-1])


def test_every_json_output_has_snake_case_keys(demo):
    folder, url = demo
    known = runs(folder, url)
    commands = json_commands()
    assert set(known) <= set(commands), set(known) - set(commands)
    problems = []
    for path, command in sorted(commands.items()):
        invocations = known.get(path) or [guess(path, command, folder)]
        for args in invocations:
            for flag in (["--json"], ["--format", "json"]):
                if not any(
                    flag[0] in p.opts for p in command.params if isinstance(p, click.Option)
                ):
                    continue
                result = CliRunner().invoke(main, [*args, *flag])
                assert result.exit_code in (0, 1), (args, result.output)
                stdout = result.stdout if result.stdout.strip() else result.stderr
                try:
                    data = last_json(stdout)
                except (ValueError, IndexError):
                    pytest.fail(
                        f"notify {' '.join(args)} {flag[0]}: no JSON on the last line "
                        f"(add it to RUNS in this file): {result.output[-300:]}"
                    )
                problems += [f"notify {' '.join(args)}: {p}" for p in bad_keys(data)]
    assert problems == []


def test_the_check_itself_finds_spaces_dots_and_capitals():
    assert bad_keys({"run": {"email.would send": 3}, "ok": [{"Sid": 1}], "fine_1": {}}) == [
        "$.run: 'email.would send'",
        "$.ok[0]: 'Sid'",
    ]
