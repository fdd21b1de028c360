"""Forced password resets: reset records, link tokens (hash only), completions, reminders.

Every contact whose exposures include ``passwords`` has one ``PasswordReset`` per campaign.
Each message that carries the reset link gets its own fresh token; only its SHA-256 is stored,
so a database leak does not hand out working links. Any unexpired, unrevoked token of the
contact completes the reset, once, and revokes the others.

Completions arrive three ways, all through :func:`complete`: a link token (the identity
provider's webhook), or the contact's key or email (webhook or the ``resets complete`` CSV).
Errors never change anything: every check runs before the first write.

Campaign resolution for the webhook: a token identifies its campaign by itself; for ``key`` or
``email`` the body may name a ``campaign``; without it, the key or email must match a contact
with exposed passwords in exactly one campaign (several campaigns -> 400, none -> 404).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import (
    ColumnElement,
    Row,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from notify import bulk, csvsafe, events
from notify.addresses import email_key
from notify.campaigns import CampaignConfig, config_of
from notify.config import Settings
from notify.db import rowcount
from notify.errors import ConfigError, NotifyError
from notify.exposures import squash
from notify.models import (
    CHANNELS,
    REACHED_STATUSES,
    Campaign,
    Contact,
    Event,
    Message,
    PasswordReset,
    ResetToken,
    UTCDateTime,
    utcnow,
)
from notify.times import as_utc, iso_utc, parse_iso

PENDING = "pending"
COMPLETED = "completed"
EXPIRED = "expired"  # derived, never stored: pending and every link has expired

EXPORT_COLUMNS = (
    "campaign", "contact_key", "email", "phone", "reset_status", "reset_completed_at",
    "links_sent", "link_expires_at",
)
SIGNATURE_HEADER = "X-Notify-Signature"

# secrets.token_urlsafe(32): 256 random bits, 43 characters of the URL-safe alphabet.
TOKEN_BYTES = 32
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16,512}$")
_BATCH = 500

# A webhook completion is judged at receipt (issue 13): the provider's ``completed_at`` may
# run ahead of our clock by this much (clock skew), and before the link's issue by as much.
CLOCK_SKEW = timedelta(minutes=5)
# ... and may lag its receipt by at most this (a provider retrying for a day is plausible;
# a completion claimed for last month is a replayed or forged body).
MAX_COMPLETION_AGE = timedelta(hours=24)


# --------------------------------------------------------------------------- helpers


def hash_token(raw_token: str) -> str:
    """The stored form of a token: hex SHA-256 (the raw token is never stored)."""
    return hashlib.sha256(raw_token.encode("ascii", "replace")).hexdigest()


def iso(value: datetime | None) -> str:
    """ISO-8601 UTC to the second with a Z (``2026-11-22T10:00:00Z``), as the other exports;
    empty for None."""
    return iso_utc(value) or ""


def has_passwords(exposures: ColumnElement[str] | Any = Contact.exposures) -> ColumnElement[bool]:
    """SQL condition: the stored ``;``-joined exposures include ``passwords``."""
    return (literal(";") + exposures + literal(";")).like("%;passwords;%")


def _exposes_passwords(stored: str | None) -> bool:
    return "passwords" in (stored or "").split(";")


def _insert(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can skip rows hitting a unique constraint (both dialects support it)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)  # notify supports SQLite and PostgreSQL only


def _insert_ignoring_duplicates(session: Session, table, columns: list[str], source) -> int:
    stmt = _insert(session, table).from_select(columns, source).on_conflict_do_nothing()
    # rowcount of an INSERT is only kept when asked for (SQLAlchemy 2.x).
    return rowcount(session.execute(stmt.execution_options(preserve_rowcount=True)))


def status_expression(now: datetime) -> ColumnElement[str]:
    """SQL for the reported status (pending | completed | expired) of a joined reset row.

    Shared with the exports and reports, so every place agrees on what "expired" means: a
    pending reset whose newest link expired before ``now``. A contact with exposed passwords
    but no reset row yet is ``pending``.
    """
    return case(
        (PasswordReset.status == COMPLETED, literal(COMPLETED)),
        (
            and_(PasswordReset.link_expires_at.is_not(None),
                 PasswordReset.link_expires_at < literal(now, UTCDateTime())),
            literal(EXPIRED),
        ),
        else_=literal(PENDING),
    )


def counts(session: Session, campaign: Campaign, now: datetime | None = None) -> dict[str, int]:
    """How many resets are pending, completed and expired (for ``notify status``)."""
    now = now or utcnow()
    status = status_expression(now)
    rows = session.execute(
        select(status, func.count())
        .select_from(PasswordReset)
        .where(PasswordReset.campaign_id == campaign.id)
        .group_by(status)
    )
    result = {PENDING: 0, COMPLETED: 0, EXPIRED: 0}
    result.update({name: int(n) for name, n in rows})
    return result


# --------------------------------------------------------------------------- records, tokens


def ensure_resets(session: Session, campaign: Campaign) -> int:
    """Create the missing reset records of the campaign's password contacts; returns how many.

    One INSERT ... SELECT ... ON CONFLICT DO NOTHING: the unique (campaign, contact) key skips
    the contacts that already have one, so it is safe to run again or concurrently, and fast
    at a million contacts. (No NOT EXISTS on password_resets: a statement that reads the
    table it fills can turn quadratic on PostgreSQL when the planner thinks it is empty.)
    """
    source = select(
        Contact.campaign_id, Contact.id, literal(PENDING), literal(0),
        literal(utcnow(), UTCDateTime()),
    ).where(Contact.campaign_id == campaign.id, has_passwords())
    columns = ["campaign_id", "contact_id", "status", "links_sent", "created_at"]
    return _insert_ignoring_duplicates(session, PasswordReset.__table__, columns, source)


def _reset_of(session: Session, campaign_id: int, contact_id: int, *, lock: bool = False,
              create: bool = False) -> PasswordReset | None:
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
        Contact.campaign_id, Contact.id, literal(PENDING), literal(0),
        literal(utcnow(), UTCDateTime()),
    ).where(Contact.id == contact_id, Contact.campaign_id == campaign_id, has_passwords())
    columns = ["campaign_id", "contact_id", "status", "links_sent", "created_at"]
    _insert_ignoring_duplicates(session, PasswordReset.__table__, columns, source)
    return session.scalar(query)


def issue_token(session: Session, campaign: Campaign, contact_id: int, message_id: int | None,
                now: datetime | None = None) -> str | None:
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
    reset = _reset_of(session, campaign.id, contact_id, create=True)
    if reset is None or reset.status == COMPLETED:
        return None
    raw = secrets.token_urlsafe(TOKEN_BYTES)
    expires = now + timedelta(days=config.reset_token_ttl_days)
    session.add(ResetToken(reset_id=reset.id, message_id=message_id, token_hash=hash_token(raw),
                           created_at=now, expires_at=expires))
    # In SQL, so concurrent workers issuing links to the same contact all count.
    newest = case(
        (or_(PasswordReset.link_expires_at.is_(None),
             PasswordReset.link_expires_at < literal(expires, UTCDateTime())),
         literal(expires, UTCDateTime())),
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
    expires=UTCDateTime())
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
_RESETS_OF = (
    select(_resets.c.contact_id, _resets.c.id, _resets.c.status)
    .where(_resets.c.campaign_id == bindparam("campaign"),
           _resets.c.contact_id.in_(bindparam("contacts", expanding=True)))
)


def issue_tokens(session: Session, campaign: Campaign,
                 requests: list[tuple[int, int | None]], now: datetime | None = None,
                 raw_tokens: list[str] | None = None) -> list[str | None]:
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
    rows = conn.execute(_RESETS_OF, {"campaign": campaign.id,
                                     "contacts": list(contact_ids)}).all()
    found = {contact_id: (reset_id, status) for contact_id, reset_id, status in rows}
    for contact_id in contact_ids - found.keys():  # rare: contact added after planning
        reset = _reset_of(session, campaign.id, contact_id, create=True)
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
        token_rows.append({"reset_id": state[0], "message_id": message_id,
                           "token_hash": hash_token(raw), "created_at": now,
                           "expires_at": expires, "revoked_at": None, "used_at": None})
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
    _LINK_COUNT.execute(conn, [{"id": reset_id, "expires": expires}
                               for reset_id, expires in rows])
    return len(rows)


def reset_url(config: CampaignConfig, raw_token: str) -> str:
    """The contact's link: the campaign's ``reset_url`` with ``{token}`` replaced."""
    if not config.reset_url:
        raise ConfigError(f"campaign {config.name!r} has no reset_url")
    return config.reset_url.replace("{token}", raw_token)


# --------------------------------------------------------------------------- completions


@dataclass(frozen=True)
class CompletionResult:
    """Outcome of one completion: an HTTP-style status and a message without secrets."""

    status: int
    message: str
    campaign: str | None = None
    contact_key: str | None = None
    completed_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    def body(self) -> dict[str, Any]:
        """The webhook's JSON answer (never the token)."""
        if self.ok:
            return {"status": COMPLETED, "campaign": self.campaign,
                    "contact_key": self.contact_key, "completed_at": iso(self.completed_at)}
        return {"status": "error", "error": self.message}


