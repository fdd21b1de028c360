"""Provider outages: a channel pauses while its provider is down, instead of failing people.

A failure about the provider rather than the message (``Result.outage``: no connection, a
timeout, an SMTP 421 or a refused EHLO/AUTH, a Twilio 5xx) says nothing about the recipient,
so spending the message's attempts on it would fail a whole campaign within seconds of a
relay going down. Instead the channel pauses: messages already begun are put back without
spending an attempt, nothing new is begun, and once in a while (1 s, then doubling up to
60 s, with jitter) one message is let through as a probe. The first answer from the provider
that is not an outage ends it; after ``max_outage`` seconds the run gives up (exit 75,
everything unsent still pending).

A connection failure starts an outage at once. A 5xx answer does only when it is one of
``SERVER_STREAK`` in a row, about as many different messages, with no success between: an
isolated 5xx among successes (or one message answered 5xx again and again) stays a
per-message transient failure, so one message the provider chokes on cannot hold a channel
forever (it spends its attempts and ends ``failed``). When a streak turns into an outage,
the attempts its first answers spent are given back (:attr:`ChannelOutage.refund`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from notify.errors import NotifyError

# Probes back off from BACKOFF_MIN to BACKOFF_MAX seconds (docs/contracts.md: 1 s to 60 s).
BACKOFF_MIN = 1.0
BACKOFF_MAX = 60.0
# --max-outage default: 15 minutes.
MAX_OUTAGE = 15 * 60.0
# 5xx answers in a row (no success between) that make an outage.
SERVER_STREAK = 3
# How often a paused channel checks whether it has waited too long.
CHECK_EVERY = 0.5


class OutageTooLong(NotifyError):
    """The provider stayed down longer than --max-outage: the run ends, nothing spent."""

    exit_code = 75  # EX_TEMPFAIL: try again later


@dataclass
class OutageState:
    """What the operator is told about one channel's outage."""

    channel: str
    provider: str
    error: str
    started: float  # time.monotonic() when it began
    probes: int = 0  # probes that failed since


def format_duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``1h02m``: how long an outage lasted, for one line of output."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ChannelOutage:
    """One channel's view of its provider: up, or down since when, and when to probe.

    The preparer asks :meth:`admit` before it begins messages; consumers ask
    :meth:`hold_back` before handing one over and :meth:`report` every answer.
    """

    def __init__(
        self,
        channel: str,
        provider: str,
        *,
        backoff_min: float = BACKOFF_MIN,
        backoff_max: float = BACKOFF_MAX,
        max_outage: float = MAX_OUTAGE,
        on_start: Callable[[OutageState], None] | None = None,
        on_end: Callable[[OutageState, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.provider = provider
        self.backoff_min = backoff_min
        self.backoff_max = max(backoff_min, backoff_max)
        self.max_outage = max_outage
        self.on_start = on_start
        self.on_end = on_end
        self.clock = clock
        self.state: OutageState | None = None
        self._delay = backoff_min
        self._next_probe = 0.0
        self._probe: int | None = None  # the ticket of the probe in flight, if any
        self._tickets = 0
        self._streak: list[int] = []  # message ids whose 5xx spent an attempt in this streak
        self._changed = asyncio.Event()

    @property
    def active(self) -> bool:
        """True while the provider is down."""
        return self.state is not None

    def too_long(self) -> OutageTooLong | None:
        """The error ending the run once the outage outlasted ``max_outage``, else None."""
        state = self.state
        if state is None or self.clock() - state.started < self.max_outage:
            return None
        return OutageTooLong(
            f"{self.channel}: {state.provider} has been unavailable for "
            f"{format_duration(self.clock() - state.started)} (--max-outage "
            f"{format_duration(self.max_outage)}): {state.error}. Nothing was spent: every "
            "unsent message is still pending; run the same command again once it is back."
        )

    async def admit(self, stop: asyncio.Event) -> int | None:
        """Wait until a message may be begun: None at once while the provider is up; while it
        is down, a probe ticket when the next probe is due (one at a time).

        Raises :class:`OutageTooLong` once the outage outlasts ``max_outage``; returns None
        early when ``stop`` is set (the caller then begins nothing).
        """
        while self.state is not None and not stop.is_set():
            expired = self.too_long()
            if expired is not None:
                raise expired
            now = self.clock()
            if self._probe is None and now >= self._next_probe:
                self._tickets += 1
                self._probe = self._tickets
                return self._probe
            wait = (
                CHECK_EVERY if self._probe is not None else min(CHECK_EVERY, self._next_probe - now)
            )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(0.01, wait))
            except TimeoutError:
                pass
        return None

    def hold_back(self, probe: int | None) -> bool:
        """True when a message begun earlier must not be handed over now (the provider went
        down since, and it is not the probe): it goes back unspent."""
        return self.state is not None and (probe is None or probe != self._probe)

    def settle(self, probe: int | None) -> None:
        """A probe ended without an answer from the provider (not begun, template failed):
        let the next message probe at once."""
        if probe is not None and probe == self._probe:
            self._probe = None
            self._changed.set()

    def report(
        self,
        outage: str | None,
        error: str | None,
        message_id: int | None = None,
        probe: int | None = None,
    ) -> bool:
        """Record one answer; True when it is part of an outage (the message goes back
        without spending an attempt), False when it concerns the message alone.

        ``outage`` is ``Result.outage`` ("connection", "server" or None for any other
        answer, which proves the provider is up).
        """
        if outage is None:
            self._up()
            return False
        if outage == "server" and self.state is None:
            # Only answers about different messages make a streak: one message the provider
            # keeps choking on must spend its attempts, not pause the channel for good.
            if message_id is not None and message_id not in self._streak:
                self._streak.append(message_id)
            if len(self._streak) < SERVER_STREAK:
                return False  # may be this message's own problem: a transient failure
            if message_id in self._streak:
                self._streak.remove(message_id)  # this one goes back unspent by itself
        self._down(error or outage, probe)
        return True

    def refund(self) -> list[int]:
        """Ids of messages whose 5xx spent an attempt before the streak became an outage;
        each is handed out once (the engine gives their attempts back)."""
        if self.state is None:
            return []
        ids, self._streak = self._streak, []
        return ids

    def _up(self) -> None:
        self._streak = []
        state, self.state = self.state, None
        self._probe = None
        self._delay = self.backoff_min
        if state is not None:
            if self.on_end is not None:
                self.on_end(state, self.clock() - state.started)
            self._changed.set()

    def _down(self, error: str, probe: int | None) -> None:
        now = self.clock()
        if self.state is None:
            self.state = OutageState(self.channel, self.provider, error, now)
            self._delay = self.backoff_min
            self._next_probe = now + self._jittered(self._delay)
            self._probe = None
            if self.on_start is not None:
                self.on_start(self.state)
        elif probe is not None and probe == self._probe:
            self.state.error = error
            self.state.probes += 1
            self._delay = min(self.backoff_max, self._delay * 2)
            self._next_probe = now + self._jittered(self._delay)
            self._probe = None
        self._changed.set()

    def _jittered(self, delay: float) -> float:
        # Several workers probing one relay should not knock in step.
        return min(self.backoff_max, delay * random.uniform(1.0, 1.25))
