"""The aiohttp app behind `notify serve`: Twilio status callbacks, reset completions, health.

Every request that changes something is authenticated first (Twilio's X-Twilio-Signature,
or the reset webhook's HMAC, :func:`verify_signature`); a request that fails any check
changes nothing, and the refusal is logged (rate-limited). Database work runs on a small
thread pool so the event loop keeps answering while a transaction waits for a lock; the
health check has threads of its own and a one-second budget, so it answers even then.

Slow or stalled clients cannot hold connections: a request must send its headers within the
keep-alive timeout of connecting (or of its previous response) and its body within
``BODY_TIMEOUT`` (408, then the connection is closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from notify import db, tracking
from notify.config import Settings, check_webhook_secret
from notify.errors import NotifyError
from notify.models import Campaign, utcnow
from notify.resets.completions import CLOCK_SKEW, CompletionResult, complete, failure
from notify.times import as_utc, parse_iso

log = logging.getLogger("notify.server")

TWILIO_STATUS_PATH = "/webhooks/twilio/status"
RESETS_PATH = "/webhooks/resets"
HEALTH_PATH = "/healthz"
# Twilio callbacks are well under 2 KB and reset completions a few hundred bytes; anything
# much larger is not one of ours.
MAX_BODY = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
# A webhook body is a few hundred bytes: a client still sending after this is stalled or
# hostile (slow-body attack), not slow.
BODY_TIMEOUT = 10.0
# Headers of a request must arrive within this of connecting or of the previous response;
# an idle keep-alive connection is closed after it.
KEEPALIVE_TIMEOUT = 15.0
# After an early answer (408, 413) unread body bytes are drained for at most this long.
LINGERING_TIME = 2.0
# GET /healthz answers within a second whatever the database does.
HEALTH_TIMEOUT = 0.8
# One log line per kind of refusal per this many seconds; the others are counted in it.
REFUSAL_LOG_INTERVAL = 60.0

ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", Settings)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
HEALTH: web.AppKey[HealthProbe] = web.AppKey("health")
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")
REFUSALS: web.AppKey[RefusalLog] = web.AppKey("refusals")
BODY_TIMEOUT_KEY = web.AppKey("body_timeout", float)

T = TypeVar("T")


def make_app(
    engine: Engine,
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    body_timeout: float = BODY_TIMEOUT,
    keepalive_timeout: float = KEEPALIVE_TIMEOUT,
) -> web.Application:
    """Build the webhook application (routes, body limit, timeouts, DB thread pool).

    ``clock`` gives the time a reset completion is received at (tests inject it). A
    NOTIFY_WEBHOOK_SECRET too short to resist guessing is refused here (ConfigError), so no
    way of starting the server can run with it.
    """
    check_webhook_secret(settings.webhook_secret)
    # handler_args reach the connection handler however the app is run (run_app, test
    # servers, an embedding AppRunner).
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[_bounded_body],
        handler_args={"keepalive_timeout": keepalive_timeout, "lingering_time": LINGERING_TIME},
    )
    app[ENGINE] = engine
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[BODY_TIMEOUT_KEY] = body_timeout
    app[REFUSALS] = RefusalLog()
    app.cleanup_ctx.append(_database_threads)
    app.router.add_post(TWILIO_STATUS_PATH, twilio_status)
    app.router.add_post(RESETS_PATH, reset_completion)
    app.router.add_get(HEALTH_PATH, healthz)
    from notify.web import pages  # the web view for support and compliance (docs/web.md)

    pages.mount(app, engine, settings.public_url)
    return app


@web.middleware
async def _bounded_body(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Every route (webhooks and the web view's forms) gets its body within the body
    timeout or a 408: read here, the body is then served from aiohttp's cache."""
    if request.body_exists and not request.content_type.startswith("multipart/"):
        body = await _read_body(request)
        if isinstance(body, web.Response):
            return body
    return await handler(request)


async def _database_threads(app: web.Application) -> AsyncIterator[None]:
    """The threads that run database work live as long as the server: started with it,
    stopped (after the work under way) when it shuts down."""
    # SQLite has one writer at a time: a single DB thread avoids pointless lock contention.
    workers = 1 if db.is_sqlite(app[ENGINE]) else 4
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notify-db") as executor:
        app[EXECUTOR] = executor
        app[HEALTH] = HealthProbe(app[ENGINE])
        try:
            yield
        finally:
            app[HEALTH].close()


