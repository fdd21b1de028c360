"""The rate limiter's own guarantees, on the local (database-less) bucket."""

from __future__ import annotations

import asyncio
import time

from notify.throttle import Throttle


async def test_slots_are_spaced_by_the_rate():
    throttle = Throttle(None, 1, "email", 20.0)
    stamps = []
    for _ in range(11):
        await throttle.acquire()
        stamps.append(time.monotonic())
        throttle.release()
    assert stamps[-1] - stamps[0] >= 10 / 20.0 - 0.01


async def test_bunched_answers_hold_the_next_hand_over_for_a_second():
    """Six messages (rate 5, so rate + 1) in flight at a stalled provider: no seventh is
    handed over; when the six are answered at once, they count for the whole next second."""
    throttle = Throttle(None, 1, "email", 5.0)
    for _ in range(6):
        await throttle.acquire()
    seventh = asyncio.ensure_future(throttle.acquire())
    await asyncio.sleep(0.5)
    assert not seventh.done()  # in flight = rate + 1
    for _ in range(6):
        throttle.release()
    answered = time.monotonic()
    await asyncio.sleep(0.5)
    assert not seventh.done()  # answered in the last second = rate + 1
    await asyncio.wait_for(seventh, 2)
    assert time.monotonic() - answered >= 0.99


async def test_no_rate_means_no_wait_and_no_bookkeeping():
    throttle = Throttle(None, 1, "email", None)
    started = time.monotonic()
    for _ in range(1000):
        await throttle.acquire()
        throttle.release()
    assert time.monotonic() - started < 0.5
