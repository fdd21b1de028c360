"""Exports a pipe can take (`-o -`) and their progress on standard error."""

from __future__ import annotations

import io
import re

import click
import pytest
from click.testing import CliRunner

from notify import db
from notify.cli import main
from notify.cli import progress as progress_mod
from notify.cli.progress import RowProgress
from notify.send.plan import plan
from tests.factories import EXAMPLE, add_contacts, make_campaign

NAME = "acme-2026-11"


def _commands(group: click.Group, path: list[str]):
    ctx = click.Context(group, info_name=" ".join(path))
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, [*path, name])
        else:
            yield [*path, name], command


def output_commands() -> list[list[str]]:
    """Every command with a ``-o`` option that names a file (not a folder)."""
    found = []
    for path, command in _commands(main, []):
        for param in command.params:
            if isinstance(param, click.Option) and "-o" in param.opts:
                is_dir = isinstance(param.type, click.Path) and not param.type.file_okay
                if not is_dir and "DIR" not in (param.metavar or ""):
                    found.append(path)
    return found


@pytest.fixture
def planned(env):
    """The example campaign with 1,500 contacts and their 3,000 first notices planned."""
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, EXAMPLE)
    add_contacts(engine, campaign, 1500, exposures="passwords")
    with db.session_scope(engine) as session:
        plan(session, session.merge(campaign), ("email", "sms"))
    return env


def test_every_output_option_accepts_dash_for_stdout(planned, tmp_path):
    commands = output_commands()
    assert {
        ("export", "deliveries"),
        ("export", "events"),
        ("export", "unreached"),
        ("resets", "export"),
    } <= {tuple(c) for c in commands}
    for command in commands:
        target = tmp_path / f"{'-'.join(command)}.csv"
        to_file = CliRunner().invoke(
            main, [*command, NAME, "-o", str(target)], catch_exceptions=False
        )
        assert to_file.exit_code == 0, (command, to_file.output)
        piped = CliRunner().invoke(main, [*command, NAME, "-o", "-"], catch_exceptions=False)
        assert piped.exit_code == 0, (command, piped.output)
        # Standard output holds exactly the file's bytes; the summary went to stderr.
        assert piped.stdout_bytes == target.read_bytes(), command
        assert "to standard output" in piped.stderr, command
        assert not (tmp_path / "-").exists()
    summary = CliRunner().invoke(main, ["export", "deliveries", NAME, "-o", "-", "--json"])
    assert summary.stdout_bytes.count(b"\r\n") == 3001  # header + one row per message, nothing else
    assert '"output": "-"' in summary.stderr


def test_export_prints_a_plain_progress_line_off_a_terminal(planned, monkeypatch, tmp_path):
    monkeypatch.setattr(progress_mod, "INTERVAL", 0)  # a line at every report (every 100 rows)
    monkeypatch.setattr("notify.export.PROGRESS_EVERY", 100)
    result = CliRunner().invoke(
        main, ["export", "deliveries", NAME, "-o", str(tmp_path / "d.csv")], catch_exceptions=False
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 30, lines
    assert all(
        re.fullmatch(
            rf"export deliveries {NAME}: [\d,]+ of 3,000 rows \(\d+%\), [\d,]+/s(, \d+:\d\d left)?"
            r", \d+:\d\d elapsed",
            line,
        )
        for line in lines
    ), lines
    assert lines[0].startswith(f"export deliveries {NAME}: 100 of 3,000 rows (3%), ")
    assert lines[-1].startswith(f"export deliveries {NAME}: 3,000 of 3,000 rows (100%), ")
    assert "\r" not in result.stderr and "\033" not in result.stderr  # a log, not a terminal
    assert result.stdout.strip() == f"Wrote 3,000 deliveries row(s) of {NAME} to {tmp_path}/d.csv."
    monkeypatch.setattr(progress_mod, "INTERVAL", 30.0)  # the default: a short export is quiet
    quiet = CliRunner().invoke(main, ["export", "deliveries", NAME, "-o", str(tmp_path / "e.csv")])
    assert quiet.stderr == ""


def test_resets_export_progress_off_a_terminal(planned, monkeypatch):
    monkeypatch.setattr(progress_mod, "INTERVAL", 0)
    monkeypatch.setattr("notify.export.PROGRESS_EVERY", 100)
    result = CliRunner().invoke(main, ["resets", "export", NAME, "-o", "-"], catch_exceptions=False)
    progress_lines = [line for line in result.stderr.splitlines() if "reset(s)" not in line]
    assert len(progress_lines) == 15 and all(
        re.fullmatch(rf"resets export {NAME}: [\d,]+ rows, [\d,]+/s, \d+:\d\d elapsed", line)
        for line in progress_lines
    ), progress_lines
    assert result.stdout_bytes.count(b"\r\n") == 1501


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_line_shows_rows_rate_over_the_last_minute_and_eta():
    now = [1000.0]
    stream = FakeTerminal()
    with RowProgress(
        "export deliveries x", total=10_000, stream=stream, clock=lambda: now[0]
    ) as bar:
        assert bar.terminal
        for second in range(1, 121):  # 100 rows/s for the first minute, then 10 rows/s
            now[0] = 1000.0 + second
            bar.update(100 * min(second, 60) + 10 * max(0, second - 60))
        assert bar.line() == (
            "export deliveries x: 6,600 of 10,000 rows (66%), 10/s, 5:40 left, 2:00 elapsed"
        )
    drawn = stream.getvalue()
    assert drawn.startswith(
        "\r\033[Kexport deliveries x: 100 of 10,000 rows (1%), 100/s, 1:39 left, 0:01 elapsed"
    )
    assert drawn.endswith("\r\033[K")  # cleared for the summary line


def test_plain_lines_every_interval_and_none_for_a_short_job():
    now = [100.0]
    stream = io.StringIO()
    with RowProgress(
        "job", stream=stream, terminal=False, interval=30, clock=lambda: now[0]
    ) as bar:
        for at, done in ((10, 500), (29, 1000)):
            now[0] = 100.0 + at
            bar.update(done)
    assert stream.getvalue() == ""  # ended before the first interval: no noise
    now[0] = 100.0
    with RowProgress(
        "job", stream=stream, terminal=False, interval=30, clock=lambda: now[0]
    ) as bar:
        for at, done in ((10, 1000), (31, 3100), (45, 4500), (62, 6200), (70, 7000)):
            now[0] = 100.0 + at
            bar.update(done)
    assert stream.getvalue().splitlines() == [
        "job: 3,100 rows, 100/s, 0:31 elapsed",  # the first line after 30 s
        "job: 6,200 rows, 100/s, 1:02 elapsed",  # then 30 s after the last line
    ]
