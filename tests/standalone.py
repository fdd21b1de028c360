"""Standalone mode shared by ``python -m tests.smtp_sink`` and ``python -m tests.twilio_double``.

Tests and the bench scripts start these doubles as subprocesses and rely on one protocol: the
bound port is written to ``--port-file`` (atomically: a reader never sees a partial number),
then a ``listening ...`` line is printed, and SIGTERM / SIGINT stop the server cleanly.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


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
