"""VERP: a return path per email, so a bounce proves which message it is about.

With ``bounce_address = "bounces@acme.example"`` in the campaign, the envelope sender (SMTP
MAIL FROM, where delivery status notifications go) of message row 1234 is
``bounces+1234-<mac>@acme.example``, the MAC being the first 80 bits of
HMAC-SHA256(key, "notify-verp:1234") in hex. A DSN delivered to such an address is about
that message and no other: its tag can only have come from us, or from someone who saw that
one message's envelope (its recipient's mail system).

The key is a random per-database secret stored in the database (``secrets`` row ``verp``,
made by migration 0010). Chosen over deriving it from NOTIFY_WEBHOOK_SECRET because every
worker and every ``bounces import`` already share the database and nothing else, and because
rotating the webhook secret must not orphan the tags of mail already sent. Whoever can read
the database can forge tags, but could also change the statuses directly.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from notify.errors import NotifyError
from notify.models import Secret

SECRET_NAME = "verp"
MAC_HEX = 20  # 80 bits: forging one needs ~2**79 guesses, each a mail to our bounce box
# bounces + "+" + up to 19 digits + "-" + MAC must fit the 64 characters of a local part.
MAX_BASE_LOCAL = 64 - 1 - 19 - 1 - MAC_HEX
_TAGGED = re.compile(
    rf"(?P<local>[^@\s<>+]+)\+(?P<id>\d{{1,19}})-(?P<mac>[0-9a-f]{{{MAC_HEX}}})"
    r"@(?P<domain>[^@\s<>]+)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Tag:
    """A tag read from an address: ``bounces+1234-<mac>@acme.example``."""

    address: str  # the whole tagged address, lower-cased
    base: str  # bounces@acme.example
    message_id: int
    mac: str


def key(session: Session) -> bytes:
    """The database's VERP key; a one-line error if the schema predates it."""
    value = session.scalar(select(Secret.value).where(Secret.name == SECRET_NAME))
    if not value:
        raise NotifyError("this database has no VERP key; upgrade it with: notify init")
    return value.encode("ascii")


@lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    # The key schedule once per key: each message then costs a copy and one update.
    return hmac.new(secret, b"notify-verp:", hashlib.sha256)


def _mac(secret: bytes, message_id: int) -> str:
    mac = _keyed(secret).copy()
    mac.update(b"%d" % message_id)
    return mac.hexdigest()[:MAC_HEX]


def envelope_sender(bounce_address: str, secret: bytes, message_id: int) -> str:
    """The MAIL FROM of message row ``message_id``: ``local+ID-MAC@domain``."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{message_id}-{_mac(secret, message_id)}@{domain}"


def find_tag(address: str) -> Tag | None:
    """The tag in ``address`` (any text holding one, e.g. ``<x+1-..@d>``), or None."""
    found = _TAGGED.search(address or "")
    if found is None:
        return None
    return Tag(
        found.group(0).lower(),
        f"{found['local']}@{found['domain']}".lower(),
        int(found["id"]),
        found["mac"].lower(),
    )


def verify(secret: bytes, tag: Tag) -> bool:
    """True when ``tag`` was made with this database's key (constant-time comparison)."""
    return hmac.compare_digest(_mac(secret, tag.message_id), tag.mac)
