"""`notify bounces import`: RFC 3464 delivery status notifications -> message statuses.

A DSN is a ``multipart/report; report-type=delivery-status`` whose ``message/delivery-status``
part holds one per-message block and one block per recipient (Final-Recipient,
Original-Recipient, Action, Status, Diagnostic-Code). The returned original, whole
(``message/rfc822``) or headers only (``text/rfc822-headers``), carries our Message-ID, which
is the email's ``provider_message_id``.

Anyone can mail a ``multipart/report`` to a public address, and Message-IDs are guessable,
so a DSN is believed only as far as it can be verified:

* **VERP tag.** A campaign with ``bounce_address`` sends each email with its own envelope
  sender, ``local+ID-MAC@domain`` (notify.verp); the DSN comes back to that address
  (Delivered-To, X-Original-To, To, ...). A tag whose MAC verifies identifies one message,
  and the DSN applies to that message only, whatever addresses or Message-ID it names. A
  tag that does not verify is a forgery (or another database's): the DSN is skipped.
* **Recipient.** Without a tag, each recipient report (Original-Recipient, then
  Final-Recipient) is matched only to an email sent to that address in the last 30 days
  (within ``--campaign`` when given): the latest, or the one the returned Message-ID names
  among them. Its event says "matched by recipient".

``Action: failed`` bounces the email (then the email -> SMS fallback applies); ``delayed``,
``delivered``, ``relayed`` and ``expanded`` are recorded as events only. Every value is
cleaned of NUL and clipped to its column. Each DSN is applied in its own savepoint: one that
cannot be applied (forged tag, another campaign's message, a value the database refuses) is
reported with its file, position and reason and skipped, and the others still apply. Files
that are not DSNs, or match nothing, are reported by name, never raised.
"""

from __future__ import annotations

import mailbox
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import policy
from email.header import Header, decode_header
from email.message import Message as EmailMessage
from email.parser import BytesParser, HeaderParser
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from notify import events, fallback, verp
from notify.addresses import email_key
from notify.campaigns import CampaignConfig, config_of
from notify.errors import NotifyError
from notify.models import FAILED_STATUSES, NOT_HANDED_OVER, Campaign, Event, Message, Status, utcnow

ORIGINAL_PARTS = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
)
_UNFOLD = re.compile(r"\r?\n[ \t]+")
_ANGLE_ID = re.compile(r"<[^<>\s]+>")
_XTEXT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
MAX_FILE_BYTES = 50 * 1024 * 1024
RECIPIENT_WINDOW = timedelta(days=30)  # an untagged DSN only matches email this recent
# Where a DSN names the address it was delivered to (the envelope sender of the original),
# most specific first: the local delivery agent's headers, then the DSN's own To, then what
# the reporting MTA copied of the original envelope.
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
MAX_DETAIL = 1000  # characters kept of any one value in an event's detail
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")  # NUL (PostgreSQL refuses it), lone surrogates


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
    envelope: list[str] = field(default_factory=list)  # addresses it was returned to


# --- parsing ---------------------------------------------------------------------------------


def _as_text(value: Any) -> str:
    """A header value as text; raw 8-bit (UTF-8 addresses, RFC 6533) decoded as UTF-8."""
    if isinstance(value, Header):
        return "".join(
            chunk.decode(
                "utf-8" if charset in (None, "unknown-8bit") else charset, errors="replace"
            )
            if isinstance(chunk, bytes)
            else chunk
            for chunk, charset in decode_header(value)
        )
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = _NOT_TEXT.sub("", _UNFOLD.sub(" ", _as_text(value))).strip()
    return text or None


def _code_point(match: re.Match) -> str:
    value = int(match.group(1), 16)
    if value == 0 or 0xD800 <= value <= 0xDFFF or value > 0x10FFFF:
        return "\ufffd"  # not a character a column can hold
    return chr(value)


