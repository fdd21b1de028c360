"""`notify bounces import`: RFC 3464 delivery status notifications -> message statuses.

A DSN is a ``multipart/report; report-type=delivery-status`` whose ``message/delivery-status``
part holds one per-message block and one block per recipient (Final-Recipient,
Original-Recipient, Action, Status, Diagnostic-Code). The returned original, whole
(``message/rfc822``) or headers only (``text/rfc822-headers``), carries our Message-ID, which
is the email's ``provider_message_id``. Recipients are matched by that Message-ID, else by
Original-Recipient, then Final-Recipient, to the latest email sent to that address.

``Action: failed`` bounces the email (then the email -> SMS fallback applies); ``delayed``,
``delivered``, ``relayed`` and ``expanded`` are recorded as events only. Files that are not
DSNs, or match nothing, are reported by name, never raised.
"""

from __future__ import annotations

import mailbox
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.header import Header, decode_header
from email.message import Message as EmailMessage
from email.parser import BytesParser, HeaderParser
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from notify import events, fallback
from notify.campaigns import CampaignConfig, config_of
from notify.errors import NotifyError
from notify.models import Campaign, Message, utcnow
from notify.reports import normalize_email

ORIGINAL_PARTS = ("message/rfc822", "message/global", "text/rfc822-headers",
                  "message/rfc822-headers", "message/global-headers")
EVENT_ONLY_ACTIONS = ("delayed", "delivered", "relayed", "expanded")
_UNFOLD = re.compile(r"\r?\n[ \t]+")
_ANGLE_ID = re.compile(r"<[^<>\s]+>")
_XTEXT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
MAX_FILE_BYTES = 50 * 1024 * 1024


class NotADsn(ValueError):
    """The message is not a delivery status notification we can read."""


@dataclass
class RecipientReport:
    """One per-recipient block of a DSN."""

    final_recipient: str | None
    original_recipient: str | None
    action: str
    status: str | None
    diagnostic: str | None
    remote_mta: str | None = None


@dataclass
class Dsn:
    """A parsed DSN: the returned Message-ID (if any) and the per-recipient reports."""

    source: str
    message_id: str | None
    reporting_mta: str | None
    recipients: list[RecipientReport]


# --- parsing ---------------------------------------------------------------------------------


def _as_text(value: Any) -> str:
    """A header value as text; raw 8-bit (UTF-8 addresses, RFC 6533) decoded as UTF-8."""
    if isinstance(value, Header):
        return "".join(
            chunk.decode("utf-8" if charset in (None, "unknown-8bit") else charset,
                         errors="replace") if isinstance(chunk, bytes) else chunk
            for chunk, charset in decode_header(value)
        )
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = _UNFOLD.sub(" ", _as_text(value)).strip()
    return text or None


def _typed_value(value: str | None) -> str | None:
    """``rfc822; user@example.com`` -> ``user@example.com`` (type prefix and <> dropped)."""
    if not value:
        return None
    _, sep, rest = value.partition(";")
    text = (rest if sep else value).strip().strip("<>").strip()
    # utf-8 address type (RFC 6533) may escape characters as \x{HEX}.
    text = _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), text)
    return text or None


