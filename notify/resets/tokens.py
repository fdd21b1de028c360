"""Reset records and link tokens: one ``PasswordReset`` per contact with exposed passwords and
campaign; a fresh token for each message that carries the link, stored as its SHA-256 only,
so a database leak does not hand out working links.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import (
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from notify import bulk
from notify.campaigns import CampaignConfig, config_of
from notify.db import insert_ignoring_duplicates
from notify.errors import ConfigError
from notify.models import (
    Campaign,
    Contact,
    PasswordReset,
    ResetToken,
    UTCDateTime,
    utcnow,
)
from notify.resets.state import COMPLETED, PENDING, has_passwords
from notify.times import as_utc

# secrets.token_urlsafe(32): 256 random bits, 43 characters of the URL-safe alphabet.
TOKEN_BYTES = 32


def hash_token(raw_token: str) -> str:
    """The stored form of a token: hex SHA-256 (the raw token is never stored)."""
    return hashlib.sha256(raw_token.encode("ascii", "replace")).hexdigest()


def ensure_resets(session: Session, campaign: Campaign) -> int:
    """Create the missing reset records of the campaign's password contacts; returns how many.

    One INSERT ... SELECT ... ON CONFLICT DO NOTHING: the unique (campaign, contact) key skips
    the contacts that already have one, so it is safe to run again or concurrently, and fast
    at a million contacts. (No NOT EXISTS on password_resets: a statement that reads the
    table it fills can turn quadratic on PostgreSQL when the planner thinks it is empty.)
    """
    source = select(
        Contact.campaign_id,
        Contact.id,
        literal(PENDING),
        literal(0),
        literal(utcnow(), UTCDateTime()),
    ).where(Contact.campaign_id == campaign.id, has_passwords())
    columns = ["campaign_id", "contact_id", "status", "links_sent", "created_at"]
    return insert_ignoring_duplicates(session, PasswordReset.__table__, columns, source)


def reset_of(
    session: Session, campaign_id: int, contact_id: int, *, lock: bool = False, create: bool = False
) -> PasswordReset | None:
    """The contact's reset record; created first when asked and passwords were exposed."""
    query = (
        select(PasswordReset)
        .where(PasswordReset.campaign_id == campaign_id, PasswordReset.contact_id == contact_id)
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    reset = session.scalar(query)
    if reset is not None or not create:
        return reset
    source = select(
        Contact.campaign_id,
        Contact.id,
        literal(PENDING),
        literal(0),
        literal(utcnow(), UTCDateTime()),
    ).where(Contact.id == contact_id, Contact.campaign_id == campaign_id, has_passwords())
    columns = ["campaign_id", "contact_id", "status", "links_sent", "created_at"]
    insert_ignoring_duplicates(session, PasswordReset.__table__, columns, source)
    return session.scalar(query)


def issue_token(
    session: Session,
    campaign: Campaign,
    contact_id: int,
    message_id: int | None,
    now: datetime | None = None,
) -> str | None:
    """A fresh reset-link token for one message to this contact, or None when there is no link.

    The raw token (256 random bits, URL-safe) is returned for rendering and never stored: the
    database keeps only its SHA-256. The reset record counts the link and remembers the latest
    expiry. None means: the contact has no exposed password, its reset is already completed,
    or the campaign has no ``reset_url`` to carry a link.
    """
    config = config_of(campaign)
    if not config.reset_url:
        return None
    now = as_utc(now or utcnow())
    reset = reset_of(session, campaign.id, contact_id, create=True)
    if reset is None or reset.status == COMPLETED:
        return None
    raw = secrets.token_urlsafe(TOKEN_BYTES)
    expires = now + timedelta(days=config.reset_token_ttl_days)
    session.add(
        ResetToken(
            reset_id=reset.id,
            message_id=message_id,
            token_hash=hash_token(raw),
            created_at=now,
            expires_at=expires,
        )
    )
    # In SQL, so concurrent workers issuing links to the same contact all count.
    newest = case(
        (
            or_(
                PasswordReset.link_expires_at.is_(None),
                PasswordReset.link_expires_at < literal(expires, UTCDateTime()),
            ),
            literal(expires, UTCDateTime()),
        ),
        else_=PasswordReset.link_expires_at,
    )
    session.execute(
        update(PasswordReset)
        .where(PasswordReset.id == reset.id)
        .values(links_sent=PasswordReset.links_sent + 1, link_expires_at=newest)
        .execution_options(synchronize_session="fetch")
    )
    session.flush()
    return raw


_LINK_COUNT = bulk.Statement(
    "UPDATE password_resets SET links_sent = links_sent + 1, "
    "link_expires_at = CASE WHEN link_expires_at IS NULL OR link_expires_at < :expires "
    "THEN :expires ELSE link_expires_at END WHERE id = :id",
    expires=UTCDateTime(),
)
_tokens = ResetToken.__table__
# The link each message carried (its latest attempt's token), through ix_reset_tokens_message.
_LINKS_OF = (
    select(_tokens.c.reset_id, func.max(_tokens.c.expires_at))
    .where(_tokens.c.message_id.in_(bindparam("messages", expanding=True)))
    .group_by(_tokens.c.message_id, _tokens.c.reset_id)
)
_INSERT_TOKEN = bulk.insert_into(ResetToken.__table__)
_resets = PasswordReset.__table__
# Built once: the engine looks links up for every group of messages it sends.
_RESETS_OF = select(_resets.c.contact_id, _resets.c.id, _resets.c.status).where(
    _resets.c.campaign_id == bindparam("campaign"),
    _resets.c.contact_id.in_(bindparam("contacts", expanding=True)),
)


def issue_tokens(
    session: Session,
    campaign: Campaign,
    requests: list[tuple[int, int | None]],
    now: datetime | None = None,
    raw_tokens: list[str] | None = None,
) -> list[str | None]:
    """:func:`issue_token` for many (contact_id, message_id) at once, in a few statements.

    The send engine calls this for every group of messages it is about to send, so a link
    costs two executemany rows instead of an ORM round trip. Same rules and result per
    request as :func:`issue_token`. ``raw_tokens`` (one per request, from :func:`new_token`)
    are the tokens to store: the engine renders a message with its link before the attempt
    is committed, so that the commit can carry the hash of exactly what is handed over.
    """
    if not requests:
        return []
    config = config_of(campaign)
    if not config.reset_url:
        return [None] * len(requests)
    now = as_utc(now or utcnow())
    expires = now + timedelta(days=config.reset_token_ttl_days)
    contact_ids = {contact_id for contact_id, _ in requests}
    conn = session.connection()
    rows = conn.execute(_RESETS_OF, {"campaign": campaign.id, "contacts": list(contact_ids)}).all()
    found = {contact_id: (reset_id, status) for contact_id, reset_id, status in rows}
    for contact_id in contact_ids - found.keys():  # rare: contact added after planning
        reset = reset_of(session, campaign.id, contact_id, create=True)
        if reset is not None:
            found[contact_id] = (reset.id, reset.status)
    tokens: list[str | None] = []
    token_rows = []
    for n, (contact_id, message_id) in enumerate(requests):
        state = found.get(contact_id)
        if state is None or state[1] == COMPLETED:
            tokens.append(None)
            continue
        raw = raw_tokens[n] if raw_tokens is not None else new_token()
        tokens.append(raw)
        token_rows.append(
            {
                "reset_id": state[0],
                "message_id": message_id,
                "token_hash": hash_token(raw),
                "created_at": now,
                "expires_at": expires,
                "revoked_at": None,
                "used_at": None,
            }
        )
    # Not counted here: an attempt is not a link sent (it may fail before the hand-over).
    # count_links_sent counts it once the provider has the message.
    _INSERT_TOKEN.execute(conn, token_rows)
    return tokens


def new_token() -> str:
    """A fresh raw reset token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def count_links_sent(session: Session, message_ids: list[int]) -> int:
    """Count the reset links of these messages, just handed to their provider; how many.

    ``links_sent`` is what customers were given: one per message handed over with a link
    (however many attempts it took), never an attempt that failed before the hand-over. The
    link's expiry becomes the reset's ``link_expires_at`` when it is the latest.
    """
    if not message_ids:
        return 0
    conn = session.connection()
    rows = conn.execute(_LINKS_OF, {"messages": list(message_ids)}).all()
    _LINK_COUNT.execute(conn, [{"id": reset_id, "expires": expires} for reset_id, expires in rows])
    return len(rows)


def reset_url(config: CampaignConfig, raw_token: str) -> str:
    """The contact's link: the campaign's ``reset_url`` with ``{token}`` replaced."""
    if not config.reset_url:
        raise ConfigError(f"campaign {config.name!r} has no reset_url")
    return config.reset_url.replace("{token}", raw_token)
