"""MIME: a rendered email as the bytes handed to SMTP, and the Message-ID of a message row.

Built by hand rather than through ``email.message`` because the send engine builds one
message in a fraction of a millisecond: headers that repeat across contacts (sender, subject,
date) are folded once and cached; bodies are 7bit when plain ASCII in short lines, else base64.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from datetime import UTC, datetime
from email import policy as email_policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import format_datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import idna

from notify.errors import NotifyError
from notify.templates import one_line

if TYPE_CHECKING:
    from notify.campaigns import CampaignConfig
    from notify.templates import RenderedEmail


class MessageError(NotifyError, ValueError):
    """An email cannot be built: bad recipient or Message-ID."""


_SIMPLE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_MESSAGE_ID = re.compile(r"<[!-=?-~]+@[A-Za-z0-9.-]+>")  # printable ASCII, no '>' inside
_7BIT_TEXT = b"\t\r\n" + bytes(range(0x20, 0x7F))  # what a 7bit text part may hold
MAX_LINE = 998  # RFC 5322: at most 998 characters a line


@lru_cache(maxsize=256)
def _ascii_domain(domain: str) -> str:
    """Domains go on the wire in IDNA (``xn--``) form, as the importer stores them."""
    # Imported here: rendering must not load phonenumbers for the address module's phones.
    from notify.addresses import idna_domain

    try:
        return idna_domain(domain)
    except idna.IDNAError as exc:
        raise MessageError(f"{domain!r} is not a valid domain ({exc})") from None


def _fold(policy: email_policy.EmailPolicy[Any], name: str, value: str) -> bytes:
    # Through the header registry, so non-ASCII becomes RFC 2047 (policy.fold on a plain
    # string would pass it through raw).
    return policy.header_factory(name, value).fold(policy=policy).encode("utf-8")


@lru_cache(maxsize=256)
def _address_header(name: str, display: str, addr: str) -> bytes:
    """A folded address header; RFC 2047 for a non-ASCII name, UTF-8 (RFC 6532) for a
    non-ASCII mailbox (which needs an SMTPUTF8 relay)."""
    if any(c in display + addr for c in "\r\n"):
        raise MessageError(f"{name}: line break in {display or addr!r}")
    local, sep, domain = addr.rpartition("@")
    if not sep or not local:
        raise MessageError(f"{name}: {addr!r} is not an email address")
    try:
        address = Address(display_name=display, addr_spec=f"{local}@{_ascii_domain(domain)}")
    except (ValueError, HeaderParseError) as exc:
        raise MessageError(f"{name}: {addr!r} is not an email address ({exc})") from None
    policy = email_policy.SMTP if local.isascii() else email_policy.SMTPUTF8
    return _fold(policy, name, str(address))


def _to_header(to: str) -> bytes:
    if _SIMPLE_ADDRESS.fullmatch(to):  # the usual case, already normalized by the importer
        return b"To: " + to.encode("ascii") + b"\r\n"
    return _address_header("To", "", to)


@lru_cache(maxsize=1024)
def _subject_header(subject: str) -> bytes:
    # Subjects repeat across contacts: fold and encode each distinct one once.
    return _fold(email_policy.SMTP, "Subject", one_line(subject))


def _encode_part(text: str) -> tuple[bytes, str]:
    """(body with CRLF line ends, Content-Transfer-Encoding): 7bit when it is plain ASCII in
    short lines (readable, the usual case), else base64 (always safe)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    text = text.replace("\n", "\r\n")
    if text.isascii():
        data = text.encode("ascii")
        plain = not data.translate(None, _7BIT_TEXT)  # no control characters left over
        if plain and (len(data) <= MAX_LINE or max(map(len, data.split(b"\r\n"))) <= MAX_LINE):
            return data, "7bit"
    encoded = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n", "base64"


@lru_cache(maxsize=64)
def _date_header(epoch_seconds: int) -> str:
    # The Date header has whole seconds, and a run sends many messages in each one.
    return format_datetime(datetime.fromtimestamp(epoch_seconds, UTC))


def _part(content_type: str, body: bytes, cte: str) -> bytes:
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
    ).encode("ascii") + body


def build_email(
    config: CampaignConfig,
    rendered: RenderedEmail,
    to: str,
    message_id: str,
    *,
    when: datetime | None = None,
) -> bytes:
    """The message as bytes for SMTP DATA (CRLF): multipart/alternative, text then HTML.

    ``to`` is the recipient address (domain in IDNA form; a Unicode domain is converted),
    ``message_id`` the row's :func:`message_id_for`; ``when`` the Date (default now).
    """
    if not _MESSAGE_ID.fullmatch(message_id):
        raise MessageError(f"Message-ID {message_id!r} is not <local@domain>")
    text, text_cte = _encode_part(rendered.text)
    html, html_cte = _encode_part(rendered.html)
    # "=_" cannot occur in base64; a 7bit body is searched (and the boundary lengthened).
    boundary = "=_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
    while f"--{boundary}".encode() in text or f"--{boundary}".encode() in html:
        boundary += "_"
    date_header = _date_header(int((when or datetime.now(UTC)).timestamp()))
    head = [
        _address_header("From", config.sender_name, config.sender_email),
        _to_header(to),
        _address_header("Reply-To", "", config.reply_to) if config.reply_to else b"",
        _subject_header(rendered.subject),
        f"Date: {date_header}\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii"),
    ]
    delimiter = f"--{boundary}\r\n".encode("ascii")
    return b"".join(
        [
            *head,
            delimiter,
            _part("text/plain", text, text_cte),
            b"\r\n",
            delimiter,
            _part("text/html", html, html_cte),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        ]
    )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "campaign"


def message_id_for(config: CampaignConfig, campaign_id: int, row_id: int) -> str:
    """The Message-ID of a message row: the same on every (re)send of that row, so a resend
    after a crash is recognizably the same message and bounces match it."""
    domain = _ascii_domain(config.sender_domain)
    return f"<notify.{campaign_id}.{row_id}.{_slug(config.name)}@{domain}>"


def preview_message_id(config: CampaignConfig, campaign_id: int) -> str:
    """A stand-in Message-ID for previews (the real one needs the message row)."""
    domain = _ascii_domain(config.sender_domain)
    return f"<notify.{campaign_id}.assigned-at-send.{_slug(config.name)}@{domain}>"
