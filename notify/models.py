"""SQLAlchemy 2 models: the schema every module shares.

Message rows are the unit of "told exactly once": one per (campaign, contact, channel, notice,
sequence), enforced by a unique constraint, so no code path can create a second first notice.
Events and audit records are append-only: the code only ever inserts them, and database
triggers (migration 0006) refuse any UPDATE or DELETE.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from notify.times import utcnow as utcnow  # re-exported: stored times are UTC


class Status(StrEnum):
    """A message's status (docs/cli.md, statuses), in the order it may move.

    The one home of the statuses: a member equals its string, so rows, JSON and SQL keep
    the plain words. A status only moves forward (:data:`STATUS_RANK`, enforced by
    ``events.advance``); the finals share the top rank, so none replaces another.
    """

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    UNDELIVERED = "undelivered"
    SKIPPED = "skipped"

    @property
    def rank(self) -> int:
        """0 pending, 1 sending, 2 sent, 3 for every final status."""
        return STATUS_RANK[self]

    @property
    def final(self) -> bool:
        """True once nothing but a bounce report's correction can change it."""
        return self in FINAL_STATUSES


MESSAGE_STATUSES: tuple[Status, ...] = tuple(Status)
FINAL_STATUSES = frozenset(
    {Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.BOUNCED, Status.SKIPPED}
)
STATUS_RANK: dict[str, int] = {
    status: 3 if status in FINAL_STATUSES else rank for rank, status in enumerate(Status)
}
REACHED_STATUSES = frozenset({Status.SENT, Status.DELIVERED})
# Not yet handed over, or being handed over: the engine still owns these rows.
IN_FLIGHT_STATUSES = (Status.PENDING, Status.SENDING)
# Never handed to a provider: removing the contact loses nothing sent.
NOT_HANDED_OVER = (Status.PENDING, Status.SKIPPED)
# The person was not reached: what requeue and the unreached export look at.
UNREACHED_STATUSES = (Status.SKIPPED, Status.FAILED, Status.BOUNCED, Status.UNDELIVERED)
# Failed for good: the email's fallback SMS is due, requeue may give another chance.
FAILED_STATUSES = (Status.FAILED, Status.UNDELIVERED, Status.BOUNCED)
CHANNELS = ("email", "sms")
NOTICES = ("notice", "reminder")


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC, on SQLite and PostgreSQL alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class JSONText(TypeDecorator):
    """JSON in a TEXT column: portable, and readable in any SQL shell."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)

    def process_result_value(self, value: str | None, dialect) -> Any:
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    if TYPE_CHECKING:
        # Every model here maps one Table; SQLAlchemy types __table__ as any FromClause,
        # which has no insert()/update().
        __table__: ClassVar[Table]


class TemplateVersion(Base):
    """A campaign's notices as loaded: every file's name and text (notify.template_versions).

    Content-addressed: ``sha256`` over the names and texts; the same files are one row.
    Messages record the ``sha256`` they were rendered from; rows are never changed.
    """

    __tablename__ = "template_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # JSON: {"override": {name: text}, "defaults": {name: text}}
    files: Mapped[str] = mapped_column(Text)
    origin: Mapped[str | None] = mapped_column(Text)  # the override folder, for messages
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Secret(Base):
    """A per-database secret (``verp``: the key of the bounce tags, notify.verp). Made by a
    migration; never printed or exported."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Every field of the campaign file, validated (see notify.campaigns).
    settings: Mapped[dict] = mapped_column(JSONText)
    # Where the template overrides were read from at load (absolute; shown, never read again:
    # sending renders from the stored version). None = the defaults only.
    templates_dir: Mapped[str | None] = mapped_column(Text)
    # The notices stored at the last `campaign load` (notify.template_versions).
    template_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("template_versions.id", name="fk_campaigns_template_version")
    )
    source_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("campaign_id", "key", name="uq_contacts_campaign_key"),
        Index("ix_contacts_email", "email"),
        Index("ix_contacts_phone", "phone"),
        Index("ix_contacts_key", "key"),
        # Support searches by name (notify.web.search): exact, in a few case spellings.
        Index("ix_contacts_name", "name"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(320))  # normalized; domain IDNA ascii
    phone: Mapped[str | None] = mapped_column(String(32))  # E.164
    # Rank-ordered, ";"-joined kinds (notify.exposures.join): "identity;passwords".
    exposures: Mapped[str] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(32))
    extra: Mapped[dict | None] = mapped_column(JSONText)
    # Credit-monitoring code from the campaign's pool (notify.codes; EnrollmentCode is the
    # record of the assignment, this the copy notices read).
    enrollment_code: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint(
            "campaign_id",
            "contact_id",
            "channel",
            "notice",
            "sequence",
            name="uq_messages_once",
        ),
        Index("ix_messages_queue", "campaign_id", "status", "channel", "id"),
        Index("ix_messages_contact", "contact_id"),
        Index("ix_messages_provider_id", "provider_message_id"),
        Index("ix_messages_address", "address"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(8))  # email | sms
    notice: Mapped[str] = mapped_column(String(16), default="notice")  # notice | reminder
    sequence: Mapped[int] = mapped_column(Integer, default=0)  # 0 first notice, 1.. reminders
    is_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    skip_reason: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(320))
    template: Mapped[str | None] = mapped_column(String(64))  # e.g. "identity/email"
    # The stored template version it was rendered from (template_versions.sha256).
    template_version: Mapped[str | None] = mapped_column(String(64))
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    # Where it was handed over: "smtp:HOST", "twilio" or "outbox" (set with the first attempt).
    transport: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """Append-only log: every status change, callback, bounce, reset, with where it came from."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_message", "message_id"),
        Index("ix_events_campaign", "campaign_id", "id"),
        Index("ix_events_pending_sid", "provider_message_id"),
        Index("ix_events_contact", "contact_id"),
        Index("ix_events_replay_key", "replay_key", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # Plain references, no foreign keys: the log outlives the rows it describes (a removed
    # contact's events stay), and triggers refuse any DELETE here (migration 0006).
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    contact_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    # For callbacks that arrive before their SID is stored: applied once it is.
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(32))  # send, webhook, sync, bounce, reset, ...
    kind: Mapped[str] = mapped_column(String(32))  # usually the status it reports
    applied: Mapped[bool] = mapped_column(Boolean, default=True)
    detail: Mapped[dict | None] = mapped_column(JSONText)
    # SHA-256 of a status callback's signed parameters: a replayed callback is stored once.
    replay_key: Mapped[str | None] = mapped_column(String(64))


class PasswordReset(Base):
    """One per contact with exposed passwords in a campaign."""

    __tablename__ = "password_resets"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", name="uq_resets_contact"),
        Index("ix_resets_state", "campaign_id", "status", "link_expires_at"),
        Index("ix_resets_contact", "contact_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | completed
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # as the provider claims
    # When notify received the completion (webhook or import): expiry is judged by this.
    completion_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_via: Mapped[str | None] = mapped_column(String(32))
    links_sent: Mapped[int] = mapped_column(Integer, default=0)
    link_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ResetToken(Base):
    """A link's token, stored only as its SHA-256; the raw token lives only in the message."""

    __tablename__ = "reset_tokens"
    __table_args__ = (
        Index("ix_reset_tokens_reset", "reset_id"),
        Index("ix_reset_tokens_message", "message_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    reset_id: Mapped[int] = mapped_column(ForeignKey("password_resets.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditRecord(Base):
    """Who did what, when, with which (masked) arguments and what it counted. Append-only."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_campaign", "campaign", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    command: Mapped[str] = mapped_column(String(64))
    campaign: Mapped[str | None] = mapped_column(String(200))
    arguments: Mapped[dict | None] = mapped_column(JSONText)
    counts: Mapped[dict | None] = mapped_column(JSONText)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")


class Tally(Base):
    """A maintained count, kept by database triggers (migration 0004), never by Python code.

    ``name`` says what is counted: ``contacts``, ``message:{channel}:{status}:{notice}:{sequence}``,
    ``reach:{reached|pending|not_reached}`` (contacts with messages, by reach class) or
    ``reset:{status}``. On PostgreSQL every connection adds to its own ``shard`` (its backend
    pid), so concurrent workers never wait on one hot row; the count is the sum of the shards.
    """

    __tablename__ = "tallies"

    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, default=0)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


class ContactReach(Base):
    """Per contact, how many of its messages reached it, are still open, or ended unreached.

    Kept by the same triggers as :class:`Tally`; its class (reached > pending > not reached)
    feeds the ``reach:*`` tallies.
    """

    __tablename__ = "contact_reach"

    contact_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("contacts.id", ondelete="CASCADE"),
        primary_key=True,
    )
    campaign_id: Mapped[int] = mapped_column(Integer)
    reached_n: Mapped[int] = mapped_column(Integer, default=0)
    open_n: Mapped[int] = mapped_column(Integer, default=0)
    closed_n: Mapped[int] = mapped_column(Integer, default=0)


class ThrottleSchedule(Base):
    """Global per-channel send schedule shared by every worker (token bucket of depth 1).

    ``next_slot`` is the epoch second at which the next message of this channel may leave;
    workers reserve slots by advancing it in one UPDATE, so the total rate holds whatever the
    number of workers.
    """

    __tablename__ = "throttles"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(8), primary_key=True)
    next_slot: Mapped[float] = mapped_column(Float, default=0.0)


class EnrollmentCode(Base):
    """One credit-monitoring enrollment code of a campaign's pool (``notify codes import``).

    ``contact_id`` is set when the code is given to a contact; the unique constraints make a
    code go to at most one contact and a contact get at most one code, whatever the number of
    workers (notify.codes.assign).
    """

    __tablename__ = "enrollment_codes"
    __table_args__ = (
        UniqueConstraint("campaign_id", "code", name="uq_enrollment_codes_code"),
        UniqueConstraint("contact_id", name="uq_enrollment_codes_contact"),
        Index("ix_enrollment_codes_free", "campaign_id", "contact_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(128))
    contact_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("contacts.id", ondelete="SET NULL")
    )
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


WEB_ROLES = ("support", "compliance", "admin")


class WebUser(Base):
    """A person who signs in to the web view (notify.web). The password is stored only as
    its argon2 hash; ``session_epoch`` grows at each sign-out so every older session cookie
    stops working; ``failed_logins`` and ``locked_until`` implement the lockout."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # support | compliance | admin
    password_hash: Mapped[str] = mapped_column(Text)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebSetting(Base):
    """Named values the web view keeps in the database, e.g. its session signing key
    (created on first use when NOTIFY_WEB_SECRET is not set)."""

    __tablename__ = "web_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
