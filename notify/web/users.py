"""Web view accounts: add, list, remove, unlock, and check a password with a lockout.

Passwords are hashed with argon2id (argon2-cffi's defaults, the OWASP recommendation); the
plain text is never stored or logged. After ``MAX_FAILED`` wrong passwords in a row an
account is locked for ``LOCKOUT``: even the right password is refused until then, so a
guesser gets a handful of tries per quarter hour instead of thousands per second.

A name with no account answers exactly as an account does: the same refusals, the same lock
after the same number of failures (counted in :data:`UNKNOWN_NAMES`), and one argon2 check per
attempt either way, so neither the answer nor its timing tells which names exist.
`notify users unlock` lifts a lock early.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from notify.errors import NotFound, NotifyError
from notify.models import WEB_ROLES, WebUser, utcnow

MAX_FAILED = 5
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD = 12
ROLE_RANK = {role: rank for rank, role in enumerate(WEB_ROLES, start=1)}

_HASHER = PasswordHasher()
# Verified when the name is unknown, so a wrong name costs the same time as a wrong password
# (the response time does not tell which names exist).
_DUMMY_HASH = _HASHER.hash("not a real password, only here to spend the same time")


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (salted; what the users table stores)."""
    return _HASHER.hash(password)


def check_name(name: str) -> str:
    """The user name stripped; a NotifyError naming the problem when it is unusable."""
    name = name.strip()
    if not name or len(name) > 128 or any(c.isspace() or not c.isprintable() for c in name):
        raise NotifyError(f"user name {name!r}: use 1 to 128 characters without spaces")
    return name


def check_password(password: str) -> str:
    """The password as given; a NotifyError when it is too short to resist guessing."""
    if len(password) < MIN_PASSWORD:
        raise NotifyError(f"the password must be at least {MIN_PASSWORD} characters long")
    return password


def check_role(role: str) -> str:
    """The role, if it is one of WEB_ROLES."""
    if role not in WEB_ROLES:
        raise NotifyError(f"role {role!r}: use one of {', '.join(WEB_ROLES)}")
    return role


def add_user(session: Session, name: str, role: str, password: str) -> WebUser:
    """Create an account; a NotifyError if the name is taken or a value is unusable."""
    name, role = check_name(name), check_role(role)
    check_password(password)
    if get_user(session, name) is not None:
        raise NotifyError(f"user {name!r} already exists (remove it first to replace it)")
    user = WebUser(
        name=name,
        role=role,
        password_hash=hash_password(password),
        failed_logins=0,
        session_epoch=0,
    )
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, name: str) -> WebUser | None:
    """The account called ``name``, or None."""
    return session.scalar(select(WebUser).where(WebUser.name == name))


def list_users(session: Session) -> list[WebUser]:
    """Every account, by name."""
    return list(session.scalars(select(WebUser).order_by(WebUser.name)))


def remove_user(session: Session, name: str) -> WebUser:
    """Delete the account (its session cookies stop working at once: no row, no session)."""
    user = get_user(session, name)
    if user is None:
        raise NotFound(f"no user named {name!r} (see: notify users list)")
    session.delete(user)
    session.flush()
    return user


def unlock_user(session: Session, name: str) -> WebUser:
    """Clear the account's failure count and lock (an admin vouched for the person)."""
    user = get_user(session, name)
    if user is None:
        raise NotFound(f"no user named {name!r} (see: notify users list)")
    user.failed_logins = 0
    user.locked_until = None
    session.flush()
    return user


def user_row(user: WebUser, now: datetime | None = None) -> dict[str, object]:
    """What `notify users list` and the users page show about an account (never the hash);
    ``locked_until`` only while the lock lasts."""
    now = now or utcnow()
    locked = user.locked_until is not None and user.locked_until > now
    return {
        "name": user.name,
        "role": user.role,
        "locked_until": user.locked_until if locked else None,
        "last_login_at": user.last_login_at,
        "created_at": user.created_at,
    }


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a sign-in attempt: ``user`` on success, else why not."""

    user: WebUser | None
    reason: str  # ok | wrong | locked
    locked_until: datetime | None = None


@dataclass
class Failures:
    """The lockout state of a name without an account: the two fields a WebUser has."""

    failed_logins: int = 0
    locked_until: datetime | None = None


class UnknownNames:
    """Failure counts of names that have no account, so that they lock like real ones.

    Bounded (``limit`` names, the least recently tried forgotten first) so that an attacker
    trying endless made-up names cannot grow it; keyed by a salted hash of the name (as
    typed: account names are matched exactly), so memory never holds what was typed, which
    is sometimes a password typed in the wrong box. Per process, like the sign-in itself.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._rows: OrderedDict[bytes, Failures] = OrderedDict()
        self._lock = threading.Lock()
        self._salt = secrets.token_bytes(16)

    def __len__(self) -> int:
        return len(self._rows)

    def _key(self, name: str) -> bytes:
        return hashlib.blake2b(name.encode(), key=self._salt, digest_size=16).digest()

    def get(self, name: str) -> Failures:
        """The state of ``name`` (a fresh one, kept, when the name is new)."""
        key = self._key(name)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = Failures()
                while len(self._rows) > self.limit:
                    self._rows.popitem(last=False)
            self._rows.move_to_end(key)
            return row

    def clear(self) -> None:
        """Forget every name (tests; a restart does the same)."""
        with self._lock:
            self._rows.clear()


UNKNOWN_NAMES = UnknownNames()


def authenticate(
    session: Session, name: str, password: str, now: datetime | None = None
) -> LoginResult:
    """Check a sign-in; counts failures, locks after MAX_FAILED, resets on success.

    An unknown name goes through the same steps on its :data:`UNKNOWN_NAMES` entry and a
    dummy hash, so its answers cannot be told from a real account's. The caller commits:
    the failure count must be kept even though the sign-in is refused.
    """
    now = now or utcnow()
    name = name.strip()
    user = get_user(session, name)
    state: WebUser | Failures = user if user is not None else UNKNOWN_NAMES.get(name)
    # One argon2 check on every path (locked too): the time taken does not tell them apart.
    right = _verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    if state.locked_until is not None and state.locked_until > now:
        return LoginResult(None, "locked", state.locked_until)
    if not right or user is None:
        state.failed_logins = (state.failed_logins or 0) + 1
        if state.failed_logins >= MAX_FAILED:
            state.locked_until = now + LOCKOUT
            state.failed_logins = 0
            return LoginResult(None, "locked", state.locked_until)
        return LoginResult(None, "wrong")
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    if _HASHER.check_needs_rehash(user.password_hash):  # parameters raised since it was set
        user.password_hash = hash_password(password)
    return LoginResult(user, "ok")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
