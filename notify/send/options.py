"""What a send is asked for and what it tells: ``SendOptions``, the ``SendObserver`` the CLI's
progress implements, and the ``SendSummary`` of a run (its words and JSON keys)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from notify.config import LEASE_SECONDS
from notify.models import (
    IN_FLIGHT_STATUSES,
    REACHED_STATUSES,
    Status,
)
from notify.outage import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    MAX_OUTAGE,
    OutageState,
)


class SendObserver(Protocol):
    """What the engine tells whoever shows progress (the CLI); called on the event loop."""

    def begin(self, totals: dict[str, int], rates: dict[str, float | None]) -> None:
        """Sending starts: messages to attempt per channel, and each channel's rate."""

    def done(self, channel: str, outcome: str) -> None:
        """One message ended this run: ``sent``, ``reconciled`` or ``failed``."""

    def outage_started(self, state: OutageState) -> None:
        """A channel's provider went down: the channel pauses."""

    def outage_ended(self, state: OutageState, seconds: float) -> None:
        """The provider answered again after ``seconds``: the channel resumes."""

    def tick(self) -> None:
        """About once a second while sending (periodic lines need no thread of their own)."""

    def end(self) -> None:
        """Sending ended (normally or not)."""


@dataclass
class SendOptions:
    """What `notify send` (and `notify remind`) asked for; None means the campaign's value."""

    channels: tuple[str, ...] | None = None
    dry_run: bool = False
    limit: int | None = None
    email_rate: float | None = None  # messages per second; 0 = no limit
    sms_rate: float | None = None
    concurrency: int | None = None
    notice: str | None = None  # None: every pending row (first notices and planned reminders)
    progress: bool = True
    assume_yes: bool = False
    retry_base: float = 1.0  # seconds before the second attempt; doubles each time
    lease_seconds: float = LEASE_SECONDS
    batch_size: int | None = None
    worker_id: str | None = None
    max_outage: float = MAX_OUTAGE  # seconds a provider may stay down before the run ends
    outage_backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX)  # probe delays, seconds
    provider_timeout: float | None = None  # per network step; None: the transport's default
    observer: SendObserver | None = None  # progress and outage lines (the CLI's)


def snake(word: str) -> str:
    """``would send`` -> ``would_send``: JSON keys are snake_case identifiers (docs/cli.md)."""
    return re.sub(r"[^a-z0-9]+", "_", word.lower()).strip("_")


# Why a message is skipped, in the words of summaries: an address missing for the channel
# reads the same on both channels.
SKIP_WORDS = {"no email address": "no address", "no phone number": "no address"}


# How a run's outcomes read in its summary ("2 retried, 34 sent", not "2 retry").
RUN_WORDS = {"retry": "retried"}


@dataclass
class SendSummary:
    """What one run did, and where the campaign stands afterwards."""

    campaign: str
    dry_run: bool = False
    planned: Counter = field(default_factory=Counter)  # new rows, by channel
    done: Counter = field(default_factory=Counter)  # (channel, outcome) -> n, this run
    totals: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> status -> n
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> reason -> n
    elapsed: float = 0.0
    interrupted: bool = False
    transports: dict[str, str] = field(default_factory=dict)  # channel -> where it went

    def count(self, outcome: str, channel: str | None = None) -> int:
        """How many messages of this run ended in ``outcome`` (sent, failed, retry, ...)."""
        return sum(
            n
            for (ch, out), n in self.done.items()
            if out == outcome and (channel is None or ch == channel)
        )

    def lines(self) -> list[str]:
        """Printable summary, one line per channel plus a headline."""
        head = "Dry run (nothing sent)" if self.dry_run else "Sent"
        if self.interrupted:
            head = "Interrupted; in-flight messages were recorded. Run again to resume"
        out = [f"{head}: campaign {self.campaign} in {self.elapsed:.1f}s."]
        if not self.totals:  # a bare headline read as if something had been sent
            out.append(
                f"  no messages: the campaign has no contacts yet (import them with: "
                f"notify contacts import FILE --campaign {self.campaign})"
            )
        for channel in sorted(self.totals):
            if self.dry_run:
                out.append(f"  {channel}: {self.dry_run_text(channel)}")
                continue
            statuses = self.totals[channel]
            total = sum(statuses.values())
            parts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
            run = ", ".join(
                f"{n} {RUN_WORDS.get(out, out)}"
                for (ch, out), n in sorted(self.done.items())
                if ch == channel
            )
            out.append(f"  {channel}: {total} messages ({parts}); this run: {run or 'nothing'}")
        return out

    def dry_run_text(self, channel: str) -> str:
        """``203 would be sent, 3 skipped (no address)``: what a send would do on a channel."""
        statuses = self.totals.get(channel, {})
        parts = [f"{self.count('would send', channel):,} would be sent"]
        already = sum(statuses.get(s, 0) for s in REACHED_STATUSES)
        if already:
            parts.append(f"{already:,} already sent")
        reasons: Counter = Counter()
        for reason, n in self.skipped.get(channel, {}).items():
            reasons[SKIP_WORDS.get(reason, reason)] += n
        parts += [f"{n:,} skipped ({reason})" for reason, n in sorted(reasons.items())]
        ended = sum(
            n
            for s, n in statuses.items()
            if s not in REACHED_STATUSES and s not in (*IN_FLIGHT_STATUSES, Status.SKIPPED)
        )
        if ended:
            parts.append(f"{ended:,} failed earlier")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for audit records and --json (snake_case keys all through)."""
        run: dict[str, dict[str, int]] = {}
        for (channel, outcome), n in sorted(self.done.items()):
            run.setdefault(channel, {})[snake(outcome)] = n
        skipped: dict[str, dict[str, int]] = {}
        for channel, reasons in self.skipped.items():
            for reason, n in reasons.items():
                key = snake(SKIP_WORDS.get(reason, reason))
                skipped.setdefault(channel, {})[key] = skipped.get(channel, {}).get(key, 0) + n
        data = {
            "campaign": self.campaign,
            "dry_run": self.dry_run,
            "planned": dict(self.planned),
            "run": run,
            "totals": self.totals,
            "elapsed_s": round(self.elapsed, 3),
            "interrupted": self.interrupted,
            "transports": self.transports,
        }
        if self.dry_run:
            data["skipped"] = skipped
        return data
