"""Global per-channel rate limits: a token bucket of depth 1 shared through the database.

Every worker (one process, or many on several machines) reserves send slots by advancing one
row of the ``throttles`` table in a single UPDATE, so consecutive messages of a channel leave at
least ``1/rate`` seconds apart in total, whatever the number of workers. The clock is the
database's own (PostgreSQL) so machines with skewed clocks still agree; SQLite is one machine.

Slots are reserved a few at a time (about a fifth of a second's worth) to keep the database
round trips down; an unused reservation only delays the next slot, it never adds one.

Each worker translates database time into its own monotonic clock. The translation's error is
the delay between the database reading its clock and the worker reading its own; workers with
different errors would place their slots that much closer together than ``1/rate``. So the
worker reads its clock the moment the answer arrives (not after the commit and the hop back
to the event loop), and calibrates with a few bare clock reads before its first reservation,
so that a worker that joins a running campaign is accurate from its first slot.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from sqlalchemy import Engine, text

from notify.db import is_sqlite

# How much send time one reservation covers: bigger = fewer round trips, coarser sharing.
RESERVE_SECONDS = 0.2
# How late (in intervals) a slot may still be used; must stay below 1 for the rate + 1 rule
# (sends then lie in [slot, slot + 0.9/rate): any one-second window holds at most rate + 1).
LATE_FRACTION = 0.9
# Clock reads before the first reservation; the quickest answer gives the truest offset.
CALIBRATION_READS = 5


def reserve_slots(
    engine: Engine, campaign_id: int, channel: str, rate: float, count: int
) -> tuple[float, float, float]:
    """Reserve ``count`` consecutive slots: (first slot, database now, local monotonic now).

    The slots are ``first + i / rate`` for i in range(count), in database epoch seconds; the
    local monotonic time is read as soon as the database's answer arrived.
    """
    span = count / rate
    with engine.begin() as conn:
        if is_sqlite(engine):
            now, local = time.time(), time.monotonic()
            conn.execute(
                text(
                    "INSERT INTO throttles (campaign_id, channel, next_slot) "
                    "VALUES (:c, :ch, 0) ON CONFLICT DO NOTHING"
                ),
                {"c": campaign_id, "ch": channel},
            )
            row = conn.execute(
                text(
                    "UPDATE throttles SET next_slot = max(next_slot, :now) + :span "
                    "WHERE campaign_id = :c AND channel = :ch RETURNING next_slot"
                ),
                {"now": now, "span": span, "c": campaign_id, "ch": channel},
            ).one()
            return row[0] - span, now, local
        conn.execute(
            text(
                "INSERT INTO throttles (campaign_id, channel, next_slot) "
                "VALUES (:c, :ch, 0) ON CONFLICT DO NOTHING"
            ),
            {"c": campaign_id, "ch": channel},
        )
        row = conn.execute(
            text(
                "WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t) "
                "UPDATE throttles SET next_slot = greatest(next_slot, now.t) + :span "
                "FROM now WHERE campaign_id = :c AND channel = :ch "
                "RETURNING next_slot, now.t"
            ),
            {"span": span, "c": campaign_id, "ch": channel},
        ).one()
        local = time.monotonic()  # before the commit: only the way back adds error
        return row[0] - span, row[1], local


def clock_offset(engine: Engine) -> float:
    """Local monotonic minus database epoch time, from the quickest of a few clock reads.

    Every read overestimates by the time its answer took to come back, so the smallest is
    the truest.
    """
    if is_sqlite(engine):
        return time.monotonic() - time.time()  # one machine, one clock
    samples = []
    with engine.connect() as conn:
        for _ in range(CALIBRATION_READS):
            db_now = conn.execute(
                text("SELECT extract(epoch FROM clock_timestamp())::float8")
            ).scalar_one()
            samples.append(time.monotonic() - db_now)
    return min(samples)


class Throttle:
    """Hands out send slots for one channel; ``await acquire()`` returns at the slot's time.

    ``rate`` of None or 0 means no limit. Callers acquire in the order they will send, and
    send immediately after acquiring, so the provider sees the same spacing.

    The slots alone bound when messages *leave*; the provider counts when they *arrive*,
    and the way there (the relay's event loop, a stall, a retransmit) can bunch them, so a
    second at the provider may hold more than the rate. So each caller also ``release()``s
    when the provider has answered, and ``acquire()`` hands out a slot only while the
    messages answered in the last second plus those still in flight are fewer than the
    rate + 1: any message arriving in a one-second window was either answered within the
    second before the last hand-over of that window, or in flight at it, so no window at the
    provider holds more than rate + 1 from this worker.
    """

    def __init__(
        self, engine: Engine | None, campaign_id: int, channel: str, rate: float | None
    ) -> None:
        self.engine = engine
        self.campaign_id = campaign_id
        self.channel = channel
        self.rate = rate if rate and rate > 0 else None
        self._slots: deque[float] = deque()  # local monotonic times, ascending
        self._lock = asyncio.Lock()
        self._offset: float | None = None
        self._paused_until = 0.0
        self._refilling: asyncio.Future | None = None
        self._answered: deque[float] = deque()  # when the provider answered, last second
        self._in_flight = 0
        self._released = asyncio.Event()  # set by release(): an answer to count from
        # Answered in the last second + in flight must stay below this to hand one more over.
        self._window_cap = math.floor(self.rate) + 1 if self.rate else 0

    def _batch_size(self) -> int:
        assert self.rate is not None
        return max(1, math.ceil(self.rate * RESERVE_SECONDS))

    async def _refill(self) -> None:
        assert self.rate is not None
        count = self._batch_size()
        if self.engine is None:
            now = time.monotonic()
            start = max(now, getattr(self, "_next_local", 0.0))
            self._next_local = start + count / self.rate
            self._slots.extend(start + i / self.rate for i in range(count))
            return
        if self._offset is None:
            self._offset = await asyncio.to_thread(clock_offset, self.engine)
        first, db_now, local = await asyncio.to_thread(
            reserve_slots, self.engine, self.campaign_id, self.channel, self.rate, count
        )
        # Translate database time into this process's monotonic clock. The reply arrives a
        # variable delay after the database read its clock (network, a wait for the row
        # lock); the smallest offset seen is the truest, and a stable offset keeps
        # reservations from overlapping.
        self._offset = min(self._offset, local - db_now)
        self._slots.extend(first + self._offset + i / self.rate for i in range(count))

    def _prefetch(self) -> None:
        """Reserve the next slots while half of these remain, so senders never wait on it."""
        if self._refilling is not None and self._refilling.done():
            self._refilling.result()  # surface a database error to the sender
            self._refilling = None
        if self._refilling is None and len(self._slots) <= self._batch_size() // 2:
            self._refilling = asyncio.ensure_future(self._refill())

    def pause(self, seconds: float) -> None:
        """Hold every sender of this channel for ``seconds`` (the provider said 429)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        """Wait for this caller's slot (no wait at all without a rate or a pause)."""
        while (pause := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(pause)
        if self.rate is None:
            return
        async with self._lock:
            while True:
                self._prefetch()
                if not self._slots and self._refilling is not None:
                    await self._refilling
                    continue
                slot = self._slots.popleft()
                # A slot may be used up to LATE_FRACTION of an interval late: then every
                # send lies in [slot, slot + 0.9/rate), and any one-second window still
                # holds at most rate + 1 of them. A slot missed by more (we were busy, or a
                # reservation ran out unused) is skipped rather than burst to catch up.
                if slot >= time.monotonic() - LATE_FRACTION / self.rate:
                    break
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._window_room()
            self._in_flight += 1

    def release(self) -> None:
        """The provider answered a message this caller acquired a slot for."""
        if self.rate is None:
            return
        self._in_flight -= 1
        self._answered.append(time.monotonic())
        self._released.set()

    async def _window_room(self) -> None:
        """Wait until one more hand-over keeps every one-second window within rate + 1.

        Room comes only from an answer leaving the window, so wait for the oldest answer to
        age out, or, with none yet (all in flight at a slow provider), for the first answer.
        """
        while True:
            now = time.monotonic()
            while self._answered and self._answered[0] <= now - 1.0:
                self._answered.popleft()
            if len(self._answered) + self._in_flight < self._window_cap:
                return
            if self._answered:
                await asyncio.sleep(self._answered[0] + 1.0 - now)
            else:
                self._released.clear()
                await self._released.wait()
