"""Progress of a long row-by-row job (the exports) on standard error.

On a terminal: one line redrawn in place, with the rows done, the rate over the last minute
and, when the total is known, the share done and the time left at that rate. Off a terminal
(cron, CI, ``| tee``): one plain line every INTERVAL seconds, so a log shows the job is alive
and how far it got; nothing for a job that ends sooner. Lines are written as rows are
reported (the exports report every thousand rows), so the clock alone decides when: tests
inject it, and no timer thread runs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

import click

from notify.cli.terminal import escape, raw

INTERVAL = 30.0  # seconds between plain lines off a terminal (tests set it lower)
REDRAW = 0.1  # seconds between redraws on a terminal
WINDOW = 60.0  # the rate is measured over the last minute


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class RowProgress:
    """Report ``update(done)`` calls of a job as described in the module docstring.

    Use as a context manager; ``stream`` defaults to standard error, ``terminal`` to whether
    that stream is one, ``clock`` to ``time.monotonic`` (tests inject all three).
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "rows",
        *,
        stream: IO[str] | None = None,
        terminal: bool | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        # The raw stream: the redraw's cursor codes must reach the terminal as they are;
        # the line's text (the label holds a campaign name) is escaped here instead.
        self.stream = raw(stream or click.get_text_stream("stderr"))
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.interval = INTERVAL if interval is None else interval
        self.clock = clock
        self.done = 0
        self.started = clock()
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self._drawn = 0.0  # when the terminal line was last drawn
        self._logged = self.started  # when the last plain line was written

    def __enter__(self) -> RowProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.terminal and self._drawn:
            self.stream.write("\r\033[K")  # the summary line replaces the bar
            self.stream.flush()

    def update(self, done: int) -> None:
        """``done`` rows so far (a running total, not an increment)."""
        now = self.clock()
        self.done = done
        self._samples.append((now, done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - WINDOW:
            self._samples.popleft()
        if self.terminal:
            if now - self._drawn >= REDRAW:
                self._drawn = now
                self.stream.write("\r\033[K" + escape(self.line(now)))
                self.stream.flush()
        elif now - self._logged >= self.interval:
            self._logged = now
            self.stream.write(escape(self.line(now)) + "\n")
            self.stream.flush()

    def rate(self, now: float | None = None) -> float:
        """Rows per second over the last minute (since the start when shorter)."""
        now = self.clock() if now is None else now
        first_at, first_done = self._samples[0]
        span = now - first_at
        return (self.done - first_done) / span if span > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        """``export deliveries acme: 120,000 of 1,000,000 rows (12%), 4,000/s, 3:40 left``."""
        now = self.clock() if now is None else now
        rate = self.rate(now)
        done = self.done
        if self.total:
            share = min(100, int(100 * done / self.total))
            text = f"{self.label}: {done:,} of {self.total:,} {self.unit} ({share}%)"
        else:
            text = f"{self.label}: {done:,} {self.unit}"
        text += f", {rate:,.0f}/s"
        if self.total and rate > 0 and done < self.total:
            text += f", {_duration((self.total - done) / rate)} left"
        return text + f", {_duration(now - self.started)} elapsed"