@dataclass
class _Target:
    campaign: Campaign
    contact_id: int
    contact_key: str
    reset: PasswordReset
    token: ResetToken | None = None


def _fail(status: int, message: str) -> CompletionResult:
    return CompletionResult(status=status, message=message)


def complete(session: Session, campaign: Campaign | None, *, token: str | None = None,
             key: str | None = None, email: str | None = None, completed_at: datetime,
             source: str, received_at: datetime | None = None) -> CompletionResult:
    """Mark a contact's reset completed, by link token, key or email; once.

    Status 200 completed; 400 bad request (not exactly one of token/key/email, ambiguous
    match); 404 unknown; 409 already completed or link revoked/used; 410 link expired at
    ``completed_at``. Nothing is written unless the result is 200. ``campaign`` may be None:
    a token finds its own, a key/email must match in exactly one campaign. ``source``
    (``webhook``, ``import``...) is kept as ``completed_via`` and in the event.

    ``received_at`` (the webhook's time of receipt) makes the link's expiry judged at
    receipt, not at the claimed ``completed_at``, and a ``completed_at`` more than
    :data:`CLOCK_SKEW` before the link was issued a 400: a backdated body cannot complete an
    expired link. Both times are stored.
    """
    given = [name for name, value in (("token", token), ("key", key), ("email", email))
             if value not in (None, "")]
    if len(given) != 1:
        return _fail(400, "give exactly one of token, key or email")
    completed_at = as_utc(completed_at)
    received = as_utc(received_at) if received_at is not None else None
    if token:
        target = _target_by_token(session, campaign, token)
    else:
        target = _target_by_identity(session, campaign, key=key, email=email)
    if isinstance(target, CompletionResult):
        return target
    problem = _check_target(target, completed_at, received)
    if problem is not None:
        return problem
    _apply(session, target, completed_at, source, by=given[0], received_at=received)
    return CompletionResult(200, "password reset completed", campaign=target.campaign.name,
                            contact_key=target.contact_key, completed_at=completed_at)


