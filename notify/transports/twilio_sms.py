"""SMS through the official ``twilio`` library, async (``create_async`` and friends).

* ``NOTIFY_TWILIO_API_URL`` replaces ``https://api.twilio.com``: the library builds every URL
  from the ``api`` domain's ``base_url`` (``Domain.absolute_url``), including the
  ``next_page_uri`` of list pages, so setting ``client.api.base_url`` is enough.
* The library's own retries stay off (``AsyncTwilioHttpClient`` only retries when given
  ``max_retries``): the engine owns retries, backoff and rate.
* ``AsyncTwilioHttpClient`` drops the client timeout (it passes the per-call ``timeout=None``
  to aiohttp, i.e. no limit) and keeps no response headers on ``TwilioRestException``.
  :class:`NotifyHttpClient` fixes both: a real ``ClientTimeout``, and the status and headers
  of each response put in a per-task box (a contextvar), so that concurrent pushes each read
  their own ``Retry-After``.

Classification: 201 -> ``sent`` (SID, status ``queued``/``accepted``); 429 and 5xx ->
``retry`` with the HTTP status as code and ``retry_after`` from the header; other 4xx ->
``failed`` with Twilio's code (``21211`` invalid number, ``21610`` opted out, ``21408``,
``21614``, ...); 401 / 20003 / 404 on the account -> :class:`TransportConfigError`.
Network errors -> ``retry`` ``"disconnected"``/``"timeout"``. 5xx and network errors are
marked ``Result.outage`` (``"server"`` for a 5xx answer, ``"connection"`` otherwise): the
engine pauses the channel on them. When the request may have reached Twilio (timeout or
connection lost after sending), push first looks the message up by recipient, creation time
(at or after the push began) and exact body, and reports ``sent`` with the matching SIDs as
``candidates`` (the engine adopts the first no row holds); an SMS in doubt is reconciled,
never blindly repeated. Lookups raise :class:`ProviderDown` when Twilio cannot be reached or
answers 5xx, and every request has a timeout.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from notify.config import Settings
from notify.times import as_utc
from notify.transports.base import (
    Found,
    Messenger,
    Outgoing,
    ProviderDown,
    Result,
    TransportConfigError,
    TransportError,
    parse_retry_after,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# Seconds to make a TCP connection to the API (at most the step's timeout).
CONNECT_TIMEOUT = 10.0
# Twilio's date_created has whole-second resolution; allow that plus a little clock skew.
CREATED_SLACK = timedelta(seconds=2)
LIST_PAGE_SIZE = 1000  # Twilio's maximum
LIST_MAX_PAGES = 10
# 4xx codes that are about load, not about the message: try again later.
RETRYABLE_CODES = {20429, 21611}
# 4xx codes that mean the account or credentials are wrong for every message.
CONFIG_CODES = {20003, 20005, 20404}

_RESPONSE_BOX: ContextVar[dict[str, Any] | None] = ContextVar(
    "notify_twilio_response", default=None
)


class NotifyHttpClient(AsyncTwilioHttpClient):
    """AsyncTwilioHttpClient with a real timeout, no retries and per-task response headers."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, pool_size: int = 10) -> None:
        # pool_connections=False: the parent would build its ClientSession here, outside any
        # event loop; ours is made on first use. max_retries=None: no aiohttp_retry wrapper.
        super().__init__(pool_connections=False, timeout=timeout, max_retries=None)
        self.timeout: float = timeout
        self.pool_size = max(1, pool_size)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size)
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """One HTTP request; status and headers also go to the calling task's box."""
        # Requests are deliberately not logged: they carry phone numbers and message text.
        headers = dict(headers or {})
        if auth:
            pair = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = "Basic " + pair
        total = timeout or self.timeout
        # A connection to Twilio's API is made in well under a second; one still not made
        # after CONNECT_TIMEOUT is an outage, and says so then rather than after the whole
        # step's timeout and a lookup's (a connection never made carried no request).
        limit = aiohttp.ClientTimeout(total=total, sock_connect=min(total, CONNECT_TIMEOUT))
        async with self._get_session().request(
            method.upper(),
            url,
            params=params,
            data=data,
            headers=headers,
            timeout=limit,
            allow_redirects=allow_redirects,
        ) as resp:
            text = await resp.text()
        box = _RESPONSE_BOX.get()
        if box is not None:
            box["status"] = resp.status
            box["headers"] = resp.headers  # case-insensitive multidict, like HTTP
        return Response(resp.status, text, resp.headers)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _found(message: Any) -> Found:
    created = message.date_created
    code = message.error_code
    return Found(
        provider_id=message.sid,
        status=str(message.status) if message.status is not None else "unknown",
        to=message.to,
        created_at=created if isinstance(created, datetime) else None,
        body=message.body,
        error_code=str(code) if code not in (None, 0) else None,
        error_message=message.error_message,
    )