def _typed_value(value: str | None) -> str | None:
    """``rfc822; user@example.com`` -> ``user@example.com`` (type prefix and <> dropped)."""
    if not value:
        return None
    _, sep, rest = value.partition(";")
    text = (rest if sep else value).strip().strip("<>").strip()
    # utf-8 address type (RFC 6533) may escape characters as \x{HEX}.
    text = _XTEXT.sub(_code_point, text)
    return text or None


def _status_blocks(part: EmailMessage) -> list[EmailMessage]:
    """The header blocks of a message/delivery-status part, however the parser left it."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if not isinstance(block, str)]
    raw = part.get_payload(decode=True)
    text = _decoded(raw).replace("\r\n", "\n")
    blocks = [b for b in re.split(r"\n[ \t]*\n", text.strip()) if b.strip()]
    return [HeaderParser(policy=policy.compat32).parsestr(block + "\n") for block in blocks]


def _decoded(raw: object) -> str:
    """A decoded payload's text (get_payload(decode=True) gives bytes, or None for none)."""
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else ""


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
        if isinstance(payload, list) and payload and not isinstance(payload[0], str):
            found = payload[0].get("Message-ID")
        else:
            headers = HeaderParser(policy=policy.compat32).parsestr(
                _decoded(part.get_payload(decode=True)), headersonly=True
            )
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
        raise NotADsn(
            f"not a delivery status notification ({kind}, no message/delivery-status part)"
        )
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
    return Dsn(
        source,
        _returned_message_id(message, blocks),
        reporting,
        recipients,
        _envelope_addresses(message, blocks),
    )


def _envelope_addresses(message: EmailMessage, blocks: list[EmailMessage]) -> list[str]:
    """Every address the DSN says it was returned to, most specific first."""
    found: list[str] = []
    for name in ENVELOPE_HEADERS:
        found += [text for value in message.get_all(name) or () if (text := _clean(value))]
    for block in blocks[:1]:  # Postfix copies the original envelope sender here
        found += [
            text
            for name in ("X-Postfix-Sender", "Original-Envelope-Sender")
            if (text := _typed_value(_clean(block.get(name))))
        ]
    return found


# --- reading files ------------------------------------------------------------------------------


