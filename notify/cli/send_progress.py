"""What `notify send` and `notify remind` show while they run, fed by the engine's observer.

On a terminal: one rich progress bar per channel (count, rate over the last minute, ETA at
that rate, or at the configured rate when the channel is rate-limited, failures) and a line
when a provider outage starts or ends. Off a terminal (cron, CI, ``| tee``): one plain line
per channel every ``interval`` seconds (30 by default) and at each outage start and end, plus
a line once a minute while an outage lasts, so a log shows that the run is alive.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from notify.cli.terminal import escape, raw
from notify.outage import OutageState, format_duration

if TYPE_CHECKING:
    from rich.progress import TaskID

# Off a terminal: a progress line per channel this often, and a reminder of a lasting outage.
PLAIN_INTERVAL = 30.0
OUTAGE_REMINDER = 60.0
RATE_WINDOW = 60.0  # seconds over which the current rate is measured


class ChannelCount:
    """One channel's numbers for a progress display."""

    def __init__(self, total: int, rate: float | None) -> None:
        self.total = total
        self.rate = rate  # configured messages per second, None without a limit
        self.done = 0
        self.failed = 0
        self.recent: deque[float] = deque()  # completion times within RATE_WINDOW
        self.outage: OutageState | None = None

    def add(self, now: float, failed: bool) -> None:
        """One more message ended."""
        self.done += 1
        self.failed += int(failed)
        self.total = max(self.total, self.done)  # fallback SMS are planned while sending
        self.recent.append(now)

    def current_rate(self, now: float, started: float) -> float:
        """Messages per second over the last minute (or since the start, if sooner)."""
        while self.recent and self.recent[0] <= now - RATE_WINDOW:
            self.recent.popleft()
        span = min(RATE_WINDOW, max(now - started, 1e-6))
        return len(self.recent) / span

    def eta(self, now: float, started: float) -> float | None:
        """Seconds left at the current rate (the configured one when limited), or None."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        rate = self.rate or self.current_rate(now, started)
        return left / rate if rate > 0 else None


def _clock_time(state: OutageState, now: float) -> str:
    """When the outage started, as a UTC wall-clock time."""
    started = time.time() - (now - state.started)
    return datetime.fromtimestamp(started, UTC).strftime("%H:%M:%S UTC")


class PlainProgress:
    """Progress as plain lines on ``stream`` (stderr off a terminal)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = PLAIN_INTERVAL,
        outage_interval: float = OUTAGE_REMINDER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self.outage_interval = outage_interval
        self.clock = clock
        self.channels: dict[str, ChannelCount] = {}
        self.started = clock()
        self._next_line = self.started + interval
        self._next_outage_line: dict[str, float] = {}

    def _print(self, text: str) -> None:
        # Provider answers (state.error) are outside data: escaped even if the stream is raw.
        print(escape(text), file=self.stream, flush=True)

    def begin(self, totals: dict[str, int], rates: dict[str, float | None]) -> None:
        """Sending starts."""
        self.started = self.clock()
        self._next_line = self.started + self.interval
        self.channels = {ch: ChannelCount(n, rates.get(ch)) for ch, n in totals.items()}

    def done(self, channel: str, outcome: str) -> None:
        """One message ended."""
        count = self.channels.setdefault(channel, ChannelCount(0, None))
        count.add(self.clock(), outcome == "failed")

    def line(self, channel: str) -> str:
        """``email: 120/400 sent, 4.0/s, ETA 1m10s, 2 failed`` (and the outage, if any)."""
        count, now = self.channels[channel], self.clock()
        eta = count.eta(now, self.started)
        parts = [
            f"{channel}: {count.done}/{count.total} done",
            f"{count.current_rate(now, self.started):.1f}/s",
            f"ETA {format_duration(eta) if eta is not None else 'unknown'}",
            f"{count.failed} failed",
        ]
        if count.outage is not None:
            parts.append(
                f"paused: {count.outage.provider} unavailable for "
                f"{format_duration(now - count.outage.started)}"
            )
        return ", ".join(parts)

    def outage_started(self, state: OutageState) -> None:
        """A provider went down."""
        now = self.clock()
        self._count(state.channel).outage = state
        self._print(
            f"{state.channel}: {state.provider} is unavailable ({state.error}); "
            "the channel is paused and nothing is spent, probing again with backoff."
        )
        self._next_outage_line[state.channel] = now + self.outage_interval
        self._lines()

    def outage_ended(self, state: OutageState, seconds: float) -> None:
        """The provider is back."""
        self._count(state.channel).outage = None
        self._next_outage_line.pop(state.channel, None)
        self._print(
            f"{state.channel}: {state.provider} is back after "
            f"{format_duration(seconds)}; sending resumes."
        )
        self._lines()

    def tick(self) -> None:
        """Print what is due: progress every interval, outage reminders every minute."""
        now = self.clock()
        for channel, due in list(self._next_outage_line.items()):
            state = self.channels[channel].outage
            if state is not None and now >= due:
                self._print(
                    f"{channel}: {state.provider} still unavailable since "
                    f"{_clock_time(state, now)} "
                    f"({format_duration(now - state.started)}): {state.error}"
                )
                self._next_outage_line[channel] = now + self.outage_interval
        if now >= self._next_line:
            self._lines()

    def _lines(self) -> None:
        """One progress line per channel, now; the next ones an interval later."""
        for channel in self.channels:
            self._print(self.line(channel))
        self._next_line = self.clock() + self.interval

    def end(self) -> None:
        """Sending ended: nothing more to print (the summary follows)."""

    def _count(self, channel: str) -> ChannelCount:
        return self.channels.setdefault(channel, ChannelCount(0, None))


