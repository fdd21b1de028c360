"""A local stand-in for Twilio's Messages API (2010-04-01), for tests and benchmarks.

It speaks the API the official ``twilio`` library uses: form-encoded POSTs, HTTP Basic auth,
Twilio's JSON shapes (messages, list pages, errors) and signed status callbacks. Point the
library at it with ``NOTIFY_TWILIO_API_URL=double.url``. It runs an aiohttp app in a thread
of its own (with its own event loop), so a ``notify`` subprocess can reach it too.

In a test::

    from tests.twilio_double import TwilioDouble, twilio_double_fixture  # noqa: F401

    with TwilioDouble(invalid={"+15005550001"}, opted_out={"+15005550004"}, rate=50) as tw:
        settings = Settings(twilio_account_sid=tw.account_sid,
                            twilio_auth_token=tw.auth_token, twilio_api_url=tw.url, ...)
        ...
        assert len(tw.messages) == 3 and tw.rejected_429 == 0
        await tw.advance(sid, "delivered")   # signed StatusCallback to the URL it was given
        await tw.deliver_all()               # every non-final message -> sent -> delivered

Endpoints: POST/GET ``/2010-04-01/Accounts/{Sid}/Messages.json`` (create; list with ``To``,
``From``, ``DateSent``, ``DateSent<``, ``DateSent>``, ``PageSize``, ``Page``), GET
``.../Messages/{Sid}.json`` (fetch). Faults: ``invalid`` numbers -> 400/21211, ``opted_out``
-> 400/21610, ``errors={number: code}`` -> 400 with that code (21408, 21614, ...), a token
bucket ``rate`` per second (``burst`` deep, default one second's worth) -> 429 with
``Retry-After``, ``fail_every=N`` / ``fail_numbers`` -> 500 (``fail_status``, ``Retry-After:
fail_retry_after`` if set), ``delay`` seconds before
answering a create (the message IS created: a client timeout leaves it in doubt).
Outages: ``double.go_down("5xx", seconds)`` answers every API request (create, list, fetch)
with ``fail_status`` for ``seconds``; ``double.go_down("refuse", seconds)`` stops listening
(connection refused) and serves again on the same port after ``seconds`` (None: until
``double.recover()``).
Messages start ``queued`` (``accepted`` through a Messaging Service) with ``date_sent`` null,
as at Twilio; ``date_sent`` is set once advanced to ``sent``.

Control endpoints for other processes: GET ``/_double/messages``, GET ``/_double/stats``,
POST ``/_double/advance`` ``{"sid", "status", "error_code"}``, POST ``/_double/deliver_all``.

Standalone::

    python -m tests.twilio_double --port 8099 [--sid AC...] [--token T] [--rate 50]
        [--invalid +1...,+1...] [--opted-out ...] [--fail-every N] [--delay S]
        [--auto-deliver S] [--record FILE] [--port-file FILE]

prints ``listening http://127.0.0.1:PORT``; ``--record`` appends one JSON line per created
message (sid, to, from, body, time, monotonic); ``--auto-deliver S`` sends ``sent`` and
``delivered`` callbacks S seconds after each create.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.smtp_sink import window_max
from tests.standalone import serve_until_signalled

DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEFAULT_AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
API = "/2010-04-01/Accounts/{account}"
SERVICE_NUMBER = "+15005550006"  # the number a Messaging Service "picks"
FINAL = {"delivered", "undelivered", "failed", "read", "canceled"}
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ERROR_TEXT = {
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by "
    "the 'To' number: {to}.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21617: "The concatenated message body exceeds the 1600 character limit.",
}
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = set("^{}\\[~]|€\f")


def segments(body: str) -> int:
    """SMS segments Twilio would bill: GSM-7 160/153, else UCS-2 70/67 (UTF-16 units)."""
    if all(c in GSM7 or c in GSM7_EXT for c in body):
        units, single, multi = sum(2 if c in GSM7_EXT else 1 for c in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for a form POST of ``params`` to ``url``."""
    return RequestValidator(auth_token).compute_signature(url, params)


async def post_signed(
    url: str,
    params: dict[str, str],
    auth_token: str = DEFAULT_AUTH_TOKEN,
    *,
    signature: str | None = None,
    sign_url: str | None = None,
) -> tuple[int, str]:
    """POST a form to ``url`` signed as Twilio would; returns (HTTP status, body).

    ``sign_url`` signs for another URL than the one posted to (what a proxy in front of
    ``notify serve`` looks like); ``signature`` sends exactly that header value instead.
    """
    header = signature if signature is not None else sign(auth_token, sign_url or url, params)
    headers = {"X-Twilio-Signature": header} if header else {}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=params, headers=headers) as resp:
            return resp.status, await resp.text()


