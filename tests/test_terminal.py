"""What notify prints never drives the terminal: controls, bidi and format characters that
reach the database by another way than the importer (SQL, an older version, a provider's
answer) are shown escaped (notify/cli/terminal.py)."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import unicodedata

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from notify.cli import main, terminal
from notify.cli.progress import RowProgress
from notify.cli.send_progress import PlainProgress
from notify.outage import OutageState
from tests.test_status import seed_sample

# Clear the screen, set the window title, ring the bell, a C1 CSI (U+009B), a right-to-left
# override, an isolate, a zero-width space and a Unicode line separator.
NAME = "Ann\x1b[2J\x1b]0;pwned\x07 \x9b31m\u202egpj.exe\u2066x\u2069\u200b\u2028end"
EMAIL = "ann\x1b[31m@example.com"
EXTRA = {"note": "\x1b]0;title\x07\u202e", "ok": "caf\u00e9 \u200d"}
ERROR = "opted out\x1b[H\x1b[2J\x85\u202e"
ACTOR = "ops\x1b]0;x\x07\u202e"
CAMPAIGN = "acme\x1b]2;t\x07\u202e-11"  # as a campaign file could name it
RAW = ["\x1b", "\x07", "\x9b", "\x85", "\u202e", "\u2066", "\u2069", "\u200b", "\u2028"]
ESCAPED = ["\\x1b[2J", "\\x1b]0;pwned\\x07", "\\u009b31m", "\\u202egpj.exe"]
CAMPAIGN_SHOWN = "acme\\x1b]2;t\\x07\\u202e-11"
COMMANDS = [
    (
        ["lookup", "c1"],
        [
            *ESCAPED,
            CAMPAIGN_SHOWN,
            "ann\\x1b[31m@example.com",
            "opted out\\x1b[H\\x1b[2J\\u0085\\u202e",
        ],
    ),
    (["lookup", "c1", "--json"], ["\\u202egpj.exe", "\\u0085\\u202e"]),
    (["contacts", "list", "--campaign", CAMPAIGN], ESCAPED),
    (["contacts", "list", "--campaign", CAMPAIGN, "--format", "csv"], ESCAPED),
    (["contacts", "list", "--campaign", CAMPAIGN, "--json"], ["\\u202egpj.exe"]),
    (["status", CAMPAIGN], [CAMPAIGN_SHOWN]),
    (["audit"], ["ops\\x1b]0;x\\x07\\u202e"]),
    (["preview", "--campaign", CAMPAIGN, "--contact", "c5"], ESCAPED),
]


@pytest.fixture
def hostile(env, engine, campaign_file):
    """The sample campaign, then control and bidi characters written straight in by SQL."""
    seed_sample(engine, campaign_file)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE contacts SET name = :name, extra = :extra WHERE key IN ('c1', 'c5')"),
            {"name": NAME, "extra": json.dumps(EXTRA)},
        )
        conn.execute(text("UPDATE contacts SET email = :email WHERE key = 'c1'"), {"email": EMAIL})
        conn.execute(
            text("UPDATE messages SET error_message = :error WHERE error_code = '21610'"),
            {"error": ERROR},
        )
    # An audited command run under a hostile --actor puts it in the audit trail.
    loaded = CliRunner().invoke(main, ["--actor", ACTOR, "campaign", "load", str(campaign_file)])
    assert loaded.exit_code == 0, loaded.output
    with engine.begin() as conn:
        conn.execute(text("UPDATE campaigns SET name = :name"), {"name": CAMPAIGN})
    return env


def strings(value) -> list[str]:
    """Every string in a JSON value."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def assert_clean(output: str, expected: list[str]) -> None:
    found = [f"U+{ord(c):04X}" for c in RAW if c in output]
    assert not found, (found, output)
    for piece in expected:
        assert piece in output, (piece, output)


