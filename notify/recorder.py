"""Group commit: the send engine's writes, made durable in few transactions.

Every status must be committed as soon as the provider answers, yet one transaction per
message would cap throughput at the database's commit rate. The recorder runs the writes of
all messages that are ready at the same moment in one transaction on a dedicated thread, and
each caller resumes only after its own write is committed. A caller never proceeds on an
uncommitted status, so "committed before the next step" still holds message by message.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

# Enough to amortize a commit, small enough that one slow group does not stall senders long.
MAX_GROUP = 256

Op = tuple[Callable[..., Any], tuple, asyncio.Future, asyncio.AbstractEventLoop, bool]


class Recorder:
    """Runs ``fn(session, *args)`` calls in shared transactions on one writer thread.

    :meth:`batched` calls that name the same batch function are handed over together
    (``batch_fn(session, [arg, ...]) -> [result, ...]``), so the hot path can use one
    executemany per group instead of a statement per message.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SimpleQueue: a put is one C call, not a lock and a condition in Python.
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="notify-recorder", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(session, *args)``; returns its result once the transaction has committed."""
        return await self._submit(fn, args, False)

    async def batched(self, batch_fn: Callable[[Session, list], list], arg: Any) -> Any:
        """Run ``arg`` through ``batch_fn`` with whatever else is ready; returns its result."""
        return await self._submit(batch_fn, (arg,), True)

    async def batched_all(self, batch_fn: Callable[[Session, list], list], args: list) -> list[Any]:
        """:meth:`batched` for several arguments at once (their results, in order)."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in args]
        for arg, future in zip(args, futures, strict=True):
            self._queue.put((batch_fn, (arg,), future, loop, True))
        # Wait for all (each failure retrieved, none left unseen), then raise the first.
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)

    async def _submit(self, fn: Callable[..., Any], args: tuple, batched: bool) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((fn, args, future, loop, batched))
        return await future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
            self._commit_group(group)

    @staticmethod
    def _execute(session: Session, group: list[Op]) -> list[Any]:
        results: list[Any] = [None] * len(group)
        batches: dict[Callable, list[int]] = {}
        for index, (fn, args, _, _, batched) in enumerate(group):
            if batched:
                batches.setdefault(fn, []).append(index)
            else:
                results[index] = fn(session, *args)
        for fn, indexes in batches.items():
            out = fn(session, [group[i][1][0] for i in indexes])
            for i, result in zip(indexes, out, strict=True):
                results[i] = result
        return results

    def _commit_group(self, group: list[Op]) -> None:
        try:
            with Session(self.engine) as session, session.begin():
                results = self._execute(session, group)
        except Exception:
            # One bad write must not sink the others: retry each alone to find it.
            for op in group:
                self._commit_one(op)
            return
        _hand_back([(op, result, None) for op, result in zip(group, results, strict=True)])

    def _commit_one(self, op: Op) -> None:
        try:
            with Session(self.engine) as session, session.begin():
                result = self._execute(session, [op])[0]
        except Exception as exc:  # handed to the awaiting caller, which decides
            _hand_back([(op, None, exc)])
            return
        _hand_back([(op, result, None)])


def _hand_back(outcomes: list[tuple[Op, Any, BaseException | None]]) -> None:
    """Wake the callers: one thread-safe call per event loop, not one per message."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for (_, _, future, loop, _), result, exc in outcomes:
        by_loop.setdefault(loop, []).append((future, result, exc))
    for loop, items in by_loop.items():
        loop.call_soon_threadsafe(_resolve_all, items)


def _resolve_all(items: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for future, result, exc in items:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
