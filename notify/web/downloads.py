"""Streamed CSV downloads: the export is written by the same code as `notify export`, on a
database thread, into chunks that the event loop sends as they come. Memory stays flat at
any size (a bounded queue holds the producer back while the network is slow), and the
bytes are the command's bytes."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from aiohttp import web

CHUNK = 64 * 1024
QUEUE_CHUNKS = 8


class DownloadAborted(Exception):
    """The client went away: the producer stops writing."""


class _ChunkSink:
    """A text file for csv.writer that hands UTF-8 chunks to the event loop's queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self._loop, self._queue = loop, queue
        self._parts: list[str] = []
        self._size = 0
        self.aborted = False

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= CHUNK:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._parts:
            self._put("".join(self._parts).encode("utf-8"))
            self._parts, self._size = [], 0

    def _put(self, item: bytes | None) -> None:
        if self.aborted:
            raise DownloadAborted()
        asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop).result()

    def close(self) -> None:
        """Send what is left and the end marker (never blocks once aborted)."""
        if not self.aborted:
            self.flush()
            self._put(None)


async def stream_csv(
    request: web.Request, executor: Executor, filename: str, produce: Callable[[Any], int]
) -> tuple[web.StreamResponse, int]:
    """Send ``produce(csv_writer)``'s output as a CSV attachment; returns the response and
    the row count. An error after the first byte aborts the connection, so the client never
    keeps a cut file that looks complete."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_CHUNKS)
    sink = _ChunkSink(loop, queue)

    def run() -> int:
        try:
            return produce(csv.writer(sink))
        finally:
            sink.close()

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    job = loop.run_in_executor(executor, run)
    try:
        while True:
            chunk = await queue.get()
            if chunk is None:
                break
            await response.write(chunk)
        rows = await job
    except BaseException:
        sink.aborted = True
        while not job.done():  # let a producer blocked on a full queue see the abort
            while not queue.empty():
                queue.get_nowait()
            await asyncio.sleep(0.01)
        raise
    await response.write_eof()
    return response, rows
