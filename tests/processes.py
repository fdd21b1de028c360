"""Real `notify` processes for the tests that stop, kill or race them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.smtp_sink import SmtpSink


def notify_process(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.Popen:
    """``notify ARGS`` as a child process with ``env``; stdout and stderr captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "notify", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def smtp_env(env: dict[str, str], sink: SmtpSink) -> dict[str, str]:
    """``env`` with email going to ``sink`` (plain SMTP on loopback)."""
    return {**env, **sink.env()}


def wait_for_sink(
    sink: SmtpSink, count: int, processes: list[subprocess.Popen], timeout: float = 60
) -> None:
    """Until ``sink`` has ``count`` messages; fails if time runs out or a process exits."""
    deadline = time.monotonic() + timeout
    while sink.count < count:
        assert time.monotonic() < deadline, f"only {sink.count} emails arrived"
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"notify exited early ({process.returncode}): {process.communicate()}")
        time.sleep(0.01)