def _network_text(exc: BaseException) -> str:
    """A network failure in words ("timeout" for a timeout, whose text is empty)."""
    return "timeout" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)


def _error_text(exc: BaseException) -> str:
    text = str(getattr(exc, "msg", None) or getattr(exc, "detail", None) or exc)
    # The library prefixes Twilio's own message with "Unable to create record: ".
    return re.sub(r"^Unable to \w+ record: ", "", text.strip())[:500]


class TwilioMessenger(Messenger):
    """SMS through Twilio's Messages API (or a double at ``NOTIFY_TWILIO_API_URL``)."""

    name = "twilio"
    channel = "sms"

    def __init__(
        self,
        settings: Settings,
        concurrency: int = 10,
        *,
        default_sender: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        reconcile: bool = True,
    ) -> None:
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            raise TransportConfigError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set")
        self.account_sid = settings.twilio_account_sid
        self.default_sender = default_sender
        self.status_callback = settings.status_callback_url
        self.reconcile = reconcile
        self.http = NotifyHttpClient(timeout=timeout, pool_size=concurrency)
        self.client = Client(self.account_sid, settings.twilio_auth_token, http_client=self.http)
        if settings.twilio_api_url:
            self.client.api.base_url = settings.twilio_api_url.rstrip("/")
            # TWILIO_EDGE / TWILIO_REGION would rewrite the host of our replacement URL.
            self.client.edge = None
            self.client.region = None

    @property
    def provider(self) -> str:
        """``twilio``, or ``twilio:URL`` when NOTIFY_TWILIO_API_URL replaces Twilio's."""
        base = self.client.api.base_url
        return "twilio" if base == "https://api.twilio.com" else f"twilio:{base}"

    def __repr__(self) -> str:  # never show the token
        return f"<TwilioMessenger {self.account_sid} via {self.client.api.base_url}>"

    def _create_kwargs(self, item: Outgoing) -> dict[str, Any]:
        sender = item.sender or self.default_sender
        if not sender:
            raise TransportConfigError(
                "no SMS sender: set NOTIFY_SMS_FROM or the campaign's sms_from"
            )
        kwargs: dict[str, Any] = {"to": item.to, "body": item.body}
        if sender.startswith("MG"):
            kwargs["messaging_service_sid"] = sender
        else:
            kwargs["from_"] = sender
        if self.status_callback:
            kwargs["status_callback"] = self.status_callback
        return kwargs

    async def push(self, item: Outgoing) -> Result:
        """Create the message at Twilio; classify the answer (see the module docstring)."""
        kwargs = self._create_kwargs(item)
        box: dict[str, Any] = {}
        token = _RESPONSE_BOX.set(box)
        await item.wait_ready()
        started = datetime.now(UTC)
        try:
            message = await self.client.messages.create_async(**kwargs)
        except TwilioException as exc:
            return self._classify_rest(exc, box)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Never connected (refused, unreachable, or no answer to connect within
            # CONNECT_TIMEOUT): the request cannot have reached Twilio.
            return Result(
                "retry",
                error_code="timeout" if isinstance(exc, TimeoutError) else "disconnected",
                error_message=str(exc)[:500],
                outage="connection",
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            return await self._in_doubt(item, kwargs, started, exc)
        finally:
            _RESPONSE_BOX.reset(token)
        return Result("sent", provider_id=message.sid, provider_status=str(message.status))

    def _classify_rest(self, exc: TwilioException, box: dict[str, Any]) -> Result:
        status = getattr(exc, "status", None) or box.get("status") or 0
        code = getattr(exc, "code", None)
        text = _error_text(exc)
        if status == 401 or code in CONFIG_CODES:
            raise TransportConfigError(
                f"Twilio refused account {self.account_sid}: {text} "
                "(check TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN)"
            ) from None
        if status == 429 or status >= 500 or code in RETRYABLE_CODES:
            headers = box.get("headers") or {}
            retry_after = parse_retry_after(headers.get("Retry-After"))
            error_code = str(status) if status == 429 or status >= 500 else str(code)
            return Result(
                "retry",
                error_code=error_code,
                error_message=text,
                retry_after=retry_after,
                outage="server" if status >= 500 else None,
            )
        return Result("failed", error_code=str(code or status), error_message=text)

    async def _in_doubt(
        self, item: Outgoing, kwargs: dict[str, Any], started: datetime, exc: BaseException
    ) -> Result:
        """Timeout or lost connection after sending: ask Twilio before anyone sends again."""
        code = "timeout" if isinstance(exc, TimeoutError) else "disconnected"
        detail = f"{code} talking to Twilio: {exc}".strip()[:500]
        if not item.lookup_allowed():
            # The channel was declared down (or the run gave up) while this push waited:
            # no new request but the probe's; it stays in doubt, looked up next time.
            detail += "; not looked up (Twilio is unavailable)"
        elif self.reconcile:
            try:
                found = await self.find_sent(item.to, started)
            except (TransportError, TransportConfigError) as lookup_exc:
                detail += f"; lookup failed: {lookup_exc}"[:200]
            else:
                sender = kwargs.get("from_")
                # Proof: exactly this body, created at or after this push began.
                hits = [
                    hit
                    for hit in found
                    if hit.body == item.body
                    and (
                        hit.created_at is None
                        or as_utc(hit.created_at) >= as_utc(started) - CREATED_SLACK
                    )
                ]
                if hits:
                    log.info(
                        "in-doubt SMS to row %s found at Twilio as %s",
                        item.row_id,
                        hits[0].provider_id,
                    )
                    return Result(
                        "sent",
                        provider_id=hits[0].provider_id,
                        provider_status=hits[0].status,
                        error_message=f"reconciled after {code}"
                        + ("" if sender else " (messaging service)"),
                        candidates=tuple(hit.provider_id for hit in hits),
                    )
        return Result(
            "retry", error_code=code, error_message=detail, outage="connection", in_doubt=True
        )

    async def find_sent(self, to: str, since: datetime) -> list[Found]:
        """Messages to ``to`` created at or after ``since`` (less 2 s), oldest first.

        Filters on ``date_created`` locally rather than with ``DateSent>``: Twilio sets
        ``date_sent`` only once a message leaves its queue, and an in-doubt message may
        still be queued.
        """
        cutoff = as_utc(since).replace(microsecond=0) - CREATED_SLACK
        found: list[Found] = []
        try:
            page = await self.client.messages.page_async(to=to, page_size=LIST_PAGE_SIZE)
            for _ in range(LIST_MAX_PAGES):
                for message in page:
                    created = message.date_created
                    if not isinstance(created, datetime) or created >= cutoff:
                        found.append(_found(message))
                page = await page.next_page_async()
                if page is None:
                    break
        except TwilioException as exc:
            self._raise_lookup(exc, f"listing messages to {to}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderDown(
                f"Twilio lookup of messages to {to} failed: {_network_text(exc)}"
            ) from None
        found.sort(key=lambda f: f.created_at or datetime.max.replace(tzinfo=UTC))
        return found

    async def fetch_status(self, provider_id: str) -> Found | None:
        """Twilio's current record of one message; None when Twilio does not know the SID."""
        try:
            message = await self.client.messages(provider_id).fetch_async()
        except TwilioRestException as exc:
            if exc.status == 404 and exc.code != 20003:
                return None
            self._raise_lookup(exc, f"fetching {provider_id}")
        except TwilioException as exc:
            self._raise_lookup(exc, f"fetching {provider_id}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderDown(
                f"Twilio lookup of {provider_id} failed: {_network_text(exc)}"
            ) from None
        return _found(message)

    def _raise_lookup(self, exc: TwilioException, what: str) -> None:
        status = getattr(exc, "status", None)
        if status is None and len(exc.args) > 1:  # Page errors: ("Unable to fetch page", resp)
            status = getattr(exc.args[1], "status_code", None)
        if status == 401 or getattr(exc, "code", None) == 20003:
            raise TransportConfigError(
                f"Twilio refused account {self.account_sid} while {what} "
                "(check TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN)"
            ) from None
        text = _error_text(exc)
        if len(exc.args) > 1:  # a page error carries the response: Twilio's own message
            try:
                text = str(json.loads(exc.args[1].text)["message"])[:500]
            except (AttributeError, TypeError, ValueError, KeyError):
                pass
        message = f"Twilio error while {what}: HTTP {status}: {text}"
        if status is not None and status >= 500:
            raise ProviderDown(message, kind="server") from None
        raise TransportError(message) from None

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self.http.close()
