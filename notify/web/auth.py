"""Sessions and CSRF tokens of the web view, signed with one server key.

A session is a cookie holding ``name|epoch|expires|nonce`` and an HMAC-SHA256 of it. The
cookie is HttpOnly (scripts cannot read it), SameSite=Strict (other sites cannot send it),
Secure behind HTTPS, and expires after ``SESSION_LIFETIME``; signing out raises the user's
``session_epoch`` so a copied cookie dies with the session. Every form carries a CSRF token
derived from the session's nonce (the sign-in form from a pre-session cookie's nonce); a
POST whose token does not match is refused with 403 and changes nothing.

The key comes from NOTIFY_WEB_SECRET when set (several servers behind one proxy share it),
else from the database (``web_settings``), created at random on first use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from notify import db
from notify.models import WebSetting

SESSION_COOKIE = "notify_session"
LOGIN_COOKIE = "notify_login"
SESSION_LIFETIME = timedelta(hours=8)
LOGIN_LIFETIME = timedelta(hours=1)
KEY_SETTING = "session_key"
SECRET_ENV = "NOTIFY_WEB_SECRET"


def signing_key(engine: Engine) -> bytes:
    """NOTIFY_WEB_SECRET, else the key stored in the database (created once, at random)."""
    configured = os.environ.get(SECRET_ENV)
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    for _ in range(2):
        with db.session_scope(engine) as session:
            stored = session.scalar(select(WebSetting.value).where(WebSetting.name == KEY_SETTING))
            if stored:
                return bytes.fromhex(stored)
        try:
            with db.session_scope(db.writer(engine)) as session:
                session.add(WebSetting(name=KEY_SETTING, value=secrets.token_hex(32)))
        except IntegrityError:  # another server process created it first: read theirs
            continue
    raise RuntimeError("could not create the web session key")


def _sign(key: bytes, text: str) -> str:
    return (
        base64.urlsafe_b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest())
        .decode()
        .rstrip("=")
    )


def _pack(key: bytes, fields: list[str]) -> str:
    body = base64.urlsafe_b64encode("|".join(fields).encode()).decode().rstrip("=")
    return f"{body}.{_sign(key, body)}"


def _unpack(key: bytes, cookie: str | None) -> list[str] | None:
    if not cookie or "." not in cookie:
        return None
    body, _, signature = cookie.rpartition(".")
    if not hmac.compare_digest(signature, _sign(key, body)):
        return None
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split("|")
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class SessionCookie:
    """What a valid session cookie says: who, which sign-in epoch, until when, its nonce."""

    name: str
    epoch: int
    expires: int
    nonce: str


def new_session(key: bytes, name: str, epoch: int, now: float | None = None) -> tuple[str, int]:
    """A signed session cookie value for ``name`` and its lifetime in seconds."""
    lifetime = int(SESSION_LIFETIME.total_seconds())
    expires = int(now if now is not None else time.time()) + lifetime
    return _pack(key, [name, str(epoch), str(expires), secrets.token_urlsafe(16)]), lifetime


def read_session(key: bytes, cookie: str | None, now: float | None = None) -> SessionCookie | None:
    """The session a cookie holds, or None when unsigned, tampered with or expired."""
    fields = _unpack(key, cookie)
    if not fields or len(fields) != 4:
        return None
    name, epoch, expires, nonce = fields
    try:
        session = SessionCookie(name, int(epoch), int(expires), nonce)
    except ValueError:
        return None
    if session.expires <= (now if now is not None else time.time()):
        return None
    return session


def new_login_nonce(key: bytes) -> str:
    """The pre-session cookie value that the sign-in form's CSRF token is bound to."""
    expires = int(time.time() + LOGIN_LIFETIME.total_seconds())
    return _pack(key, [str(expires), secrets.token_urlsafe(16)])


def read_login_nonce(key: bytes, cookie: str | None) -> str | None:
    """The nonce of a valid, unexpired pre-session cookie."""
    fields = _unpack(key, cookie)
    if not fields or len(fields) != 2 or not fields[0].isdigit():
        return None
    if int(fields[0]) <= time.time():
        return None
    return fields[1]


def csrf_token(key: bytes, nonce: str) -> str:
    """The form token bound to a session's (or sign-in cookie's) nonce."""
    return _sign(key, f"csrf|{nonce}")


def csrf_ok(key: bytes, nonce: str | None, token: str | None) -> bool:
    """True when ``token`` is the one :func:`csrf_token` gives for ``nonce``."""
    if not nonce or not token:
        return False
    return hmac.compare_digest(token, csrf_token(key, nonce))