class TerminalProgress(PlainProgress):
    """One rich progress bar per channel on a terminal; outage lines printed above them."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        # rich draws and redraws the bars with cursor codes: it writes to the stream under
        # the escaping (notify/cli/terminal.py), and what it prints is escaped in _print.
        self.console = Console(file=raw(self.stream))
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("failed {task.fields[failed]}"),
            TextColumn("{task.fields[note]}"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def _print(self, text: str) -> None:
        self.console.print(escape(text), markup=False, highlight=False)

    def begin(self, totals: dict[str, int], rates: dict[str, float | None]) -> None:
        """Sending starts: one bar per channel."""
        super().begin(totals, rates)
        for channel, total in totals.items():
            self.tasks[channel] = self.bar.add_task(
                channel, total=total, rate=0.0, eta="-", failed=0, note=""
            )
        self.bar.start()

    def done(self, channel: str, outcome: str) -> None:
        """One message ended: its bar moves."""
        super().done(channel, outcome)
        self._refresh(channel)

    def outage_started(self, state: OutageState) -> None:
        """A provider went down: say so once, and show it on the bar."""
        self._count(state.channel).outage = state
        self._print(
            f"{state.channel}: {state.provider} is unavailable ({state.error}); "
            "the channel is paused and nothing is spent, probing again with backoff."
        )
        self._refresh(state.channel)

    def outage_ended(self, state: OutageState, seconds: float) -> None:
        """The provider is back."""
        self._count(state.channel).outage = None
        self._print(
            f"{state.channel}: {state.provider} is back after "
            f"{format_duration(seconds)}; sending resumes."
        )
        self._refresh(state.channel)

    def tick(self) -> None:
        """Refresh rates, ETAs and outage durations (the bar is the liveness sign)."""
        for channel in self.tasks:
            self._refresh(channel)

    def _refresh(self, channel: str) -> None:
        if channel not in self.tasks:
            return
        count, now = self.channels[channel], self.clock()
        eta = count.eta(now, self.started)
        note = (
            ""
            if count.outage is None
            else f"paused: {count.outage.provider} down "
            f"{format_duration(now - count.outage.started)}"
        )
        self.bar.update(
            self.tasks[channel],
            completed=count.done,
            total=count.total,
            rate=count.current_rate(now, self.started),
            failed=count.failed,
            eta=format_duration(eta) if eta is not None else "?",
            note=escape(note),
        )

    def end(self) -> None:
        """Leave the final bars on screen."""
        if self.tasks:
            self.bar.stop()


def reporter(enabled: bool, stream: TextIO | None = None) -> PlainProgress | None:
    """The progress display for a send: bars on a terminal, plain lines otherwise, or None
    (``--json`` or ``--dry-run``: nothing but the result)."""
    if not enabled:
        return None
    stream = stream or sys.stderr
    if stream.isatty():
        return TerminalProgress(stream)
    return PlainProgress(stream)