def _rfc2822(when: datetime | None) -> str | None:
    return format_datetime(when) if when else None


def _error(
    status: int,
    code: int,
    message: str,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "status": status,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
    }
    return web.json_response(body, status=status, headers=headers)


class _Message:
    """One message the double created: Twilio's JSON plus what it needs to call back."""

    def __init__(self, account: str, form: dict[str, str], number: int) -> None:
        now = datetime.now(UTC)
        self.sid = "SM" + uuid.uuid4().hex
        self.created = now
        self.sent: datetime | None = None
        self.updated = now
        self.arrived = time.monotonic()
        self.number = number  # creation order, to sort equal timestamps
        self.account = account
        self.to = form["To"]
        self.service = form.get("MessagingServiceSid")
        self.from_ = form.get("From")
        self.body = form.get("Body", "")
        self.status = "accepted" if self.service and not self.from_ else "queued"
        self.callback = form.get("StatusCallback")
        self.error_code: int | None = None

    def json(self) -> dict[str, Any]:
        uri = f"{API.format(account=self.account)}/Messages/{self.sid}.json"
        return {
            "account_sid": self.account,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": _rfc2822(self.created),
            "date_sent": _rfc2822(self.sent),
            "date_updated": _rfc2822(self.updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": "Unreachable destination handset" if self.error_code else None,
            "from": self.from_,
            "messaging_service_sid": self.service,
            "num_media": "0",
            "num_segments": str(segments(self.body)),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "to": self.to,
            "uri": uri,
            "subresource_uris": {
                "media": uri.replace(".json", "/Media.json"),
                "feedback": uri.replace(".json", "/Feedback.json"),
            },
        }


def _parse_filter_date(text: str) -> tuple[datetime, bool]:
    """A DateSent filter value: (moment, whole_day)."""
    if len(text) == 10:
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=UTC), True
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), False