def _target_by_token(session: Session, campaign: Campaign | None,
                     token: str) -> _Target | CompletionResult:
    if not isinstance(token, str) or not _TOKEN_SHAPE.match(token):
        return _fail(404, "unknown token")
    row = session.execute(
        select(ResetToken.id, ResetToken.reset_id, PasswordReset.campaign_id,
               PasswordReset.contact_id)
        .join(PasswordReset, PasswordReset.id == ResetToken.reset_id)
        .where(ResetToken.token_hash == hash_token(token))
    ).first()
    if row is None or (campaign is not None and row.campaign_id != campaign.id):
        return _fail(404, "unknown token")
    # Lock the reset first: completions of one contact then run one after the other, and the
    # token re-read below sees any revocation the previous one made.
    reset = _reset_of(session, row.campaign_id, row.contact_id, lock=True)
    token_row = session.scalar(
        select(ResetToken).where(ResetToken.id == row.id)
        .execution_options(populate_existing=True)
    )
    if reset is None:  # a token's reset is never deleted
        return _fail(404, "unknown token")
    owner = campaign if campaign is not None else session.get_one(Campaign, row.campaign_id)
    key = session.execute(select(Contact.key).where(Contact.id == row.contact_id)).scalar_one()
    return _Target(owner, row.contact_id, key, reset, token_row)


def _contacts_matching(session: Session, campaign: Campaign | None, *, key: str | None,
                       email: str | None) -> list[Row[int, int, str, str]]:
    """(contact id, campaign id, key, exposures) of contacts with this key or email."""
    base = select(Contact.id, Contact.campaign_id, Contact.key, Contact.exposures)
    if campaign is not None:
        base = base.where(Contact.campaign_id == campaign.id)
    if key is not None:
        return list(session.execute(base.where(Contact.key == key.strip())))
    wanted = email_key(email or "")
    if wanted is None:
        return []
    rows = list(session.execute(base.where(Contact.email == wanted)))
    if not rows:  # the provider may spell the local part in another case
        rows = list(session.execute(base.where(func.lower(Contact.email) == wanted.lower())))
    return rows


def _target_by_identity(session: Session, campaign: Campaign | None, *, key: str | None,
                        email: str | None) -> _Target | CompletionResult:
    what = "key" if key else "email"
    if not isinstance(key if key else email, str):
        return _fail(400, f"{what} must be a string")
    rows = _contacts_matching(session, campaign, key=key if key else None,
                              email=email if not key else None)
    if not rows:
        return _fail(404, f"no contact with this {what}")
    rows = [row for row in rows if _exposes_passwords(row.exposures)]
    if not rows:
        return _fail(404, f"the contact with this {what} has no exposed password to reset")
    campaign_ids = {row.campaign_id for row in rows}
    if len(campaign_ids) > 1:
        return _fail(400, f"this {what} matches contacts in {len(campaign_ids)} campaigns; "
                     "name the campaign")
    if len(rows) > 1:
        return _fail(400, f"this {what} matches {len(rows)} contacts; use their key")
    row = rows[0]
    owner = campaign if campaign is not None else session.get_one(Campaign, row.campaign_id)
    # Created here when the engine has not made it yet: a pending reset, completed below.
    reset = _reset_of(session, row.campaign_id, row.id, lock=True, create=True)
    if reset is None:  # not created only without exposed passwords, checked above
        return _fail(404, f"the contact with this {what} has no exposed password to reset")
    return _Target(owner, row.id, row.key, reset)


def _check_target(target: _Target, completed_at: datetime,
                  received: datetime | None) -> CompletionResult | None:
    if target.reset.status == COMPLETED:
        return _fail(409, "password reset already completed")
    token = target.token
    if token is not None:
        if token.revoked_at is not None or token.used_at is not None:
            return _fail(409, "this link was revoked")
        if received is not None and completed_at < token.created_at - CLOCK_SKEW:
            return _fail(400, "completed_at is before this link was issued")
        if token.expires_at <= (received or completed_at):
            return _fail(410, "this link has expired")
    return None


def _apply(session: Session, target: _Target, completed_at: datetime, source: str,
           *, by: str, received_at: datetime | None = None) -> None:
    received = received_at or utcnow()
    reset = target.reset
    reset.status = COMPLETED
    reset.completed_at = completed_at
    reset.completion_received_at = received
    reset.completed_via = source
    if target.token is not None:
        target.token.used_at = completed_at
    _revoke_open_tokens(session, [reset.id], utcnow())
    events.record(session, source="reset", kind="reset_completed",
                  campaign_id=target.campaign.id, contact_id=target.contact_id,
                  at=completed_at, detail={"via": source, "by": by, "received_at": iso(received)})
    session.flush()


def _revoke_open_tokens(session: Session, reset_ids: list[int], at: datetime) -> None:
    session.execute(
        update(ResetToken)
        .where(ResetToken.reset_id.in_(reset_ids), ResetToken.revoked_at.is_(None),
               ResetToken.used_at.is_(None))
        .values(revoked_at=at)
        .execution_options(synchronize_session="fetch")
    )


# --------------------------------------------------------------------------- webhook