def _is_mbox(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(5) == b"From "


def iter_messages(path: Path) -> Iterator[tuple[str, int | None, bytes | Exception]]:
    """(file, number, raw bytes) for each message under ``path``: a file, a folder, or an
    mbox (number: the message's place in the mbox; None for a file of one message).

    Unreadable files are yielded with the exception instead of bytes, so the caller can
    report them and carry on.
    """
    if not path.exists():
        raise NotifyError(f"{path}: no such file or folder")
    files = (
        sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if path.is_dir()
        else [path]
    )
    for file in files:
        try:
            if file.stat().st_size > MAX_FILE_BYTES and not _is_mbox(file):
                raise NotADsn(f"larger than {MAX_FILE_BYTES // 2**20} MB: not a bounce")
            if _is_mbox(file):
                box = mailbox.mbox(file, create=False)
                for number, key in enumerate(box.iterkeys(), start=1):
                    yield str(file), number, box.get_bytes(key)
                continue
            yield str(file), None, file.read_bytes()
        except (OSError, NotADsn, mailbox.Error) as exc:
            yield str(file), None, exc


# --- matching and applying ------------------------------------------------------------------


@dataclass
class Skipped:
    """A DSN (or one recipient report of it) that was not applied, and why."""

    file: str
    position: str  # "message 3" (its place in an mbox; 1 for a single file)
    reason: str


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
    verified: int = 0  # recipient reports applied through a verified VERP tag
    by_recipient: int = 0  # recipient reports applied by recipient matching
    fallbacks_by_campaign: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # "file: recipient"
    unparseable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    skipped: list[Skipped] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """Integer counts for --json and the audit record."""
        return {
            "messages": self.messages,
            "dsns": self.dsns,
            "recipients": self.recipients,
            "bounced": self.bounced,
            "already_final": self.already_final,
            "events_only": self.events_only,
            "fallbacks_queued": self.fallbacks,
            "verified_by_tag": self.verified,
            "matched_by_recipient": self.by_recipient,
            "unmatched": len(self.unmatched),
            "unparseable": len(self.unparseable),
            "skipped": len(self.skipped),
        }

    def add(self, other: ImportReport) -> None:
        """Take in the counts of one DSN once it is applied."""
        for name in (
            "recipients",
            "bounced",
            "already_final",
            "events_only",
            "fallbacks",
            "verified",
            "by_recipient",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, n in other.fallbacks_by_campaign.items():
            self.fallbacks_by_campaign[name] = self.fallbacks_by_campaign.get(name, 0) + n
        self.unmatched += other.unmatched


class _Skip(Exception):
    """This DSN must not be applied (the reason is the message)."""


@dataclass
class _Context:
    """What every DSN of one import is judged by."""

    now: datetime
    campaign_id: int | None = None
    campaign_name: str | None = None
    configs: dict[int, CampaignConfig] = field(default_factory=dict)
    _secret: bytes | None = None

    def secret(self, session: Session) -> bytes:
        if self._secret is None:
            self._secret = verp.key(session)
        return self._secret


def _fit(value: str | None, column: Any, limit: int | None = None) -> str | None:
    """``value`` cleaned of NUL and clipped to the column's length (or ``limit``)."""
    if value is None:
        return None
    value = _NOT_TEXT.sub("", value)
    length = getattr(column.type, "length", None) or limit
    return value[:length] if length else value


def _recent_email_to(
    session: Session, report: RecipientReport, returned_id: str | None, ctx: _Context
) -> Message | None:
    """The email this untagged report is about: one sent to its address in the last 30 days
    (in the campaign, if one was named); the one the returned Message-ID names among them,
    else the latest."""
    wanted = {returned_id, returned_id.strip("<>")} if returned_id else set()
    for address in (report.original_recipient, report.final_recipient):
        normalized = email_key(address) if address else None
        if not normalized:
            continue
        query = (
            select(Message)
            .where(
                Message.address == _fit(normalized, Message.address),
                Message.channel == "email",
                Message.status.not_in(NOT_HANDED_OVER),
                Message.sent_at >= ctx.now - RECIPIENT_WINDOW,
            )
            .order_by(Message.id.desc())
            .limit(100)
        )
        if ctx.campaign_id is not None:
            query = query.where(Message.campaign_id == ctx.campaign_id)
        candidates = list(session.scalars(query))
        if candidates:
            named = [m for m in candidates if m.provider_message_id in wanted]
            return (named or candidates)[0]
    return None


def _tagged_message(session: Session, dsn: Dsn, ctx: _Context) -> Message | None:
    """The message a verified VERP tag names; None without a tag; _Skip for a bad one."""
    tags = [tag for address in dsn.envelope if (tag := verp.find_tag(address))]
    if not tags:
        return None
    if len({(t.message_id, t.mac) for t in tags}) > 1:
        raise _Skip(
            "it names two different VERP tags: " + ", ".join(dict.fromkeys(t.address for t in tags))
        )
    tag = tags[0]
    if not verp.verify(ctx.secret(session), tag):
        raise _Skip(
            f"its VERP tag ({tag.address}) does not verify: forged, or from another database"
        )
    message = session.get(Message, tag.message_id)
    if message is None or message.channel != "email":
        raise _Skip(f"its VERP tag names message {tag.message_id}, which is no email here")
    if ctx.campaign_id is not None and message.campaign_id != ctx.campaign_id:
        raise _Skip(f"its VERP tag names an email of another campaign (not {ctx.campaign_name})")
    return message


def _apply(
    session: Session,
    message: Message,
    dsn: Dsn,
    report: RecipientReport,
    matched_by: str,
    result: ImportReport,
    ctx: _Context,
) -> None:
    detail: dict[str, Any] = {
        "file": dsn.source,
        "action": report.action,
        "status_code": report.status,
        "diagnostic": report.diagnostic,
        "recipient": report.final_recipient,
        "reporting_mta": dsn.reporting_mta,
        "matched_by": matched_by,
    }
    if matched_by == "recipient":
        detail["note"] = (
            "matched by recipient: no VERP tag, so the latest email to this "
            "address in the last 30 days"
        )
    detail = {k: v[:MAX_DETAIL] for k, v in detail.items() if v is not None}
    if report.action == "failed":
        if events.advance(
            session, message, Status.BOUNCED, source="bounce", detail=detail, at=ctx.now
        ):
            message.error_code = _fit(report.status, Message.error_code)
            message.error_message = _fit(report.diagnostic, Message.error_message, MAX_DETAIL)
            result.bounced += 1
        else:
            result.already_final += 1
        if message.status in FAILED_STATUSES:
            config = ctx.configs.get(message.campaign_id)
            if config is None:
                config = ctx.configs[message.campaign_id] = config_of(
                    session.get_one(Campaign, message.campaign_id)
                )
            if fallback.plan_fallback(session, config, message) is not None:
                result.fallbacks += 1
                name = session.get_one(Campaign, message.campaign_id).name
                result.fallbacks_by_campaign[name] = result.fallbacks_by_campaign.get(name, 0) + 1
        return
    # delayed, delivered, relayed, expanded (and anything unknown): an event only.
    events.record(
        session,
        source="bounce",
        kind=_fit(report.action or "unknown", Event.kind) or "",
        message=message,
        detail=detail,
        applied=False,
        at=ctx.now,
    )
    message.last_event_at = max(message.last_event_at or ctx.now, ctx.now)
    result.events_only += 1


def import_dsn(session: Session, dsn: Dsn, result: ImportReport, ctx: _Context) -> None:
    """Match and apply every recipient report of one DSN (see the module's rules)."""
    tagged = _tagged_message(session, dsn, ctx)
    for report in dsn.recipients:
        result.recipients += 1
        if tagged is not None:
            _apply(session, tagged, dsn, report, "verp", result, ctx)
            result.verified += 1
            continue
        message = _recent_email_to(session, report, dsn.message_id, ctx)
        if message is None:
            who = report.original_recipient or report.final_recipient or "?"
            result.unmatched.append(f"{dsn.source}: {who}")
            continue
        _apply(session, message, dsn, report, "recipient", result, ctx)
        result.by_recipient += 1
    session.flush()


def _refusal(exc: SQLAlchemyError) -> str:
    """Why the database refused a DSN, without the statement or its values (contact data)."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0][:200]
    return f"the database refused it ({type(orig).__name__}: {first})"


def import_path(
    session: Session,
    path: str | Path,
    *,
    campaign: Campaign | None = None,
    now: datetime | None = None,
) -> ImportReport:
    """Import every DSN under ``path`` (file, folder or mbox) in the caller's transaction.

    ``campaign`` limits matching to its emails; ``now`` is the clock the 30-day recipient
    window is measured by (tests inject it). Each DSN is applied in a savepoint: one that
    cannot be applied is reported in ``skipped`` and the others still apply.
    """
    result = ImportReport()
    ctx = _Context(
        now=now or utcnow(),
        campaign_id=campaign.id if campaign else None,
        campaign_name=campaign.name if campaign else None,
    )
    for file, number, raw in iter_messages(Path(path)):
        result.messages += 1
        name = f"{file}#{number}" if number else file
        position = f"message {number or 1}"
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
        one = ImportReport()
        try:
            with session.begin_nested():
                import_dsn(session, dsn, one, ctx)
        except _Skip as exc:
            result.skipped.append(Skipped(file, position, str(exc)))
            continue
        except SQLAlchemyError as exc:
            result.skipped.append(Skipped(file, position, _refusal(exc)))
            continue
        result.add(one)
    return result
