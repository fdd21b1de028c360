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

Op = tuple[Callable[..., Any], tuple, asyncio.Future, asyncio.AbstractEventLoop]


class Recorder:
    """Runs ``fn(session, *args)`` calls in shared transactions on one writer thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: queue.Queue[Op | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="notify-recorder", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(session, *args)``; returns its result once the transaction has committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((fn, args, future, loop))
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

    def _commit_group(self, group: list[Op]) -> None:
        try:
            with Session(self.engine) as session, session.begin():
                results = [fn(session, *args) for fn, args, _, _ in group]
        except Exception:
            # One bad write must not sink the others: retry each alone to find it.
            for op in group:
                self._commit_one(op)
            return
        for (_, _, future, loop), result in zip(group, results, strict=True):
            loop.call_soon_threadsafe(_resolve, future, result, None)

    def _commit_one(self, op: Op) -> None:
        fn, args, future, loop = op
        try:
            with Session(self.engine) as session, session.begin():
                result = fn(session, *args)
        except Exception as exc:  # handed to the awaiting caller, which decides
            loop.call_soon_threadsafe(_resolve, future, None, exc)
            return
        loop.call_soon_threadsafe(_resolve, future, result, None)


def _resolve(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