def signature_for(secret: str, body: bytes) -> str:
    """The ``X-Notify-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | None, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the HMAC-SHA256 of ``body`` under ``secret``.

    Compared in constant time. Without a configured secret nothing is accepted: an
    unauthenticated completion endpoint would let anyone mark resets done.
    """
    if not secret or not header:
        return False
    expected = signature_for(secret, body).encode("ascii")
    given = header.strip()
    scheme, sep, digest = given.partition("=")
    if not sep or scheme.strip().lower() != "sha256":
        return False
    given_bytes = ("sha256=" + digest.strip().lower()).encode("utf-8", "replace")
    return hmac.compare_digest(expected, given_bytes)


def handle_webhook(session: Session, settings: Settings, body: bytes,
                   signature: str | None,
                   received_at: datetime | None = None) -> tuple[int, dict[str, Any]]:
    """POST /webhooks/resets: verify, parse, complete; returns (HTTP status, JSON body).

    Body: ``{"token": ..., "completed_at": "<ISO-8601>"}``, or ``key``/``email`` in place of
    ``token`` with an optional ``campaign`` name. ``completed_at`` defaults to the time of
    receipt ``received_at`` (now when not given; the server passes the time the request
    arrived). 403 bad/missing signature, 400 malformed or a ``completed_at`` implausible at
    receipt (more than 5 minutes ahead, more than 24 hours before, or before the link was
    issued), 404 unknown, 409 already completed or revoked, 410 expired at receipt, 200
    completed. Nothing is written on any error; the caller commits on 2xx.
    """
    received = as_utc(received_at) if received_at is not None else utcnow()
    if not settings.webhook_secret:
        return 403, {"status": "error",
                     "error": "reset webhook disabled: NOTIFY_WEBHOOK_SECRET is not set"}
    if not verify_signature(settings.webhook_secret, body, signature):
        return 403, {"status": "error", "error": f"missing or invalid {SIGNATURE_HEADER}"}
    request = _parse_webhook_body(body, received)
    if isinstance(request, CompletionResult):
        return request.status, request.body()
    fields, completed_at, campaign_name = request
    if completed_at > received + CLOCK_SKEW:
        return 400, _fail(400, "completed_at is in the future").body()
    if completed_at < received - MAX_COMPLETION_AGE:
        return 400, _fail(400, "completed_at is more than 24 hours before its receipt").body()
    campaign = None
    if campaign_name is not None:
        campaign = session.scalar(select(Campaign).where(Campaign.name == campaign_name))
        if campaign is None:
            return 404, {"status": "error", "error": "unknown campaign"}
    result = complete(session, campaign, completed_at=completed_at, source="webhook",
                      received_at=received, **fields)
    return result.status, result.body()


def _parse_webhook_body(
    body: bytes, received: datetime,
) -> tuple[dict[str, str], datetime, str | None] | CompletionResult:
    # A signed body is still untrusted input (a leaked secret, a buggy provider): deep nesting
    # (RecursionError), bad UTF-8, NUL or lone surrogates are a 400, never a 500.
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _fail(400, "body is not JSON")
    if not isinstance(payload, dict):
        return _fail(400, "body must be a JSON object")
    for name in ("token", "key", "email", "completed_at", "campaign"):
        problem = _bad_text(name, payload.get(name))
        if problem:
            return _fail(400, problem)
    fields: dict[str, str] = {name: payload[name] for name in ("token", "key", "email")
                              if payload.get(name) not in (None, "")}
    if len(fields) != 1:
        return _fail(400, "give exactly one of token, key or email")
    raw_time = payload.get("completed_at")
    completed_at: datetime | None = received
    if raw_time is not None:
        try:
            completed_at = parse_iso(raw_time)
        except (ValueError, OverflowError):  # year 1 with an offset overflows in UTC
            completed_at = None
    if completed_at is None:
        return _fail(400, "completed_at must be an ISO-8601 date-time")
    campaign_name = payload.get("campaign")
    return fields, completed_at, campaign_name or None