@pytest.mark.parametrize("args, expected", COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_cli_output_shows_controls_escaped(hostile, args, expected):
    # color=True: click keeps ANSI sequences as on a terminal (off one it strips CSI ones
    # itself, but not a title-setting OSC, nor C1 or bidi characters).
    result = CliRunner().invoke(main, args, catch_exceptions=False, color=True)
    assert result.exit_code == 0, result.output
    assert_clean(result.stdout + result.stderr, expected)
    if "--json" in args:  # still JSON, with the same values
        value = json.loads(result.stdout.splitlines()[-1])
        assert NAME in strings(value)


def on_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``notify args`` in a real process whose stdout and stderr are a terminal (a pty);
    its exit status and everything it wrote."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "notify", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=os.environ.copy(),
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process ended and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return process.wait(timeout=120), b"".join(chunks).decode()


def test_a_real_process_prints_escaped_on_a_terminal_and_a_pipe(hostile):
    for args, expected in COMMANDS:
        status, output = on_terminal(args)
        assert status == 0, output
        assert_clean(output, expected)
        piped = subprocess.run(
            [sys.executable, "-m", "notify", *args],
            capture_output=True,
            env=os.environ.copy(),
            timeout=120,
        )
        assert piped.returncode == 0, piped.stderr
        # Off a terminal click drops CSI sequences itself; the rest is escaped the same way.
        assert_clean(
            piped.stdout.decode() + piped.stderr.decode(),
            [e for e in expected if "\\x1b[" not in e],
        )
    # An error naming a hostile value (stderr) and the values typed on the command line.
    status, output = on_terminal(["lookup", "x\x1b[2J\u202e", "--campaign", "no\x1b]0;t\x07"])
    assert status != 0
    assert_clean(output, ["no\\x1b]0;t\\x07"])


def test_stdout_csv_with_dash_stays_byte_exact(hostile, tmp_path):
    """An export to `-o -` is the file's bytes, raw characters included: files are data."""
    target = tmp_path / "d.csv"
    CliRunner().invoke(
        main, ["export", "deliveries", CAMPAIGN, "-o", str(target)], catch_exceptions=False
    )
    piped = CliRunner().invoke(
        main, ["export", "deliveries", CAMPAIGN, "-o", "-"], catch_exceptions=False
    )
    assert piped.stdout_bytes == target.read_bytes()
    assert "\u202e".encode() in target.read_bytes()


def test_escape_is_visible_idempotent_and_keeps_layout_and_scripts():
    assert terminal.escape("a\x1bb\x07\x00\x7f\x9b\u202e\u061c\u200e\U000e0041") == (
        "a\\x1bb\\x07\\x00\\u007f\\u009b\\u202e\\u061c\\u200e\\udb40\\udc41"
    )
    assert terminal.escape("50%\rdone\r\n") == "50%\\x0ddone\r\n"  # CRLF ends a CSV line
    kept = "line\n\tcaf\u00e9 \u0645\u06cc\u200c\u0634\u0648\u0645 \U0001f469\u200d\U0001f4bb"
    assert terminal.escape(kept) == kept
    once = terminal.escape(NAME)
    assert terminal.escape(once) == once
    assert all(c.isprintable() for c in once)
    # Inside a JSON string the escapes decode to the very characters they replace.
    assert json.loads(terminal.escape(json.dumps(NAME, ensure_ascii=False))) == NAME


def test_pattern_covers_every_control_and_format_character():
    keep = {"\n", "\t", "\u200c", "\u200d"}
    missing = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp", "Cs")
        and chr(code) not in keep
        and not terminal.UNSAFE.fullmatch(chr(code))
    ]
    assert not missing


def test_progress_keeps_its_cursor_codes_and_escapes_its_text():
    screen = io.StringIO()
    safe = terminal.SafeStream(screen)  # what sys.stderr is under notify
    times = iter([0.0, 1.0, 2.0])
    with RowProgress(
        "export deliveries a\x1b[2Jb", 10, stream=safe, terminal=True, clock=lambda: next(times)
    ) as progress:
        progress.update(5)
    drawn = screen.getvalue()
    assert drawn.startswith("\r\x1b[K")  # the redraw works
    assert "a\\x1b[2Jb" in drawn and "a\x1b[2J" not in drawn

    lines = io.StringIO()
    plain = PlainProgress(terminal.SafeStream(lines), clock=lambda: 0.0)
    plain.begin({"sms": 1}, {})
    plain.outage_started(
        OutageState(channel="sms", provider="twilio", error="down\x1b]0;x\x07", started=0.0)
    )
    assert "down\\x1b]0;x\\x07" in lines.getvalue() and "\x1b" not in lines.getvalue()


def test_click_text_streams_stay_escaped_under_the_c_locale(monkeypatch):
    """Python opens stdout with surrogateescape under the C locale; click must still hand
    out the escaping stream rather than rewrap the bytes under it."""
    raw = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr(sys, "stdout", raw)
    with terminal.installed():
        stream = click.get_text_stream("stdout")
        assert isinstance(stream, terminal.SafeStream)
        stream.write("a\x1b[2J\udcff")
        stream.flush()
    assert sys.stdout is raw
    assert raw.buffer.getvalue() == b"a\\x1b[2J\\udcff"