class RefusalLog:
    """Warnings about refused requests, at most one per kind per interval.

    A forger or a misconfigured proxy can send thousands of bad requests: each kind is
    logged at once, then at most every ``interval`` seconds with the count left out since.
    """

    def __init__(
        self, interval: float = REFUSAL_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> bool:
        """Log ``message`` unless ``kind`` was logged within the interval; True if logged."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        more = f" ({held} more refused since the last report)" if held else ""
        log.warning("%s%s", message, more)
        self._last[kind] = now
        return True


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _run_db(app: web.Application, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking DB work on the pool; retry briefly when SQLite reports a busy database."""
    loop = asyncio.get_running_loop()
    for attempt in range(3):
        try:
            return await loop.run_in_executor(app[EXECUTOR], fn, *args)
        except OperationalError as exc:
            reason = str(exc.orig).lower()
            busy = "locked" in reason or "busy" in reason
            if attempt == 2 or not busy:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def _read_body(request: web.Request) -> bytes | web.Response:
    """The request body; a 413 response when it is larger than any webhook of ours, a 408
    (closing the connection) when it does not arrive within the body timeout."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"body larger than {MAX_BODY} bytes")
    try:
        async with asyncio.timeout(request.app[BODY_TIMEOUT_KEY]):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body larger than {MAX_BODY} bytes")
    except TimeoutError:
        request.app[REFUSALS].warn(
            "body-timeout",
            f"request to {request.path} from "
            f"{request.remote}: body not received within "
            f"{request.app[BODY_TIMEOUT_KEY]:g} s; connection closed",
        )
        response = _error(408, "request body not received in time")
        response.force_close()
        return response


# --- Twilio status callbacks ---------------------------------------------------------------


def twilio_url(settings: Settings, request: web.Request) -> str | None:
    """The URL as Twilio requested it: NOTIFY_PUBLIC_URL + path (+ query), what it signed."""
    base = settings.status_callback_url
    if base is None:
        return None
    return f"{base}?{request.query_string}" if request.query_string else base


def signature_ok(settings: Settings, request: web.Request, params: MultiDict) -> bool:
    """Check X-Twilio-Signature with the twilio library's RequestValidator."""
    from twilio.request_validator import (
        SIGNATURE_SETTINGS_HEADER,
        RequestValidator,
        get_signature_algorithm,
    )

    signature = request.headers.get("X-Twilio-Signature")
    url = twilio_url(settings, request)
    if not signature or not url or not settings.twilio_auth_token:
        return False
    algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
    validator = RequestValidator(settings.twilio_auth_token)
    return validator.validate(url, params, signature, algorithm=algorithm)


def _parse_form(body: bytes) -> MultiDict:
    """Form fields of the body; ValueError when it is not a url-encoded UTF-8 form, or holds
    a NUL (PostgreSQL cannot store one, and no Twilio field has one)."""
    pairs = parse_qsl(
        body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, errors="strict"
    )
    if any("\x00" in name or "\x00" in value for name, value in pairs):
        raise ValueError("NUL in a form field")
    return MultiDict(pairs)


def _apply_callback(
    engine: Engine, report: tracking.StatusReport, key: str | None = None
) -> dict[str, Any]:
    engine = db.writer(engine)
    try:
        with db.session_scope(engine) as session:
            outcome = tracking.handle_callback(session, report, key)
    except IntegrityError as exc:
        # The same callback was stored by a concurrent request between our check and our
        # insert (unique replay_key): this one is the replay.
        if key is None or "replay_key" not in str(exc.orig):
            raise
        return {"replay": True}
    if outcome.get("early"):
        # The send engine may have stored the SID while we were storing the early event:
        # look once more, in a fresh transaction, so the callback is not left unapplied.
        with db.session_scope(engine) as session:
            if tracking.recheck_early(session, report.sid):
                outcome = {"early": True, "applied": True}
    return outcome


async def twilio_status(request: web.Request) -> web.Response:
    """POST /webhooks/twilio/status: verify, then apply (or keep as early) one callback."""
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    if request.content_type != FORM_TYPE:
        return _error(400, f"expected {FORM_TYPE}")
    try:
        params = _parse_form(body)
    except (UnicodeDecodeError, ValueError):
        return _error(400, "body is not a url-encoded form")
    settings = request.app[SETTINGS]
    if not signature_ok(settings, request, params):
        refusals = request.app[REFUSALS]
        if not (settings.twilio_auth_token and settings.public_url):
            refusals.warn(
                "twilio-unconfigured",
                "Twilio callback refused: TWILIO_AUTH_TOKEN "
                "and NOTIFY_PUBLIC_URL are both needed to check its signature",
            )
        else:
            # The URL is what operators need to see: a proxy that rewrites the scheme or
            # host makes every genuine callback fail against NOTIFY_PUBLIC_URL.
            what = "missing" if not request.headers.get("X-Twilio-Signature") else "invalid"
            refusals.warn(
                "twilio-signature",
                f"Twilio callback refused: {what} "
                f"X-Twilio-Signature, validated against {twilio_url(settings, request)}"
                f" (from {request.remote})",
            )
        return _error(403, "missing or invalid X-Twilio-Signature")
    try:
        report = tracking.StatusReport.from_callback(params)
    except tracking.CallbackError as exc:
        return _error(400, str(exc))
    key = tracking.replay_key(params)
    outcome = await _run_db(request.app, _apply_callback, request.app[ENGINE], report, key)
    return web.json_response({"ok": True, **outcome}, status=202 if outcome.get("early") else 200)


# --- Password reset completions ------------------------------------------------------------


SIGNATURE_HEADER = "X-Notify-Signature"
# A webhook completion is judged at receipt: its ``completed_at`` may run ahead of our clock by
# completions.CLOCK_SKEW, and may lag its receipt by at most this (a provider retrying for a
# day is plausible; a completion claimed for last month is a replayed or forged body).
MAX_COMPLETION_AGE = timedelta(hours=24)


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


def handle_webhook(
    session: Session,
    settings: Settings,
    body: bytes,
    signature: str | None,
    received_at: datetime | None = None,
) -> tuple[int, dict[str, Any]]:
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
        return 403, {
            "status": "error",
            "error": "reset webhook disabled: NOTIFY_WEBHOOK_SECRET is not set",
        }
    if not verify_signature(settings.webhook_secret, body, signature):
        return 403, {"status": "error", "error": f"missing or invalid {SIGNATURE_HEADER}"}
    request = _parse_webhook_body(body, received)
    if isinstance(request, CompletionResult):
        return request.status, request.body()
    fields, completed_at, campaign_name = request
    if completed_at > received + CLOCK_SKEW:
        return 400, failure(400, "completed_at is in the future").body()
    if completed_at < received - MAX_COMPLETION_AGE:
        return 400, failure(400, "completed_at is more than 24 hours before its receipt").body()
    campaign = None
    if campaign_name is not None:
        campaign = session.scalar(select(Campaign).where(Campaign.name == campaign_name))
        if campaign is None:
            return 404, {"status": "error", "error": "unknown campaign"}
    result = complete(
        session,
        campaign,
        completed_at=completed_at,
        source="webhook",
        received_at=received,
        **fields,
    )
    return result.status, result.body()


def _parse_webhook_body(
    body: bytes,
    received: datetime,
) -> tuple[dict[str, str], datetime, str | None] | CompletionResult:
    # A signed body is still untrusted input (a leaked secret, a buggy provider): deep nesting
    # (RecursionError), bad UTF-8, NUL or lone surrogates are a 400, never a 500.
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return failure(400, "body is not JSON")
    if not isinstance(payload, dict):
        return failure(400, "body must be a JSON object")
    for name in ("token", "key", "email", "completed_at", "campaign"):
        problem = _bad_text(name, payload.get(name))
        if problem:
            return failure(400, problem)
    fields: dict[str, str] = {
        name: payload[name]
        for name in ("token", "key", "email")
        if payload.get(name) not in (None, "")
    }
    if len(fields) != 1:
        return failure(400, "give exactly one of token, key or email")
    raw_time = payload.get("completed_at")
    completed_at: datetime | None = received
    if raw_time is not None:
        try:
            completed_at = parse_iso(raw_time)
        except (ValueError, OverflowError):  # year 1 with an offset overflows in UTC
            completed_at = None
    if completed_at is None:
        return failure(400, "completed_at must be an ISO-8601 date-time")
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


def _apply_reset(
    engine: Engine,
    settings: Settings,
    body: bytes,
    signature: str | None,
    received_at: Any = None,
) -> tuple[int, dict]:
    session = db.sessionmaker_for(db.writer(engine))()
    try:
        status, payload = handle_webhook(session, settings, body, signature, received_at)
        # "Nothing changes on any error": keep the work only for a success answer.
        if 200 <= status < 300:
            session.commit()
        else:
            session.rollback()
        return status, payload
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def reset_completion(request: web.Request) -> web.Response:
    """POST /webhooks/resets: hand the signed body to :func:`handle_webhook`.

    The time of receipt is taken as the request arrives (before any wait for the database):
    the link's expiry is judged by it, not by the ``completed_at`` the body claims.
    """
    app = request.app
    received_at = app[CLOCK]()
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    status, payload = await _run_db(
        app,
        _apply_reset,
        app[ENGINE],
        app[SETTINGS],
        body,
        request.headers.get(SIGNATURE_HEADER),
        received_at,
    )
    if status == 403:
        app[REFUSALS].warn(
            "reset-signature",
            f"reset completion refused ({payload.get('error')})"
            f" at {request.path} from {request.remote}",
        )
    return web.json_response(payload, status=status)


# --- Health ----------------------------------------------------------------------------------


class HealthProbe:
    """Asks the database whether it answers, and on SQLite whether a writer holds it.

    It never queues behind webhook work (threads of its own) and never waits for a lock:
    on SQLite it opens its own connection with a 0.2 s busy timeout, reads the schema
    version, then tries to take the write lock and gives it back at once: "busy" when
    another process (an import, a send) holds it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = db.is_sqlite(engine)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify-health")
        self._own: Engine | None = None
        database = engine.url.database
        if self.sqlite and database and database != ":memory:":
            # Read-write but never create (mode=rw): a health check must not make a database.
            uri = f"file:{urllib.parse.quote(os.path.abspath(database))}?mode=rw"
            self._own = create_engine(
                "sqlite://",
                poolclass=NullPool,
                creator=lambda: sqlite3.connect(
                    uri, uri=True, timeout=0.2, isolation_level=None, check_same_thread=False
                ),
            )

    def check(self) -> str:
        """``ok`` or ``busy``; raises when the database cannot be read."""
        if self._own is None:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return "ok"
        with self._own.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except OperationalError as exc:
                if "locked" in str(exc.orig).lower() or "busy" in str(exc.orig).lower():
                    return "busy"
                raise
            conn.exec_driver_sql("ROLLBACK")
        return "ok"

    def close(self) -> None:
        """Stop the probe's threads (without waiting for a stuck one) and its engine."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._own is not None:
            self._own.dispose()


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz within a second: 200 ``ok``; 200 ``busy`` while another process holds
    the SQLite write lock (webhooks then wait their turn); 503 when the database does not
    answer in time or fails (for load balancers)."""
    probe = request.app[HEALTH]
    loop = asyncio.get_running_loop()
    try:
        state = await asyncio.wait_for(
            loop.run_in_executor(probe.executor, probe.check), HEALTH_TIMEOUT
        )
    except TimeoutError:
        log.warning("health check: the database did not answer within %g s", HEALTH_TIMEOUT)
        return web.json_response({"status": "error", "database": "timeout"}, status=503)
    except Exception as exc:  # any failure means "not healthy"; never leak the URL
        log.warning("health check failed: %s", type(exc).__name__)
        return web.json_response({"status": "error", "database": type(exc).__name__}, status=503)
    if state == "busy":
        return web.json_response(
            {
                "status": "ok",
                "database": "busy",
                "detail": "another process holds the write lock; webhooks wait their turn",
            }
        )
    return web.json_response({"status": "ok", "database": "ok"})


def serve(
    engine: Engine,
    settings: Settings,
    host: str,
    port: int,
    announce: Callable[[str], None] = print,
) -> None:
    """Run the app until interrupted (what `notify serve` does)."""
    app = make_app(engine, settings)
    try:
        web.run_app(app, host=host, port=port, print=announce, access_log=log)
    except OSError as exc:  # binding: the port is taken, or the address is not this host's
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise NotifyError(f"cannot listen on {host}:{port}: {why}") from None
