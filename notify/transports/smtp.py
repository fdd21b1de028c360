"""Email through an SMTP relay with aiosmtplib, over a pool of reused connections.

At most ``concurrency`` connections are open; a push takes an idle one (or opens one), sends
the raw message with ``sendmail`` and gives the connection back. A connection that broke,
timed out or was told ``421`` is closed and dropped; the next push opens a fresh one.

Classification of the relay's answers:

* 2xx -> ``sent``, provider id = the Message-ID, provider status = the 250 reply text
  (often carries the relay's queue id, useful proof);
* 4xx (at MAIL, RCPT or DATA) -> ``retry`` with the code, e.g. ``"451"``;
* 5xx (at MAIL, RCPT or DATA) -> ``failed`` with the code, e.g. ``"550"``, and the text;
* the relay itself unavailable: connection refused, reset or closed, DNS failure, TLS
  handshake failure, any timeout (``"timeout"``, else ``"disconnected"``), ``421`` at any
  point, or any refusal of the connection, EHLO or a 4xx to AUTH -> ``retry`` marked
  ``outage="connection"``: the engine pauses the channel and spends no attempt. When the
  connection broke after DATA began, the result is also ``in_doubt``.

Every step has a timeout (``timeout``, 30 s by default: connect, greeting, STARTTLS, EHLO,
AUTH, each command and the data), so a relay that accepts the connection and never answers
is an outage, not a hang.

Wrong credentials, a relay without STARTTLS (mode ``starttls``) or AUTH (username set), and
an untrusted certificate raise :class:`TransportConfigError`: no retry can fix them. Clients
trust the system CAs; ``SSL_CERT_FILE`` adds others (e.g. a test relay's self-signed one).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from functools import lru_cache

import aiosmtplib
from aiosmtplib.email import parse_address

from notify.config import Settings
from notify.transports.base import (
    Messenger,
    Outcome,
    Outgoing,
    Result,
    TransportConfigError,
)

DEFAULT_TIMEOUT = 30.0
# An idle connection older than this is probed with NOOP before use: relays close idle
# sessions (RFC 5321 suggests a 5-minute server timeout) and the loss only shows on write.
IDLE_PROBE_AFTER = 15.0


class _Conn:
    """A pooled SMTP connection and when it was last used."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.last_used = time.monotonic()

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a broken transport must never fail a push
            pass


def _mode_kwargs(mode: str) -> dict:
    """aiosmtplib's TLS flags for NOTIFY_SMTP_TLS."""
    if mode == "tls":
        return {"use_tls": True, "start_tls": False}
    if mode == "none":
        return {"use_tls": False, "start_tls": False}
    return {"use_tls": False, "start_tls": True}  # starttls: required, not opportunistic


def _classify_code(code: int, message: str) -> Result:
    outcome: Outcome = "retry" if 400 <= code < 500 else "failed"
    return Result(outcome, error_code=str(code), error_message=message.strip()[:500])


def _is_config_problem(exc: BaseException) -> bool:
    """Failures of the setup itself (TLS mode, certificate, AUTH), not of the moment."""
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return True
    # aiosmtplib raises a bare SMTPException when the relay lacks STARTTLS or AUTH.
    return type(exc) is aiosmtplib.SMTPException and ("STARTTLS" in str(exc) or "AUTH" in str(exc))


@lru_cache(maxsize=16)
def _check_sender(address: str) -> None:
    """aiosmtplib's own address check (ValueError for what it cannot put on the wire),
    remembered: the envelope sender is the same for every message of a campaign."""
    parse_address(address)


# An ASCII addr-spec that needs no quoting (what the importer stores): aiosmtplib's
# quote_address would return it as "<address>" unchanged.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def _plain_address(address: str) -> bool:
    return _PLAIN_ADDRESS.fullmatch(address) is not None


async def _envelope(client: aiosmtplib.SMTP, sender: str, to: str, options: list[str]) -> None:
    """MAIL and RCPT for plain addresses, as aiosmtplib's ``mail``/``rcpt`` send them, without
    parsing both addresses again for every message."""
    reply = await client.execute_command(
        b"MAIL",
        b"FROM:<" + sender.encode("ascii") + b">",
        *(option.encode("ascii") for option in options),
    )
    if reply.code != 250:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
    reply = await client.execute_command(b"RCPT", b"TO:<" + to.encode("ascii") + b">")
    if reply.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, to)


def _needs_utf8(*addresses: str | None) -> bool:
    return any(a is not None and not a.isascii() for a in addresses)


