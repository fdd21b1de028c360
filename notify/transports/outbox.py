"""The embedded default transports: email as ``.eml`` files, SMS as JSON lines.

Layout under ``settings.outbox``:

* ``email/000000123.eml`` - one file per message row, named from the row id, so re-sending
  the same row after a crash overwrites the file instead of adding a second copy. Written to
  a temporary file, fsynced, then renamed over the target: a reader never sees half a file.
* ``sms.jsonl`` - one JSON object per line: ``sid`` ("outbox-" + 32 hex: never mistaken for a
  Twilio SID, "SM" + 32 hex), ``row_id``, ``to``,
  ``from``, ``body``, ``created_at`` (ISO-8601 UTC), ``status`` ("sent"). Each line is one
  ``write`` on an ``O_APPEND`` descriptor followed by fsync, so concurrent pushes never
  interleave. A crash can at worst leave a torn last line: readers skip it, and the next
  writer first terminates it with a newline so that later lines stay readable.

The outbox is the final destination of its messages, so ``OutboxSms.fetch_status`` reports a
stored message as ``delivered`` (this is what ``notify sync sms`` then records).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from notify.files import create_private, open_private, private_dir
from notify.times import as_utc
from notify.transports.base import (
    Found,
    Messenger,
    Outgoing,
    Result,
    TransportConfigError,
)

# Outbox ids must not look like Twilio's ("SM" + 32 hex): whoever reads an export or a lookup
# must see that the message went to a folder, not to a phone.
OUTBOX_SID_PREFIX = "outbox-"


def eml_path(outbox: Path, row_id: int) -> Path:
    """Where the outbox keeps the email of message row ``row_id``."""
    return Path(outbox) / "email" / f"{row_id:09d}.eml"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it is either the old or the complete new file."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # 0600 from the start (the notice holds a working reset link); replace keeps it.
        fd = create_private(tmp)
        if fd is None:
            raise FileExistsError(tmp)
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class OutboxEmail(Messenger):
    """Email into ``{outbox}/email/``, one atomically written ``.eml`` per message row."""

    name = "outbox-email"
    channel = "email"

    def __init__(self, outbox: Path) -> None:
        self.outbox = Path(outbox)

    async def push(self, item: Outgoing) -> Result:
        """Store the complete message bytes; the provider id is the Message-ID."""
        await item.wait_ready()
        try:
            await asyncio.to_thread(_write_atomic, eml_path(self.outbox, item.row_id), item.data)
        except OSError as exc:
            # A full disk or a vanished folder may well be fixed before the next attempt.
            return Result("retry", error_code="io", error_message=f"outbox: {exc}")
        return Result("sent", provider_id=item.message_id, provider_status="stored")


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def read_sms_lines(path: Path) -> list[dict]:
    """Every complete, well-formed JSON line of an SMS outbox file (torn lines skipped)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-write
        if isinstance(record, dict):
            records.append(record)
    return records


def _found(record: dict, status: str | None = None) -> Found:
    return Found(
        provider_id=str(record.get("sid")),
        status=status or str(record.get("status", "sent")),
        to=str(record.get("to")),
        created_at=_parse_time(record.get("created_at")),
        body=record.get("body"),
    )


class OutboxSms(Messenger):
    """SMS appended to ``{outbox}/sms.jsonl``, one durable JSON line per message."""

    name = "outbox-sms"
    channel = "sms"

    def __init__(self, outbox: Path, default_sender: str | None = None) -> None:
        self.path = Path(outbox) / "sms.jsonl"
        self.default_sender = default_sender
        self._checked_tail = False

    def _append(self, line: bytes) -> None:
        private_dir(self.path.parent)
        fd = open_private(self.path, os.O_RDWR | os.O_APPEND)
        try:
            if not self._checked_tail:
                self._terminate_torn_line(fd)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _terminate_torn_line(self, fd: int) -> None:
        """After a crash mid-write, close the torn line so the next one parses on its own."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
        self._checked_tail = True

    async def push(self, item: Outgoing) -> Result:
        """Append the message as one JSON line; the provider id is a fresh outbox-... id."""
        sender = item.sender or self.default_sender
        if not sender:
            raise TransportConfigError(
                "no SMS sender: set NOTIFY_SMS_FROM or the campaign's sms_from"
            )
        await item.wait_ready()
        sid = OUTBOX_SID_PREFIX + uuid.uuid4().hex
        record = {
            "sid": sid,
            "row_id": item.row_id,
            "to": item.to,
            "from": sender,
            "body": item.body,
            "created_at": datetime.now(UTC).isoformat(),
            "status": "sent",
        }
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as exc:
            return Result("retry", error_code="io", error_message=f"outbox: {exc}")
        return Result("sent", provider_id=sid, provider_status="sent")

    async def find_sent(self, to: str, since: datetime) -> list[Found]:
        """Lines to ``to`` written at or after ``since``, oldest first."""
        since = as_utc(since)
        records = await asyncio.to_thread(read_sms_lines, self.path)
        found = []
        for record in records:
            created = _parse_time(record.get("created_at"))
            if record.get("to") == to and created is not None and created >= since:
                found.append(_found(record))
        return found

    async def fetch_status(self, provider_id: str) -> Found | None:
        """The stored line with this SID, reported ``delivered`` (the file is the end)."""
        records = await asyncio.to_thread(read_sms_lines, self.path)
        for record in records:
            if record.get("sid") == provider_id:
                return _found(record, status="delivered")
        return None
