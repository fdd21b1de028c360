"""The aiohttp app behind `notify serve`: Twilio status callbacks, reset completions, health.

Every request that changes something is authenticated first (Twilio's X-Twilio-Signature,
or the reset webhook's HMAC checked by ``notify.resets``); a request that fails any check
changes nothing. Database work runs on a small thread pool so the event loop keeps
answering while a transaction waits for a lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from notify import db, tracking
from notify.config import Settings, check_webhook_secret

log = logging.getLogger("notify.server")

TWILIO_STATUS_PATH = "/webhooks/twilio/status"
RESETS_PATH = "/webhooks/resets"
HEALTH_PATH = "/healthz"
# Twilio callbacks are well under 2 KB and reset completions a few hundred bytes; anything
# much larger is not one of ours.
MAX_BODY = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"

ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", Settings)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)

T = TypeVar("T")


def make_app(engine: Engine, settings: Settings) -> web.Application:
    """Build the webhook application (routes, body limit, DB thread pool).

    A NOTIFY_WEBHOOK_SECRET too short to resist guessing is refused here (ConfigError), so
    no way of starting the server can run with it.
    """
    check_webhook_secret(settings.webhook_secret)
    app = web.Application(client_max_size=MAX_BODY)
    app[ENGINE] = engine
    app[SETTINGS] = settings
    # SQLite has one writer at a time: a single DB thread avoids pointless lock contention.
    workers = 1 if db.is_sqlite(engine) else 4
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notify-db")
    app.router.add_post(TWILIO_STATUS_PATH, twilio_status)
    app.router.add_post(RESETS_PATH, reset_completion)
    app.router.add_get(HEALTH_PATH, healthz)
    app.on_cleanup.append(_shutdown_executor)
    return app


async def _shutdown_executor(app: web.Application) -> None:
    app[EXECUTOR].shutdown(wait=True)


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
    """The request body, or a 413 response when it is larger than any webhook of ours."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"body larger than {MAX_BODY} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body larger than {MAX_BODY} bytes")


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
    """Form fields of the body; ValueError when it is not a url-encoded UTF-8 form."""
    pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    return MultiDict(pairs)


def _apply_callback(engine: Engine, report: tracking.StatusReport) -> dict[str, Any]:
    engine = db.writer(engine)
    with db.session_scope(engine) as session:
        outcome = tracking.handle_callback(session, report)
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
        if not (settings.twilio_auth_token and settings.public_url):
            log.warning("Twilio callback refused: TWILIO_AUTH_TOKEN and NOTIFY_PUBLIC_URL "
                        "are both needed to check its signature")
        return _error(403, "missing or invalid X-Twilio-Signature")
    try:
        report = tracking.StatusReport.from_callback(params)
    except tracking.CallbackError as exc:
        return _error(400, str(exc))
    outcome = await _run_db(request.app, _apply_callback, request.app[ENGINE], report)
    return web.json_response({"ok": True, **outcome}, status=202 if outcome.get("early") else 200)


# --- Password reset completions ------------------------------------------------------------


def _apply_reset(
    engine: Engine, settings: Settings, body: bytes, signature: str | None
) -> tuple[int, dict]:
    try:
        from notify import resets  # written separately; the server must work without it
    except ImportError:
        return 503, {"error": "password resets are not available in this installation"}
    session = db.sessionmaker_for(db.writer(engine))()
    try:
        status, payload = resets.handle_webhook(session, settings, body, signature)
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
    """POST /webhooks/resets: hand the signed body to ``notify.resets.handle_webhook``."""
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    app = request.app
    status, payload = await _run_db(app, _apply_reset, app[ENGINE], app[SETTINGS], body,
                                    request.headers.get("X-Notify-Signature"))
    return web.json_response(payload, status=status)


# --- Health ----------------------------------------------------------------------------------


def _ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when the database answers, else 503 (for load balancers)."""
    try:
        await _run_db(request.app, _ping, request.app[ENGINE])
    except Exception as exc:  # any failure means "not healthy"; never leak the URL
        log.warning("health check failed: %s", type(exc).__name__)
        return web.json_response({"status": "error", "database": type(exc).__name__},
                                 status=503)
    return web.json_response({"status": "ok", "database": "ok"})


def serve(engine: Engine, settings: Settings, host: str, port: int,
          announce: Callable[[str], None] = print) -> None:
    """Run the app until interrupted (what `notify serve` does)."""
    app = make_app(engine, settings)
    web.run_app(app, host=host, port=port, print=announce, access_log=log)