class SmtpMessenger(Messenger):
    """Email through ``settings.smtp_host`` over up to ``concurrency`` reused connections."""

    name = "smtp"
    channel = "email"

    def __init__(
        self,
        settings: Settings,
        concurrency: int = 10,
        *,
        default_sender: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not settings.smtp_host:
            raise TransportConfigError("NOTIFY_SMTP_HOST is not set")
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.mode = settings.smtp_tls
        self.username = settings.smtp_username
        self.password = settings.smtp_password
        self.default_sender = default_sender
        self.timeout = timeout
        self.tls_context = tls_context
        self.concurrency = max(1, concurrency)
        self._slots = asyncio.Semaphore(self.concurrency)
        self._idle: list[_Conn] = []
        self._local_hostname: str | None = None
        self.connections_opened = 0  # for tests and the summary: proves reuse
        self._closed = False

    async def _connect(self) -> _Conn:
        if self._local_hostname is None:
            # getfqdn may block on DNS: do it once, off the loop, and not for long.
            try:
                self._local_hostname = await asyncio.wait_for(
                    asyncio.to_thread(socket.getfqdn), self.timeout
                )
            except TimeoutError:
                self._local_hostname = socket.gethostname()
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            local_hostname=self._local_hostname,
            timeout=self.timeout,
            tls_context=self.tls_context,
            **_mode_kwargs(self.mode),
        )
        try:
            await client.connect()  # also STARTTLS and AUTH when configured
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            if exc.code < 500:  # e.g. 454: the relay cannot check credentials right now
                raise
            raise TransportConfigError(
                f"SMTP login to {self.host} as {self.username!r} refused: {exc.code} {exc.message}"
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            if _is_config_problem(exc):
                raise TransportConfigError(
                    f"SMTP relay {self.host}:{self.port} (NOTIFY_SMTP_TLS={self.mode}): {exc}"
                ) from None
            raise
        self.connections_opened += 1
        return _Conn(client)

    async def _checkout(self) -> _Conn:
        """An idle live connection, probed if it idled long, else a new one."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.client.is_connected:
                conn.close()
                continue
            if time.monotonic() - conn.last_used > IDLE_PROBE_AFTER:
                try:
                    await conn.client.noop()
                except (aiosmtplib.SMTPException, OSError):
                    conn.close()
                    continue
            return conn
        return await self._connect()

    def _checkin(self, conn: _Conn) -> None:
        if conn.client.is_connected and not self._closed:
            conn.last_used = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def push(self, item: Outgoing) -> Result:
        """Send ``item.data`` from ``item.sender`` to ``item.to``; classify the answer."""
        self._closed = False
        sender = item.sender or self.default_sender
        if not sender:
            raise TransportConfigError("no envelope sender for email (campaign sender_email)")
        async with self._slots:
            try:
                conn = await self._checkout()
            except (aiosmtplib.SMTPException, OSError) as exc:
                return self._connection_failure(exc)
            try:
                result = await self._send(conn, sender, item)
            except BaseException:
                # Cancelled or a bug mid-dialogue: the session state is unknown, drop it.
                conn.close()
                raise
            self._checkin(conn)
            return result

    async def _send(self, conn: _Conn, sender: str, item: Outgoing) -> Result:
        stage = ["envelope"]
        try:
            reply = await self._transaction(conn.client, sender, item, stage)
        except aiosmtplib.SMTPHeloError as exc:  # the relay will not talk: not the message
            conn.close()
            return self._connection_failure(exc)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the server is closing this session: it is unavailable
                conn.close()
                return self._connection_failure(exc)
            await self._reset(conn)
            return _classify_code(exc.code, exc.message)
        except aiosmtplib.SMTPNotSupported as exc:
            return Result("failed", error_code="smtputf8", error_message=str(exc))
        except ValueError as exc:  # an address aiosmtplib cannot put on the wire
            return Result("failed", error_code="address", error_message=str(exc))
        except (aiosmtplib.SMTPException, OSError) as exc:
            conn.close()
            return self._connection_failure(exc, in_doubt=stage[0] == "data")
        return Result(
            "sent", provider_id=item.message_id, provider_status=("250 " + reply.strip())[:200]
        )

    @staticmethod
    async def _transaction(
        client: aiosmtplib.SMTP, sender: str, item: Outgoing, stage: list[str]
    ) -> str:
        """MAIL, RCPT, the rate slot, then DATA; returns the DATA reply.

        aiosmtplib's ``sendmail`` runs the three commands in one go; they are split here so
        that the wait for the rate slot comes last, after the round trips whose duration
        varies, and the server sees messages as evenly spaced as the slots.
        """
        plain = _plain_address(sender) and _plain_address(item.to)
        if not plain:
            _check_sender(sender)  # a ValueError before anything is on the wire
            parse_address(item.to)
        if client.is_ehlo_or_helo_needed:  # the extensions below come from EHLO
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
        utf8 = _needs_utf8(sender, item.to)
        encoding = "utf-8" if utf8 else "ascii"
        if utf8 and not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        options = [f"SIZE={len(item.data)}"] if client.supports_extension("size") else []
        if utf8:
            options.append("SMTPUTF8")
        if plain:
            await _envelope(client, sender, item.to, options)
        else:
            await client.mail(sender, options=options, encoding=encoding)
            await client.rcpt(item.to, encoding=encoding)
        await item.wait_ready()
        stage[0] = "data"  # from here on, a broken connection leaves the message in doubt
        return (await client.data(item.data)).message

    @staticmethod
    async def _reset(conn: _Conn) -> None:
        """RSET after a refusal, so the next message starts a clean envelope."""
        try:
            await conn.client.rset()
        except (aiosmtplib.SMTPException, OSError):
            conn.close()

    def _connection_failure(self, exc: BaseException, in_doubt: bool = False) -> Result:
        """The relay is unavailable (no session, a refused greeting, EHLO or AUTH, 421, a
        timeout, a dropped connection): an outage of the channel, not the message's fault."""
        if isinstance(exc, aiosmtplib.SMTPResponseException):  # e.g. a 421/554 greeting
            code, text = str(exc.code), f"{exc.code} {exc.message.strip()}"
        else:
            code = "timeout" if isinstance(exc, TimeoutError) else "disconnected"
            text = str(exc) or type(exc).__name__
        return Result(
            "retry",
            error_code=code,
            error_message=f"{self.host}:{self.port}: {text}"[:500],
            outage="connection",
            in_doubt=in_doubt,
        )

    @property
    def provider(self) -> str:
        """``smtp:HOST:PORT``."""
        return f"smtp:{self.host}:{self.port}"

    async def close(self) -> None:
        """QUIT every idle connection (politely, but never waiting long).

        Connections still busy are closed when their push returns; a later push reopens.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                await asyncio.wait_for(conn.client.quit(), timeout=min(self.timeout, 5.0))
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass
            conn.close()