def _bad_text(name: str, value: Any) -> str | None:
    """Why a webhook field is unusable (not a string, too long, NUL, not UTF-8), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        return f"{name} must be a string"
    if len(value) > 512:
        return f"{name} is longer than 512 characters"
    if "\x00" in value:
        return f"{name} contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{name} is not valid UTF-8"
    return None


# --------------------------------------------------------------------------- export


def export_resets(session: Session, campaign: Campaign, path: str | Path,
                  now: datetime | None = None,
                  progress: Callable[[int], None] | None = None) -> int:
    """Write who must reset (and who did) as CSV; returns the number of rows.

    Columns: campaign, contact_key, email, phone, reset_status (pending|completed|expired),
    reset_completed_at, links_sent, link_expires_at. Every contact with exposed passwords is
    listed, even before a reset record exists. Streamed in batches, written to a temporary
    file renamed into place at the end, so a reader never sees half a file.
    """
    return write_csv(path, EXPORT_COLUMNS, export_rows(session, campaign, now), progress)


def export_rows(session: Session, campaign: Campaign,
                now: datetime | None = None) -> Iterator[tuple]:
    """The rows of :func:`export_resets` (cells not yet neutralized), streamed from the
    database: the CLI writes them to a file, the web view to a download."""
    now = as_utc(now or utcnow())
    query = (
        select(Contact.key, Contact.email, Contact.phone, status_expression(now),
               PasswordReset.completed_at, PasswordReset.links_sent,
               PasswordReset.link_expires_at)
        .select_from(Contact)
        .outerjoin(PasswordReset, and_(PasswordReset.campaign_id == Contact.campaign_id,
                                       PasswordReset.contact_id == Contact.id))
        .where(Contact.campaign_id == campaign.id,
               or_(PasswordReset.id.is_not(None), has_passwords()))
        .order_by(Contact.id)
        .execution_options(yield_per=1000)
    )
    return (
        (campaign.name, key, email, phone, status, iso(done), sent or 0, iso(expires))
        for key, email, phone, status, done, sent, expires in session.execute(query)
    )


PROGRESS_EVERY = 1000  # rows between two progress calls of an export


def write_csv(path: str | Path, header: Iterable[str], rows: Iterable[Iterable[Any]],
              progress: Callable[[int], None] | None = None) -> int:
    """Write rows (cells neutralized) atomically (:func:`notify.csvsafe.atomic_csv`: a temp
    file in the same folder, renamed into place once complete, or ``-`` for standard
    output); returns the row count. ``progress`` gets the rows written every 1000 rows."""
    count = 0
    with csvsafe.atomic_csv(path) as writer:
        writer.writerow(list(header))
        for row in rows:
            writer.writerow([csvsafe.neutralize(cell) for cell in row])
            count += 1
            if progress is not None and not count % PROGRESS_EVERY:
                progress(count)
    return count


# --------------------------------------------------------------------------- import


_KEY_HEADERS = {squash(n) for n in (
    "key", "contact key", "id", "customer id", "client id", "account id", "account", "user id",
)}
_EMAIL_HEADERS = {squash(n) for n in ("email", "e-mail", "email address", "mail")}
_TIME_HEADERS = {squash(n) for n in (
    "completed_at", "completed", "completed at", "completion time", "reset at",
    "reset completed at", "reset_completed_at", "reset time", "timestamp", "date",
)}


@dataclass
class CompletionsSummary:
    """Counts of one ``resets complete`` run (also its ``--json`` output)."""

    read: int = 0
    completed: int = 0
    already_completed: int = 0
    rejected: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "completed": self.completed,
                "already_completed": self.already_completed, "rejected": self.rejected,
                "dry_run": self.dry_run}

    def lines(self) -> list[str]:
        verb = "would complete" if self.dry_run else "completed"
        return [
            f"Read {self.read} row(s): {verb} {self.completed} reset(s), "
            f"{self.already_completed} already completed, {self.rejected} rejected."
        ]


@dataclass
class _Row:
    line: int
    cells: list[str]
    key: str = ""
    email: str = ""
    completed_at: datetime | None = None
    reason: str | None = None
    contact_id: int | None = None


@dataclass
class _Columns:
    header: list[str]
    key: int | None
    email: int | None
    time: int


@dataclass
class _Rejects:
    """Rejected rows streamed to a temp file that replaces ``path`` at the end."""

    path: Path | None
    _handle: Any = None
    _writer: Any = None

    def open(self, header: list[str]) -> None:
        if self.path is None:
            return
        try:
            self._handle = tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", newline="", dir=self.path.parent or Path("."),
                prefix=f".{self.path.name}.", suffix=".tmp", delete=False,
            )
        except OSError as exc:
            raise NotifyError(f"{self.path}: cannot write: {exc.strerror}") from None
        self._writer = csv.writer(self._handle)
        self._writer.writerow(["line", "reason", *header])

    def add(self, row: _Row) -> None:
        if self._writer is not None:
            self._writer.writerow([row.line, row.reason,
                                   *(csvsafe.neutralize(c) for c in row.cells)])

    def finish(self) -> None:
        if self._handle is not None and self.path is not None:
            self._handle.close()
            os.replace(self._handle.name, self.path)
            self._handle = None

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            Path(self._handle.name).unlink(missing_ok=True)
            self._handle = None


def import_completions(session: Session, campaign: Campaign, path: str | Path, *,
                       rejects_path: str | Path | None = None,
                       dry_run: bool = False) -> CompletionsSummary:
    """Apply the identity provider's completions (CSV: key or email, completed_at).

    Rows that cannot be applied are rejected with their line number (header = line 1) and a
    reason; rows of contacts already completed are counted, not rejected, so running the same
    file again completes nothing new. All-or-nothing: the work runs in a savepoint that is
    rolled back when the file turns out unreadable halfway, or for ``dry_run``.
    """
    source = Path(path)
    rejects = _Rejects(Path(rejects_path) if rejects_path else None)
    summary = CompletionsSummary(dry_run=dry_run)
    session.flush()
    savepoint = session.begin_nested()
    try:
        with _open_text(source) as handle:
            reader = csv.reader(handle, dialect=_sniff(source))
            columns = _columns(source, reader)
            rejects.open(columns.header)
            done: set[int] = set()
            for batch in _batches(_rows(source, reader, columns)):
                _import_batch(session, campaign, batch, summary, done, rejects)
    except BaseException:
        savepoint.rollback()
        rejects.discard()
        raise
    if dry_run:
        savepoint.rollback()
    else:
        savepoint.commit()
    rejects.finish()
    return summary


def _open_text(path: Path) -> TextIO:
    try:
        # Strict decoding: a bad byte anywhere fails the whole import (nothing applied).
        return open(path, encoding="utf-8-sig", errors="strict", newline="")
    except FileNotFoundError:
        raise NotifyError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NotifyError(f"{path}: is a folder, not a CSV file") from None
    except OSError as exc:
        raise NotifyError(f"{path}: cannot read: {exc.strerror}") from None


def _sniff(path: Path) -> type[csv.Dialect] | str:
    with open(path, "rb") as raw:
        sample = codecs.decode(raw.read(64 * 1024), "utf-8", "replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return "excel"


def _columns(path: Path, reader: Iterator[list[str]]) -> _Columns:
    try:
        header = next(reader)
    except StopIteration:
        raise NotifyError(f"{path}: the file is empty (expected a header line)") from None
    except UnicodeDecodeError:
        raise NotifyError(f"{path}: not UTF-8 text (line 1)") from None
    names = [squash(name) for name in header]

    def find(choices: set[str]) -> int | None:
        return next((i for i, name in enumerate(names) if name in choices), None)

    key, email, time = find(_KEY_HEADERS), find(_EMAIL_HEADERS), find(_TIME_HEADERS)
    if key is None and email is None:
        raise NotifyError(f"{path}: no key or email column (found: {', '.join(header)})")
    if time is None:
        raise NotifyError(f"{path}: no completed_at column (found: {', '.join(header)})")
    return _Columns(header=header, key=key, email=email, time=time)


def _rows(path: Path, reader, columns: _Columns) -> Iterator[_Row]:
    """Data rows with their first line number; each parsed or given a reject reason."""
    line = 2
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise NotifyError(f"{path}: not UTF-8 text (after line {line - 1}); "
                              "nothing was applied") from None
        except csv.Error as exc:
            raise NotifyError(f"{path}, line {line}: {exc}; nothing was applied") from None
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        yield _parse_row(start, cells, columns)


def _cell(cells: list[str], index: int | None) -> str:
    return cells[index].strip() if index is not None and index < len(cells) else ""


def _parse_row(line: int, cells: list[str], columns: _Columns) -> _Row:
    row = _Row(line=line, cells=cells, key=_cell(cells, columns.key),
               email=_cell(cells, columns.email))
    text = _cell(cells, columns.time)
    if not row.key and not row.email:
        row.reason = "no key or email"
    elif not text:
        row.reason = "completed_at is empty"
    else:
        try:
            row.completed_at = parse_iso(text)
        except ValueError:
            row.reason = f"completed_at {text!r} is not an ISO-8601 date or time"
    return row


def _batches(rows: Iterator[_Row]) -> Iterator[list[_Row]]:
    batch: list[_Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _import_batch(session: Session, campaign: Campaign, batch: list[_Row],
                  summary: CompletionsSummary, done: set[int], rejects: _Rejects) -> None:
    summary.read += len(batch)
    _resolve_contacts(session, campaign, [r for r in batch if r.reason is None])
    wanted = {r.contact_id for r in batch if r.reason is None}
    states = _locked_resets(session, campaign, wanted)
    completing: list[tuple[_Row, int]] = []
    for row in batch:
        contact_id = row.contact_id
        if row.reason is not None or contact_id is None:  # resolved rows have their contact
            summary.rejected += 1
            rejects.add(row)
            continue
        reset_id, status = states[contact_id]
        if status == COMPLETED or contact_id in done:
            summary.already_completed += 1
            continue
        done.add(contact_id)
        completing.append((row, reset_id))
    _complete_many(session, campaign, completing)
    summary.completed += len(completing)


def _resolve_contacts(session: Session, campaign: Campaign, rows: list[_Row]) -> None:
    """Set ``contact_id`` on each row, or a reject reason; a key wins over an email."""
    base = select(Contact.id, Contact.key, Contact.email, Contact.exposures).where(
        Contact.campaign_id == campaign.id)
    keys = {r.key for r in rows if r.key}
    by_key = {c.key: c for c in session.execute(base.where(Contact.key.in_(keys)))} if keys else {}
    need_email = [r for r in rows if r.key not in by_key and r.email]
    wanted = {e for r in need_email if (e := email_key(r.email))}
    by_email = _contacts_by_email(session, base, wanted)
    for row in rows:
        matches = [by_key[row.key]] if row.key in by_key else []
        if not matches and row.email:
            normalized = email_key(row.email)
            if normalized is not None:
                matches = by_email.get(normalized) or by_email.get(normalized.lower(), [])
        if not matches:
            row.reason = f"unknown key {row.key!r}" if row.key and not row.email else (
                f"no contact with key {row.key!r} or email {row.email!r}" if row.key
                else f"no contact with email {row.email!r}")
        elif len(matches) > 1:
            row.reason = f"email {row.email!r} matches {len(matches)} contacts; give the key"
        elif not _exposes_passwords(matches[0].exposures):
            row.reason = "this contact has no exposed password (no reset to complete)"
        else:
            row.contact_id = matches[0].id


def _contacts_by_email(session: Session, base, emails: set[str]) -> dict[str, list]:
    """Contacts by exact stored email, and by lower-cased email for the ones not found."""
    found: dict[str, list] = {}
    if not emails:
        return found
    for contact in session.execute(base.where(Contact.email.in_(emails))):
        found.setdefault(contact.email, []).append(contact)
    missing = {e.lower() for e in emails if e not in found}
    if missing:
        query = base.where(func.lower(Contact.email).in_(missing))
        for contact in session.execute(query):
            found.setdefault(contact.email.lower(), []).append(contact)
    return found


def _locked_resets(session: Session, campaign: Campaign,
                   contact_ids: set[int | None]) -> dict[int, tuple[int, str]]:
    """(reset id, status) by contact, created where missing, rows locked for the update.

    Plain columns, not ORM objects: the batch is then written with a few bulk statements.
    """
    ids = [i for i in contact_ids if i is not None]
    if not ids:
        return {}
    table = PasswordReset.__table__
    query = (
        select(table.c.contact_id, table.c.id, table.c.status)
        .where(table.c.campaign_id == campaign.id, table.c.contact_id.in_(ids))
        .with_for_update()
    )
    states = {row.contact_id: (row.id, row.status) for row in session.execute(query)}
    missing = [i for i in ids if i not in states]
    if missing:
        source = select(
            Contact.campaign_id, Contact.id, literal(PENDING), literal(0),
            literal(utcnow(), UTCDateTime()),
        ).where(Contact.campaign_id == campaign.id, Contact.id.in_(missing))
        columns = ["campaign_id", "contact_id", "status", "links_sent", "created_at"]
        _insert_ignoring_duplicates(session, table, columns, source)
        states = {row.contact_id: (row.id, row.status) for row in session.execute(query)}
    return states


def _complete_many(session: Session, campaign: Campaign,
                   items: list[tuple[_Row, int]]) -> None:
    """Complete a batch with three bulk statements (resets, events, revocations)."""
    if not items:
        return
    resets_table = PasswordReset.__table__
    session.execute(
        resets_table.update()
        .where(resets_table.c.id == bindparam("reset_id"))
        .values(status=COMPLETED, completed_at=bindparam("done_at"), completed_via="import",
                completion_received_at=utcnow()),
        [{"reset_id": reset_id, "done_at": row.completed_at} for row, reset_id in items],
    )
    session.execute(Event.__table__.insert(), [
        {"campaign_id": campaign.id, "message_id": None, "contact_id": row.contact_id,
         "provider_message_id": None, "at": row.completed_at, "source": "reset",
         "kind": "reset_completed", "applied": True,
         "detail": {"via": "import", "by": "key" if row.key else "email", "line": row.line}}
        for row, _ in items
    ])
    tokens = ResetToken.__table__
    session.execute(
        tokens.update()
        .where(tokens.c.reset_id.in_([reset_id for _, reset_id in items]),
               tokens.c.revoked_at.is_(None), tokens.c.used_at.is_(None))
        .values(revoked_at=utcnow())
    )
    # Objects the caller holds for these rows are now stale: reload them on next access.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, (PasswordReset, ResetToken)):
            session.expire(obj)


# --------------------------------------------------------------------------- reminders


def plan_reminders(session: Session, campaign: Campaign, after: timedelta, max_reminders: int,
                   channels: Iterable[str], now: datetime | None = None, *,
                   dry_run: bool = False, limit: int | None = None) -> int:
    """Create the due reminder rows (pending); returns how many (would be) created.

    Due, per contact and channel: passwords exposed and reset not completed; the channel's
    latest message (highest sequence, first notice or reminder) is ``sent`` or ``delivered``
    and was sent at least ``after`` ago (so nothing is pending there); fewer than
    ``max_reminders`` reminders on that channel so far. The new row is ``notice="reminder"``
    with the next sequence, addressed to the contact's current address. One INSERT ... SELECT
    per channel; the unique message constraint makes concurrent or repeated runs create
    nothing twice. ``dry_run`` only counts. ``limit`` caps the rows created in this run.
    """
    channels = list(dict.fromkeys(channels))
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise NotifyError(f"unknown channel {unknown[0]!r} (known: {', '.join(CHANNELS)})")
    if after < timedelta(0):
        raise NotifyError("the reminder delay cannot be negative")
    if max_reminders < 1:
        return 0
    now = as_utc(now or utcnow())
    if not dry_run:
        # Keep the records in step (the engine issues tokens against them at send time).
        ensure_resets(session, campaign)
    total = 0
    for channel in channels:
        budget = None if limit is None else limit - total
        if budget is not None and budget <= 0:
            break
        due = _due_reminders(campaign.id, channel, now - after, max_reminders, now, budget)
        if dry_run:
            total += session.scalar(select(func.count()).select_from(due.subquery())) or 0
        else:
            total += _insert_reminders(session, campaign, due, now)
    if total and not dry_run:  # California 1798.82(d)(5) holds for reminders too
        from notify.campaigns import config_of
        from notify.rules.business_email import skip_business_credentials

        skip_business_credentials(session, campaign, config_of(campaign), now)
    return total


@dataclass(frozen=True)
class Upcoming:
    """Reminders not due yet that will fall due if nothing changes (no reset completed)."""

    count: int = 0
    first_at: datetime | None = None  # when the earliest falls due
    last_at: datetime | None = None  # when the latest of them falls due


def upcoming_reminders(session: Session, campaign: Campaign, after: timedelta,
                       max_reminders: int, channels: Iterable[str],
                       now: datetime | None = None) -> Upcoming:
    """The reminders that are not due yet but will be: how many, and when the first and
    the last fall due (the latest message on the channel reached less than ``after`` ago,
    reset not completed, fewer than ``max_reminders`` so far). What ``remind --dry-run``
    names, so that an operator (or cron) knows when to run it again.
    """
    now = as_utc(now or utcnow())
    cutoff = now - after
    count, first, last = 0, None, None
    for channel in dict.fromkeys(channels):
        reached_at = _upcoming_stats(campaign.id, channel, max_reminders, cutoff)
        n, low, high = session.execute(
            select(func.count(), func.min(reached_at.c.at), func.max(reached_at.c.at))
            .select_from(reached_at)).one()
        if not n:
            continue
        count += n
        low, high = _stored_time(low), _stored_time(high)
        first = low if first is None else min(first, low)
        last = high if last is None else max(last, high)
    if not count or first is None or last is None:
        return Upcoming()
    return Upcoming(count, first + after, last + after)


def _stored_time(value: datetime | str) -> datetime:
    """A stored time from an aggregate (SQLite may hand back its text) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