def _status_blocks(part: EmailMessage) -> list[EmailMessage]:
    """The header blocks of a message/delivery-status part, however the parser left it."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload
    raw = part.get_payload(decode=True) or b""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
    blocks = [b for b in re.split(r"\n[ \t]*\n", text.strip()) if b.strip()]
    return [HeaderParser(policy=policy.compat32).parsestr(block + "\n") for block in blocks]


def _normalize_message_id(value: str | None) -> str | None:
    value = _clean(value)
    if not value:
        return None
    found = _ANGLE_ID.search(value)
    return found.group(0) if found else f"<{value.strip('<> ')}>"


def _returned_message_id(report: EmailMessage, status_blocks: list[EmailMessage]) -> str | None:
    """Message-ID of the returned original, from the attached message or its headers."""
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype not in ORIGINAL_PARTS:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload:
            found = payload[0].get("Message-ID")
        else:
            raw = part.get_payload(decode=True) or b""
            headers = HeaderParser(policy=policy.compat32).parsestr(
                raw.decode("utf-8", errors="replace"), headersonly=True)
            found = headers.get("Message-ID")
        if found:
            return _normalize_message_id(found)
    # Some providers (Gmail) also name it in the per-message block.
    for block in status_blocks[:1]:
        found = block.get("X-Original-Message-ID") or block.get("Original-Message-ID")
        if found:
            return _normalize_message_id(found)
    return None


def parse_dsn(raw: bytes, source: str) -> Dsn:
    """Parse one DSN; raises NotADsn with the reason when it is not one."""
    message = BytesParser(policy=policy.compat32).parsebytes(raw)
    status_part = next(
        (p for p in message.walk() if p.get_content_type() == "message/delivery-status"), None
    )
    if status_part is None:
        kind = message.get_content_type()
        raise NotADsn(f"not a delivery status notification ({kind}, no message/delivery-status"
                      " part)")
    blocks = _status_blocks(status_part)
    recipients = [
        RecipientReport(
            final_recipient=_typed_value(_clean(block.get("Final-Recipient"))),
            original_recipient=_typed_value(_clean(block.get("Original-Recipient"))),
            action=(_clean(block.get("Action")) or "").lower(),
            status=_clean(block.get("Status")),
            diagnostic=_typed_value(_clean(block.get("Diagnostic-Code"))),
            remote_mta=_typed_value(_clean(block.get("Remote-MTA"))),
        )
        for block in blocks
        if block.get("Final-Recipient") or block.get("Original-Recipient")
    ]
    if not recipients:
        raise NotADsn("delivery status part has no recipient (Final-Recipient) block")
    reporting = _typed_value(_clean(blocks[0].get("Reporting-MTA"))) if blocks else None
    return Dsn(source, _returned_message_id(message, blocks), reporting, recipients)


# --- reading files ------------------------------------------------------------------------------


def _is_mbox(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(5) == b"From "


def iter_messages(path: Path) -> Iterator[tuple[str, bytes | Exception]]:
    """(name, raw bytes) for each message under ``path``: a file, a folder, or an mbox.

    Unreadable files are yielded with the exception instead of bytes, so the caller can
    report them and carry on.
    """
    if not path.exists():
        raise NotifyError(f"{path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if path.is_dir() else [path]
    for file in files:
        try:
            if file.stat().st_size > MAX_FILE_BYTES and not _is_mbox(file):
                raise NotADsn(f"larger than {MAX_FILE_BYTES // 2**20} MB: not a bounce")
            if _is_mbox(file):
                box = mailbox.mbox(file, create=False)
                for number, key in enumerate(box.iterkeys(), start=1):
                    yield f"{file}#{number}", box.get_bytes(key)
                continue
            yield str(file), file.read_bytes()
        except (OSError, NotADsn, mailbox.Error) as exc:
            yield str(file), exc


# --- matching and applying ------------------------------------------------------------------


@dataclass
class ImportReport:
    """What a bounce import did; names of what could not be used, for the operator."""

    messages: int = 0
    dsns: int = 0
    recipients: int = 0
    bounced: int = 0
    already_final: int = 0
    events_only: int = 0
    fallbacks: int = 0
    fallbacks_by_campaign: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # "file: recipient"
    unparseable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def counts(self) -> dict[str, Any]:
        """Integer counts for --json and the audit record."""
        return {
            "messages": self.messages, "dsns": self.dsns, "recipients": self.recipients,
            "bounced": self.bounced, "already_final": self.already_final,
            "events_only": self.events_only, "fallbacks_queued": self.fallbacks,
            "unmatched": len(self.unmatched), "unparseable": len(self.unparseable),
        }


def _by_message_id(session: Session, message_id: str) -> list[Message]:
    bare = message_id.strip("<>")
    return list(session.scalars(
        select(Message)
        .where(Message.provider_message_id.in_([message_id, bare]), Message.channel == "email")
        .order_by(Message.id)
    ))


def _latest_email_to(session: Session, address: str | None) -> Message | None:
    normalized = normalize_email(address) if address else None
    if not normalized:
        return None
    return session.scalar(
        select(Message)
        .where(Message.address == normalized, Message.channel == "email",
               Message.status.not_in(("pending", "skipped")))
        .order_by(Message.id.desc())
        .limit(1)
    )


def _same_address(message: Message, report: RecipientReport) -> bool:
    wanted = {normalize_email(a) for a in (report.original_recipient, report.final_recipient)
              if a}
    return message.address in wanted


def match_recipient(session: Session, dsn: Dsn, report: RecipientReport,
                    by_id: list[Message]) -> tuple[Message | None, str]:
    """The email this recipient report is about, and how it was matched."""
    for message in by_id:
        if _same_address(message, report):
            return message, "message-id"
    if len(by_id) == 1 and len(dsn.recipients) == 1:
        return by_id[0], "message-id"  # forwarded/aliased: the DSN names another address
    for address in (report.original_recipient, report.final_recipient):
        message = _latest_email_to(session, address)
        if message is not None:
            return message, "recipient"
    return None, ""


def _error_message(diagnostic: str | None) -> str | None:
    return diagnostic[:1000] if diagnostic else None


def _apply(session: Session, message: Message, dsn: Dsn, report: RecipientReport,
           matched_by: str, result: ImportReport, configs: dict[int, CampaignConfig]) -> None:
    detail = {"file": dsn.source, "action": report.action, "status_code": report.status,
              "diagnostic": report.diagnostic, "recipient": report.final_recipient,
              "reporting_mta": dsn.reporting_mta, "matched_by": matched_by}
    detail = {k: v for k, v in detail.items() if v is not None}
    if report.action == "failed":
        if events.advance(session, message, "bounced", source="bounce", detail=detail):
            message.error_code = report.status
            message.error_message = _error_message(report.diagnostic)
            result.bounced += 1
        else:
            result.already_final += 1
        if message.status in ("failed", "bounced"):
            config = configs.get(message.campaign_id)
            if config is None:
                config = configs[message.campaign_id] = config_of(
                    session.get(Campaign, message.campaign_id))
            if fallback.plan_fallback(session, config, message) is not None:
                result.fallbacks += 1
                name = session.get(Campaign, message.campaign_id).name
                result.fallbacks_by_campaign[name] = result.fallbacks_by_campaign.get(name, 0) + 1
        return
    # delayed, delivered, relayed, expanded (and anything unknown): an event only.
    at = utcnow()
    events.record(session, source="bounce", kind=(report.action or "unknown")[:32],
                  message=message, detail=detail, applied=False, at=at)
    message.last_event_at = max(message.last_event_at or at, at)
    result.events_only += 1


def import_dsn(session: Session, dsn: Dsn, result: ImportReport,
               configs: dict[int, CampaignConfig]) -> None:
    """Match and apply every recipient report of one DSN."""
    by_id = _by_message_id(session, dsn.message_id) if dsn.message_id else []
    for report in dsn.recipients:
        result.recipients += 1
        message, how = match_recipient(session, dsn, report, by_id)
        if message is None:
            who = report.original_recipient or report.final_recipient or "?"
            result.unmatched.append(f"{dsn.source}: {who}")
            continue
        _apply(session, message, dsn, report, how, result, configs)
    session.flush()


def import_path(session: Session, path: str | Path) -> ImportReport:
    """Import every DSN under ``path`` (file, folder or mbox) in the caller's transaction."""
    result = ImportReport()
    configs: dict[int, CampaignConfig] = {}
    for name, raw in iter_messages(Path(path)):
        result.messages += 1
        if isinstance(raw, Exception):
            result.unparseable.append((name, str(raw) or type(raw).__name__))
            continue
        try:
            dsn = parse_dsn(raw, name)
        except NotADsn as exc:
            result.unparseable.append((name, str(exc)))
            continue
        except Exception as exc:  # a mail parser can trip on anything; report, don't crash
            result.unparseable.append((name, f"cannot parse: {type(exc).__name__}: {exc}"))
            continue
        result.dsns += 1
        import_dsn(session, dsn, result, configs)
    return result
