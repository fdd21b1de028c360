"""Standalone mode shared by ``python -m tests.smtp_sink`` and ``python -m tests.twilio_double``.

Tests and the bench scripts start these doubles as subprocesses and rely on one protocol: the
bound port is written to ``--port-file`` (atomically: a reader never sees a partial number),
then a ``listening ...`` line is printed, and SIGTERM / SIGINT stop the server cleanly.
:func:`serve_until_signalled` is the double's side, :func:`start_process` the starter's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


def serve_until_signalled(
    server: Any, port_file: str | None, ready_lines: Callable[[], Iterable[str]]
) -> None:
    """Run ``server`` (``start()``, ``port``, ``stop()``) until SIGTERM / SIGINT.

    Once started: its port goes to ``port_file`` (if given) through a temporary file and a
    rename, then each of ``ready_lines()`` is printed and flushed. It is stopped on the way
    out, whatever happens.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    try:
        if port_file:
            tmp = Path(port_file + ".tmp")
            tmp.write_text(str(server.port))
            os.replace(tmp, port_file)
        for line in ready_lines():
            print(line, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()


def start_process(
    module: str,
    *args: str,
    port_file: Path,
    timeout: float = 20.0,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = None,
) -> tuple[subprocess.Popen, int]:
    """Start the double ``python -m MODULE --port 0 --port-file PORT_FILE ARGS`` from the
    repository root and wait until it has written its port; returns (process, port).

    A port file left by an earlier run is removed first (it would be read as this one's).
    RuntimeError when the process exits (with its stderr, when piped) or ``timeout`` s pass
    before the port is written (the process is killed then).
    """
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", "--port-file", str(port_file), *args],
        cwd=ROOT,
        stdout=stdout,
        stderr=stderr,
    )
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if proc.poll() is not None:
            said = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"{module} exited ({proc.returncode}) before listening: {said}")
        if time.monotonic() > deadline:
            proc.kill()  # ours: not left running behind the failure
            proc.wait()
            raise RuntimeError(f"{module} did not start within {timeout:g} s")
        time.sleep(0.05)
    return proc, int(port_file.read_text())