def _upcoming_stats(campaign_id: int, channel: str, max_reminders: int, cutoff: datetime):
    """Per contact that will be due on ``channel``: when its latest message reached it."""
    messages = Message.__table__
    reached = messages.c.status.in_(sorted(REACHED_STATUSES))
    at = func.coalesce(messages.c.sent_at, messages.c.delivered_at)
    stats = (
        select(
            messages.c.contact_id,
            func.max(messages.c.sequence).label("last_sequence"),
            func.max(case((reached, messages.c.sequence))).label("reached_sequence"),
            func.max(case((reached, at))).label("reached_at"),
            func.sum(case((messages.c.notice == "reminder", 1), else_=0)).label("reminders"),
        )
        .where(messages.c.campaign_id == campaign_id, messages.c.channel == channel)
        .group_by(messages.c.contact_id)
        .subquery("stats")
    )
    address = Contact.email if channel == "email" else Contact.phone
    completed = exists().where(
        PasswordReset.campaign_id == Contact.campaign_id,
        PasswordReset.contact_id == Contact.id,
        PasswordReset.status == COMPLETED,
    )
    return (
        select(stats.c.reached_at.label("at"))
        .select_from(Contact)
        .join(stats, stats.c.contact_id == Contact.id)
        .where(
            Contact.campaign_id == campaign_id,
            has_passwords(),
            ~completed,
            address.is_not(None),
            stats.c.reached_sequence == stats.c.last_sequence,
            stats.c.reached_at > literal(cutoff, UTCDateTime()),
            stats.c.reminders < max_reminders,
        )
        .subquery("upcoming")
    )


