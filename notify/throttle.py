"""Global per-channel rate limits: a token bucket of depth 1 shared through the database.

Every worker (one process, or many on several machines) reserves send slots by advancing one
row of the ``throttles`` table in a single UPDATE, so consecutive messages of a channel leave at
least ``1/rate`` seconds apart in total, whatever the number of workers. The clock is the
database's own (PostgreSQL) so machines with skewed clocks still agree; SQLite is one machine.

Slots are reserved a few at a time (about a fifth of a second's worth) to keep the database
round trips down; an unused reservation only delays the next slot, it never adds one.
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


def reserve_slots(engine: Engine, campaign_id: int, channel: str, rate: float, count: int
                  ) -> tuple[float, float]:
    """Reserve ``count`` consecutive slots; returns (first slot, database now), epoch seconds.

    The slots are ``first + i / rate`` for i in range(count).
    """
    span = count / rate
    with engine.begin() as conn:
        if is_sqlite(engine):
            now = time.time()
            conn.execute(
                text("INSERT INTO throttles (campaign_id, channel, next_slot) "
                     "VALUES (:c, :ch, 0) ON CONFLICT DO NOTHING"),
                {"c": campaign_id, "ch": channel},
            )
            row = conn.execute(
                text("UPDATE throttles SET next_slot = max(next_slot, :now) + :span "
                     "WHERE campaign_id = :c AND channel = :ch RETURNING next_slot"),
                {"now": now, "span": span, "c": campaign_id, "ch": channel},
            ).one()
            return row[0] - span, now
        conn.execute(
            text("INSERT INTO throttles (campaign_id, channel, next_slot) "
                 "VALUES (:c, :ch, 0) ON CONFLICT DO NOTHING"),
            {"c": campaign_id, "ch": channel},
        )
        row = conn.execute(
            text("WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t) "
                 "UPDATE throttles SET next_slot = greatest(next_slot, now.t) + :span "
                 "FROM now WHERE campaign_id = :c AND channel = :ch "
                 "RETURNING next_slot, now.t"),
            {"span": span, "c": campaign_id, "ch": channel},
        ).one()
        return row[0] - span, row[1]


class Throttle:
    """Hands out send slots for one channel; ``await acquire()`` returns at the slot's time.

    ``rate`` of None or 0 means no limit. Callers acquire in the order they will send, and
    send immediately after acquiring, so the provider sees the same spacing.
    """

    def __init__(self, engine: Engine | None, campaign_id: int, channel: str,
                 rate: float | None) -> None:
        self.engine = engine
        self.campaign_id = campaign_id
        self.channel = channel
        self.rate = rate if rate and rate > 0 else None
        self._slots: deque[float] = deque()  # local monotonic times, ascending
        self._lock = asyncio.Lock()
        self._offset: float | None = None
        self._paused_until = 0.0

    @property
    def limited(self) -> bool:
        """False when the channel runs flat out."""
        return self.rate is not None

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
        first, db_now = await asyncio.to_thread(
            reserve_slots, self.engine, self.campaign_id, self.channel, self.rate, count
        )
        # Translate database time into this process's monotonic clock. The reply arrives a
        # variable delay after the database read its clock (commit, network); the smallest
        # offset seen is the truest, and a stable offset keeps reservations from overlapping.
        sample = time.monotonic() - db_now
        self._offset = sample if self._offset is None else min(self._offset, sample)
        self._slots.extend(first + self._offset + i / self.rate for i in range(count))

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
                if not self._slots:
                    await self._refill()
                slot = self._slots.popleft()
                # A slot already well past was missed (we were busy, or another worker's
                # reservation ran out unused): skip it rather than burst to catch up, which
                # would put more than rate + 1 messages in some one-second window.
                if slot >= time.monotonic() - 0.25 / self.rate:
                    break
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
