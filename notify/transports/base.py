"""The messenger interface every transport implements (listmonk's: name, push, flush, close).

The send engine owns rate, retries, backoff and records; a messenger only delivers one item
and says what happened, as a :class:`Result`. ``push`` never raises for a delivery problem:
a refused recipient, a 4xx/5xx answer, a dropped connection or a timeout are all classified.
It raises :class:`TransportConfigError` only for problems no retry can fix and that concern
every message alike (wrong credentials, no sender configured), so the run stops instead of
failing a whole campaign one message at a time.

A failure that is about the provider rather than the message (no connection, a timeout, an
SMTP 421 or a 4xx before MAIL, a Twilio 5xx) is marked with ``Result.outage``: the engine
pauses the whole channel instead of spending the message's attempts on it (see
:mod:`notify.outage`). Lookups raise :class:`ProviderDown` for the same failures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Literal

from notify.errors import ConfigError, NotifyError

Outcome = Literal["sent", "retry", "failed"]


class TransportError(NotifyError):
    """A provider could not be asked (lookups: ``find_sent``, ``fetch_status``)."""


class ProviderDown(TransportError):
    """A lookup could not reach the provider (connection, timeout, 5xx): an outage, not a
    problem of the message looked up."""

    def __init__(self, message: str, kind: str = "connection") -> None:
        super().__init__(message)
        self.kind = kind  # "connection" (down at once) or "server" (a 5xx answer)


class TransportConfigError(ConfigError):
    """The transport is misconfigured (bad credentials, no sender): stop, do not retry."""


@dataclass
class Outgoing:
    """One message to hand to a provider."""

    row_id: int  # messages.id
    channel: str  # "email" | "sms"
    to: str  # email address (domain already IDNA) or E.164 number
    body: str = ""  # SMS text
    data: bytes = b""  # email: the complete RFC 5322 message (CRLF), Message-ID included
    message_id: str | None = None  # email Message-ID header value, "<...>"
    sender: str | None = None  # envelope MAIL FROM / From number or MG... SID
    # The channel's rate slot, awaited by the messenger at the last moment before the message
    # is handed over (after SMTP's MAIL and RCPT, before DATA), so that the time the provider
    # sees a message varies as little as possible around its slot; None = no rate limit.
    ready: Callable[[], Awaitable[None]] | None = field(default=None, repr=False, compare=False)
    # Whether a push whose answer was lost may still look the message up at the provider
    # (SMS): not once its channel was declared down (only the probe talks to the provider
    # then) or the run is giving up; the message then stays in doubt, looked up next time.
    may_look_up: Callable[[], bool] | None = field(default=None, repr=False, compare=False)

    async def wait_ready(self) -> None:
        """Wait for this message's rate slot: once, and only when about to hand it over.

        A push that fails earlier (no connection, a refused recipient) takes no slot.
        """
        if self.ready is not None:
            await self.ready()

    def lookup_allowed(self) -> bool:
        """True when a push in doubt may look its message up now (see ``may_look_up``)."""
        return self.may_look_up is None or self.may_look_up()


class HeldBack(Exception):  # noqa: N818 - a signal, not an error
    """Raised by :attr:`Outgoing.ready` when the message must not be handed over after all
    (its channel was declared down, or the run gave up, while it waited for its rate slot).
    Nothing is on the wire yet: messengers let it propagate (SMTP drops the session it
    interrupts), and the engine puts the message back unspent."""


@dataclass
class Result:
    """What the provider answered for one push."""

    outcome: Outcome
    provider_id: str | None = None  # Twilio SID; for email the Message-ID
    provider_status: str | None = None  # Twilio "queued"/"accepted"; SMTP the 250 reply text
    error_code: str | None = None  # "451", "550", "21211", "429", "500", "timeout", ...
    error_message: str | None = None
    retry_after: float | None = None  # seconds, from Retry-After when the provider gave one
    # Provider-side failure: "connection" (refused, reset, DNS, TLS handshake, timeout, SMTP
    # 421 or 4xx before MAIL: an outage at once) or "server" (a 5xx answer: an outage when
    # several come in a row). None: an answer about this message.
    outage: str | None = None
    # True when the provider may have the message all the same (the connection broke or
    # timed out after it was handed over): it must be looked up before an SMS is re-sent.
    in_doubt: bool = False
    # An SMS push that timed out and was then found at the provider: every SID whose body
    # and creation time match, oldest first; the engine adopts the first no row holds.
    candidates: tuple[str, ...] = ()


@dataclass
class Found:
    """A message the provider knows about (reconcile and status sync)."""

    provider_id: str
    status: str
    to: str
    created_at: datetime | None
    body: str | None
    error_code: str | None = None
    error_message: str | None = None


class Messenger(ABC):
    """A transport for one channel; ``push`` may be called concurrently on one event loop."""

    name: str
    channel: str

    @property
    def provider(self) -> str:
        """Who this messenger talks to, for the operator's outage lines (no secrets)."""
        return self.name

    @abstractmethod
    async def push(self, item: Outgoing) -> Result:
        """Deliver one message; classify every delivery problem instead of raising."""

    async def flush(self) -> None:
        """Make everything pushed so far durable/handed over (no-op by default)."""
        return None

    async def close(self) -> None:
        """Release connections and files (no-op by default)."""
        return None

    async def find_sent(self, to: str, since: datetime) -> list[Found]:
        """Messages to ``to`` the provider accepted at or after ``since`` (SMS reconcile)."""
        return []

    async def fetch_status(self, provider_id: str) -> Found | None:
        """The provider's current view of one message, or None if it does not know it."""
        return None

    async def __aenter__(self) -> Messenger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    now = now or datetime.now(when.tzinfo)
    return max(0.0, (when - now).total_seconds())