def _insert_reminders(session: Session, campaign: Campaign, due, now: datetime) -> int:
    """Insert the due rows (skipping any a concurrent run made) and one "pending" event each.

    RETURNING gives exactly the rows this statement created, so each gets one event, in the
    same transaction, whatever other runs do at the same time. On PostgreSQL both inserts are
    one statement (a data-modifying CTE), so the ids never travel to Python and back.
    """
    messages, event_table = Message.__table__, Event.__table__
    columns = ["campaign_id", "contact_id", "channel", "notice", "sequence", "is_fallback",
               "status", "address", "attempts", "created_at"]
    created = (_insert(session, messages).from_select(columns, due)
               .on_conflict_do_nothing()
               .returning(messages.c.id, messages.c.contact_id))
    detail = {"planned": "reminder"}
    if session.get_bind().dialect.name == "postgresql":
        new = created.cte("new_reminders")
        source = select(
            literal(campaign.id), new.c.id, new.c.contact_id, literal(now, UTCDateTime()),
            literal("reset"), literal("pending"), literal(True),
            literal(detail, event_table.c.detail.type),
        )
        stmt = (event_table.insert()
                .from_select(["campaign_id", "message_id", "contact_id", "at", "source", "kind",
                              "applied", "detail"], source)
                .add_cte(new))
        return rowcount(session.execute(stmt.execution_options(preserve_rowcount=True)))
    rows = session.execute(created).all()
    events.insert_planned(session, campaign.id, rows, now, "reset", detail)
    return len(rows)