class TwilioDouble:
    """Twilio's Messages API on 127.0.0.1, served from a background thread."""

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float | None = None,
        burst: float | None = None,
        retry_after: float | None = None,
        invalid: Iterable[str] = (),
        opted_out: Iterable[str] = (),
        errors: dict[str, int] | None = None,
        undeliverable: Iterable[str] = (),
        fail_every: int = 0,
        fail_numbers: Iterable[str] = (),
        fail_status: int = 500,
        fail_retry_after: float | None = None,
        delay: float = 0.0,
        auto_deliver: float | None = None,
        record_path: str | Path | None = None,
    ) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.host, self.requested_port = host, port
        self.rate, self.burst = rate, (burst if burst is not None else max(1.0, rate or 1.0))
        self.retry_after = retry_after
        self.invalid, self.opted_out = set(invalid), set(opted_out)
        self.errors = dict(errors or {})
        self.undeliverable = set(undeliverable)
        self.fail_every, self.fail_numbers = fail_every, set(fail_numbers)
        self.fail_status, self.fail_retry_after = fail_status, fail_retry_after
        self.delay, self.auto_deliver = delay, auto_deliver
        self.record_path = Path(record_path) if record_path else None
        self._lock = threading.Lock()
        self._messages: dict[str, _Message] = {}
        self._tokens = self.burst
        self._refilled = time.monotonic()
        self.creates = 0  # POSTs that passed authentication
        self.rejected_429 = 0
        self.failed_5xx = 0
        self.callbacks: list[dict[str, Any]] = []  # every status callback attempted
        self.down_until = 0.0  # monotonic time until which every API request answers 5xx
        self.down_answers = 0  # API requests answered 5xx by an outage
        self._site: web.TCPSite | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> TwilioDouble:
        """Serve in a background thread; returns self once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._shutdown())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="twilio-double", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> None:
        app = web.Application()
        base = "/2010-04-01/Accounts/{account}"
        app.router.add_post(base + "/Messages.json", self._create)
        app.router.add_get(base + "/Messages.json", self._list)
        app.router.add_get(base + "/Messages/{sid}.json", self._fetch)
        app.router.add_get("/_double/messages", self._ctl_messages)
        app.router.add_get("/_double/stats", self._ctl_stats)
        app.router.add_post("/_double/advance", self._ctl_advance)
        app.router.add_post("/_double/deliver_all", self._ctl_deliver_all)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        self._site = site
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession()

    async def _shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = self._loop = None

    def __enter__(self) -> TwilioDouble:
        return self.start()

    def add_message(
        self, to: str, body: str, created: datetime, from_: str = "+15005550006"
    ) -> str:
        """Store a message as if created at ``created`` by someone else (another campaign,
        a login code): what a reconciliation must not mistake for ours. Returns its SID."""
        with self._lock:
            self.creates += 1
            message = _Message(
                self.account_sid, {"To": to, "From": from_, "Body": body}, self.creates
            )
            message.created = message.updated = created
            self._messages[message.sid] = message
        return message.sid

    # -- outages ----------------------------------------------------------------------------

    def go_down(self, mode: str, seconds: float | None = None) -> None:
        """Make the API unavailable: ``"5xx"`` answers (for ``seconds``) or ``"refuse"``d
        connections (back after ``seconds``, or at :meth:`recover`)."""
        if mode == "5xx":
            self.down_until = time.monotonic() + (seconds if seconds is not None else 1e9)
            return
        if mode != "refuse":
            raise ValueError(f"outage mode must be 5xx or refuse, not {mode!r}")
        assert self._loop is not None, "double not started"

        async def stop_listening() -> None:
            if self._site is not None:
                await self._site.stop()
                self._site = None
            # As a server that went away: open keep-alive connections are cut too.
            if self._runner is not None and self._runner.server is not None:
                for transport in list(self._runner.server._connections.values()):
                    transport.abort()
            if seconds is not None:
                asyncio.get_running_loop().call_later(
                    seconds, lambda: asyncio.ensure_future(self._listen_again())
                )

        asyncio.run_coroutine_threadsafe(stop_listening(), self._loop).result(10)

    def recover(self) -> None:
        """End an outage at once."""
        self.down_until = 0.0
        if self._site is None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._listen_again(), self._loop).result(10)

    async def _listen_again(self) -> None:
        if self._site is None and self._runner is not None:
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self._site = site

    def _outage_answer(self) -> web.Response | None:
        if time.monotonic() >= self.down_until:
            return None
        with self._lock:
            self.down_answers += 1
        return _error(self.fail_status, 20500, "Service Unavailable (test double outage)")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL replacing https://api.twilio.com (NOTIFY_TWILIO_API_URL)."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point notify at this double."""
        return {
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "NOTIFY_TWILIO_API_URL": self.url,
        }

    # -- the API ---------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        expected = (
            "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        )
        if header != expected or request.match_info["account"] != self.account_sid:
            return _error(
                401, 20003, "Authenticate", headers={"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        return None

    def _take_token(self) -> float | None:
        """None if a request may pass now, else seconds until it could."""
        if not self.rate:
            return None
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return None
            return (1 - self._tokens) / self.rate

    async def _create(self, request: web.Request) -> web.Response:
        denied = self._authorized(request) or self._outage_answer()
        if denied:
            return denied
        form = {k: str(v) for k, v in (await request.post()).items()}
        with self._lock:
            self.creates += 1
            number = self.creates
        wait = self._take_token()
        if wait is not None:
            with self._lock:
                self.rejected_429 += 1
            seconds = self.retry_after if self.retry_after is not None else max(1, math.ceil(wait))
            return _error(429, 20429, "Too Many Requests", headers={"Retry-After": f"{seconds:g}"})
        to = form.get("To", "")
        if (self.fail_every and number % self.fail_every == 0) or to in self.fail_numbers:
            with self._lock:
                self.failed_5xx += 1
            headers = (
                {"Retry-After": f"{self.fail_retry_after:g}"}
                if self.fail_retry_after is not None
                else None
            )
            return _error(self.fail_status, 20500, "Internal Server Error", headers=headers)
        problem = self._validate(form)
        if problem:
            return _error(400, problem, ERROR_TEXT.get(problem, "Invalid request").format(to=to))
        message = self._store(form, number)
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response(message.json(), status=201)

    def _validate(self, form: dict[str, str]) -> int | None:
        to = form.get("To", "")
        if not to:
            return 21604
        if not form.get("Body"):
            return 21602
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return 21603
        if len(form["Body"]) > 1600:
            return 21617
        if to in self.invalid or not E164.match(to):
            return 21211
        if to in self.opted_out:
            return 21610
        return self.errors.get(to)

    def _store(self, form: dict[str, str], number: int) -> _Message:
        message = _Message(self.account_sid, form, number)
        with self._lock:
            self._messages[message.sid] = message
        if self.record_path:
            line = (
                json.dumps(
                    {
                        "sid": message.sid,
                        "to": message.to,
                        "from": message.from_,
                        "body": message.body,
                        "time": time.time(),
                        "monotonic": message.arrived,
                    }
                )
                + "\n"
            )
            fd = os.open(self.record_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        if self.auto_deliver is not None:
            asyncio.get_running_loop().call_later(
                self.auto_deliver, lambda: asyncio.ensure_future(self._deliver(message.sid))
            )
        return message

    async def _fetch(self, request: web.Request) -> web.Response:
        denied = self._authorized(request) or self._outage_answer()
        if denied:
            return denied
        with self._lock:
            message = self._messages.get(request.match_info["sid"])
            body = message.json() if message else None
        if body is None:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(body)

    async def _list(self, request: web.Request) -> web.Response:
        denied = self._authorized(request) or self._outage_answer()
        if denied:
            return denied
        query = request.query
        try:
            size = min(1000, max(1, int(query.get("PageSize", "50"))))
            page = max(0, int(query.get("Page", "0")))
            chosen = self._filtered(query)
        except ValueError as exc:
            return _error(400, 20001, f"Invalid parameter: {exc}")
        rows = chosen[page * size : (page + 1) * size]
        params = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}
        base = f"{API.format(account=self.account_sid)}/Messages.json"

        def page_uri(n: int) -> str:
            return (
                base
                + "?"
                + urlencode(
                    {
                        **params,
                        "PageSize": size,
                        "Page": n,
                        **({"PageToken": f"PA{n}"} if n else {}),
                    }
                )
            )

        more = (page + 1) * size < len(chosen)
        return web.json_response(
            {
                "messages": [m.json() for m in rows],
                "first_page_uri": page_uri(0),
                "uri": page_uri(page),
                "next_page_uri": page_uri(page + 1) if more else None,
                "previous_page_uri": page_uri(page - 1) if page else None,
                "page": page,
                "page_size": size,
                "start": page * size,
                "end": page * size + max(0, len(rows) - 1),
            }
        )

    def _filtered(self, query: Any) -> list[_Message]:
        with self._lock:
            chosen = list(self._messages.values())
        if "To" in query:
            chosen = [m for m in chosen if m.to == query["To"]]
        if "From" in query:
            chosen = [m for m in chosen if m.from_ == query["From"]]
        for key, keep in (("DateSent", "eq"), ("DateSent>", "ge"), ("DateSent<", "le")):
            if key in query:
                moment, whole_day = _parse_filter_date(query[key])
                chosen = [
                    m for m in chosen if m.sent and self._date_ok(m.sent, moment, whole_day, keep)
                ]
        # Newest first, as Twilio lists them.
        return sorted(chosen, key=lambda m: (m.created, m.number), reverse=True)

    @staticmethod
    def _date_ok(sent: datetime, moment: datetime, whole_day: bool, keep: str) -> bool:
        value = sent.date() if whole_day else sent.replace(microsecond=0)
        target = moment.date() if whole_day else moment
        return {"eq": value == target, "ge": value >= target, "le": value <= target}[keep]

    # -- status changes and callbacks ------------------------------------------------------

    async def _advance(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
    ) -> int | None:
        with self._lock:
            message = self._messages[sid]
            now = datetime.now(UTC)
            message.status, message.updated = status, now
            if status in ("sent", "delivered", "undelivered", "failed") and not message.sent:
                message.sent = now
            if message.service and not message.from_:
                message.from_ = SERVICE_NUMBER
            if status in ("undelivered", "failed"):
                message.error_code = error_code or 30003
            params = self._callback_params(message)
            url = message.callback
        if not url:
            return None
        return await self._post_callback(url, params)

    def _callback_params(self, message: _Message) -> dict[str, str]:
        params = {
            "AccountSid": message.account,
            "ApiVersion": "2010-04-01",
            "From": message.from_ or "",
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "MessageStatus": message.status,
            "SmsStatus": message.status,
            "To": message.to,
        }
        if message.service:
            params["MessagingServiceSid"] = message.service
        if message.error_code:
            params["ErrorCode"] = str(message.error_code)
        return params

    async def _post_callback(self, url: str, params: dict[str, str]) -> int | None:
        entry: dict[str, Any] = {"url": url, "params": params, "status": None, "error": None}
        headers = {"X-Twilio-Signature": sign(self.auth_token, url, params)}
        try:
            assert self._session is not None
            async with self._session.post(url, data=params, headers=headers) as resp:
                entry["status"] = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            entry["error"] = str(exc)
        with self._lock:
            self.callbacks.append(entry)
        return entry["status"]

    async def _deliver(self, sid: str, final: str = "delivered") -> list[int | None]:
        with self._lock:
            message = self._messages[sid]
            if message.status in FINAL:
                return []
            undeliverable = message.to in self.undeliverable
        answers = [await self._advance(sid, "sent")]
        if undeliverable:
            answers.append(await self._advance(sid, "undelivered", 30003))
        else:
            answers.append(await self._advance(sid, final))
        return answers

    def _run(self, coro: Any) -> asyncio.Future:
        assert self._loop is not None, "double not started"
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def advance(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
    ) -> int | None:
        """Set a message's status and POST the signed callback; returns its HTTP status."""
        return await self._run(self._advance(sid, status, error_code))

    def advance_sync(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
    ) -> int | None:
        """:meth:`advance` for synchronous code (never from the loop serving the callback)."""
        assert self._loop is not None, "double not started"
        return asyncio.run_coroutine_threadsafe(
            self._advance(sid, status, error_code), self._loop
        ).result(30)

    async def deliver_all(self, final: str = "delivered") -> int:
        """Move every non-final message to sent, then ``final`` (``undelivered`` for numbers
        in ``undeliverable``), with callbacks; returns how many moved."""
        with self._lock:
            sids = [m.sid for m in self._messages.values() if m.status not in FINAL]
        for sid in sids:
            await self._run(self._deliver(sid, final))
        return len(sids)

    # -- inspection ------------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every created message (Twilio JSON plus ``status_callback``), in creation order."""
        with self._lock:
            ordered = sorted(self._messages.values(), key=lambda m: m.number)
            return [
                {**m.json(), "status_callback": m.callback, "arrived": m.arrived} for m in ordered
            ]

    def message(self, sid: str) -> dict[str, Any]:
        """One created message by SID."""
        with self._lock:
            m = self._messages[sid]
            return {**m.json(), "status_callback": m.callback, "arrived": m.arrived}

    def window_max(self, seconds: float = 1.0) -> int:
        """The most messages created within any window of ``seconds`` (rate at the provider)."""
        with self._lock:
            return window_max([m.arrived for m in self._messages.values()], seconds)

    def stats(self) -> dict[str, Any]:
        """Counters: created, 429s, 5xx, callbacks, window_max over one second."""
        with self._lock:
            created, callbacks = len(self._messages), len(self.callbacks)
        return {
            "created": created,
            "creates": self.creates,
            "rejected_429": self.rejected_429,
            "failed_5xx": self.failed_5xx,
            "callbacks": callbacks,
            "window_max_1s": self.window_max(1.0),
        }

    # -- control endpoints (for tests driving a subprocess) --------------------------------

    async def _ctl_messages(self, request: web.Request) -> web.Response:
        return web.json_response(self.messages)

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _ctl_advance(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = await self._advance(body["sid"], body["status"], body.get("error_code"))
        return web.json_response({"callback_status": status})

    async def _ctl_deliver_all(self, request: web.Request) -> web.Response:
        final = (
            (await request.json()).get("status", "delivered")
            if request.can_read_body
            else "delivered"
        )
        with self._lock:
            sids = [m.sid for m in self._messages.values() if m.status not in FINAL]
        for sid in sids:
            await self._deliver(sid, final)
        return web.json_response({"moved": len(sids)})


@pytest.fixture(name="twilio_double")
def twilio_double_fixture() -> Iterator[TwilioDouble]:
    """A started double with the default credentials and no faults."""
    with TwilioDouble() as double:
        yield double


def _numbers(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def main(argv: list[str] | None = None) -> None:
    """Run the double until SIGTERM/SIGINT (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tests.twilio_double")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--burst", type=float)
    parser.add_argument("--invalid", default="")
    parser.add_argument("--opted-out", default="")
    parser.add_argument("--undeliverable", default="")
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--auto-deliver", type=float)
    parser.add_argument("--record")
    parser.add_argument("--port-file")
    args = parser.parse_args(argv)
    double = TwilioDouble(
        args.sid,
        args.token,
        host=args.host,
        port=args.port,
        rate=args.rate,
        burst=args.burst,
        invalid=_numbers(args.invalid),
        opted_out=_numbers(args.opted_out),
        undeliverable=_numbers(args.undeliverable),
        fail_every=args.fail_every,
        delay=args.delay,
        auto_deliver=args.auto_deliver,
        record_path=args.record,
    )
    serve_until_signalled(double, args.port_file, lambda: [f"listening {double.url}"])


if __name__ == "__main__":
    main()