def _due_reminders(campaign_id: int, channel: str, cutoff: datetime, max_reminders: int,
                   now: datetime, limit: int | None):
    """SELECT of the Message rows to insert for one channel (see :func:`plan_reminders`).

    One aggregate pass over the channel's messages per contact: the highest sequence, the
    highest sequence that was reached before ``cutoff``, and the reminder count. The contact
    is due when both sequences are equal (its latest message was reached long enough ago).
    No self-join on messages, so the INSERT never re-reads rows it is adding.
    """
    messages = Message.__table__
    reached_early = and_(
        messages.c.status.in_(sorted(REACHED_STATUSES)),
        func.coalesce(messages.c.sent_at, messages.c.delivered_at)
        <= literal(cutoff, UTCDateTime()),
    )
    stats = (
        select(
            messages.c.contact_id,
            func.max(messages.c.sequence).label("last_sequence"),
            func.max(case((reached_early, messages.c.sequence))).label("reached_sequence"),
            func.sum(case((messages.c.notice == "reminder", 1), else_=0)).label("reminders"),
        )
        .where(messages.c.campaign_id == campaign_id, messages.c.channel == channel)
        .group_by(messages.c.contact_id)
        .subquery("stats")
    )
    address = Contact.email if channel == "email" else Contact.phone
    completed = exists().where(
        PasswordReset.campaign_id == Contact.campaign_id,
        PasswordReset.contact_id == Contact.id,
        PasswordReset.status == COMPLETED,
    )
    query = (
        select(
            Contact.campaign_id, Contact.id, literal(channel), literal("reminder"),
            stats.c.last_sequence + 1, literal(False), literal("pending"), address,
            literal(0), literal(now, UTCDateTime()),
        )
        .select_from(Contact)
        .join(stats, stats.c.contact_id == Contact.id)
        .where(
            Contact.campaign_id == campaign_id,
            has_passwords(),
            ~completed,
            address.is_not(None),
            stats.c.reached_sequence == stats.c.last_sequence,
            stats.c.reminders < max_reminders,
        )
        .order_by(Contact.id)
    )
    return query.limit(limit) if limit is not None else query
