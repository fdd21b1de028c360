"""A real SMTP server for tests and benchmarks: aiosmtpd on 127.0.0.1, recording every message.

In a test::

    from tests.smtp_sink import SmtpSink, smtp_sink_fixture  # noqa: F401 - fixture "smtp_sink"

    with SmtpSink(fail_every=3, reject={"gone@example.com"}) as sink:
        settings = Settings(smtp_host=sink.host, smtp_port=sink.port, smtp_tls="none")
        ...
        assert sink.wait_for(10)
        assert sink.message_ids() == [...]
        assert sink.connections == 2          # TCP connections accepted (reuse check)
        assert sink.window_max(1.0) <= 21     # rate measured at the provider

Fault injection: ``fail_every=N`` answers ``451`` to every Nth DATA, ``drop_every=N`` aborts
the connection at every Nth DATA (the message is NOT recorded: the client never got a
250), ``reject={addresses}`` answers ``550`` at RCPT. ``parse=False`` is the benchmark mode:
no email parsing and no message bytes kept (Message-ID is still pulled out by a regex).
TLS: ``tls="starttls"`` (STARTTLS required) or ``tls="tls"`` (implicit), with a self-signed
certificate made on the spot; clients trust ``sink.cafile``. ``auth={"user": "password"}``
turns on AUTH PLAIN/LOGIN (allowed without TLS, for tests). ``idle_timeout=S`` closes
sessions idle for S seconds, as relays do.

Relay outages: ``sink.go_down(mode, seconds=None)`` makes the relay unavailable until
``sink.recover()`` (or for ``seconds``, then it comes back by itself): ``"refuse"`` (nothing
listens: connection refused), ``"silent"`` (accepts connections and never says a word),
``"421"`` (greets with ``421`` and closes), ``"reset"`` (drops each connection at once).
``SmtpSink(down=("refuse", 3.0))`` starts that way. Sessions open when it goes down are cut
(as a relay restart would); ``sink.refused_while_down`` counts connections turned away.

Standalone (for subprocess, kill -9 and benchmark runs)::

    python -m tests.smtp_sink --port 2525 --record received.jsonl [--fail-every N]
        [--drop-every N] [--reject a@x,b@y] [--no-parse] [--port-file FILE]
        [--down MODE:SECONDS]

prints ``listening 127.0.0.1:PORT`` once ready and appends one JSON line per accepted
message: ``{"message_id", "mail_from", "rcpt", "time", "monotonic", "connection"}``; each
line is written before the 250 reply is sent. ``--port 0`` picks a free port (see
``--port-file``). Stops on SIGTERM / SIGINT. :func:`read_record` reads such a file back.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import email.parser
import email.policy
import ipaddress
import json
import os
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.standalone import serve_until_signalled

_MESSAGE_ID_RE = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes | None  # None in parse=False mode
    message_id: str | None
    monotonic: float  # time.monotonic() at arrival (same clock across processes on Linux)
    wall: float  # time.time() at arrival
    connection: int  # which accepted connection (1, 2, ...) carried it
    headers: Any = None  # email.message.EmailMessage (headers only) when parse=True


def _message_id(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _MESSAGE_ID_RE.search(head)
    return match.group(1).decode("ascii", "replace") if match else None


def make_self_signed_cert(directory: str | Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = Path(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notify test sink")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "sink-cert.pem", directory / "sink-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Handler:
    """aiosmtpd hooks: fault injection and recording."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        reply = self.sink.reject_senders.get(address.lower())
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.sink.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected (test sink)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        sink = self.sink
        number = sink._count_data()
        if sink.drop_every and number % sink.drop_every == 0:
            sink.dropped += 1
            server.transport.abort()  # no reply at all: the client sees a dead connection
            return "421 4.4.2 connection dropped (test sink)"
        if sink.fail_every and number % sink.fail_every == 0:
            sink.failed += 1
            return "451 4.3.0 Temporary failure, try again (test sink)"
        record = sink._record(server, envelope)
        return f"250 2.0.0 OK queued as {record.connection}.{number}"


class _SinkSMTP(SMTP):
    """aiosmtpd's server with the sink's outage modes applied to each new connection."""

    _sink: SmtpSink | None = None

    async def _handle_client(self) -> None:
        sink = self._sink
        fault = sink.fault if sink is not None else None
        if fault is not None and sink is not None:
            sink._count_refused()
            if fault == "silent":
                await asyncio.sleep(3600)  # cancelled when the client gives up
                return
            if fault == "421":
                await self.push("421 4.3.2 Service not available, closing (test sink)")
                self.transport.close()
                return
            self.transport.abort()  # "reset"
            return
        await super()._handle_client()


class _Controller(Controller):
    """Controller that binds port 0 safely and counts accepted connections."""

    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), **kwargs)
        self.sink = sink
        self.live: list[SMTP] = []

    def factory(self) -> SMTP:
        # aiosmtpd makes one SMTP protocol object per accepted connection.
        smtp = _SinkSMTP(self.handler, **self.SMTP_kwargs)
        smtp._sink = self.sink
        smtp._sink_connection = self.sink._count_connection()
        self.live.append(smtp)
        return smtp

    def cut_sessions(self) -> None:
        """Abort every open session (from any thread)."""

        def cut() -> None:
            for smtp in self.live:
                if smtp.transport is not None:
                    smtp.transport.abort()
            self.live.clear()

        self.loop.call_soon_threadsafe(cut)

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """An aiosmtpd server in a background thread that records what it receives."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_every: int = 0,
        drop_every: int = 0,
        reject: Iterable[str] = (),
        reject_senders: dict[str, str] | None = None,
        parse: bool = True,
        tls: str = "none",
        auth: dict[str, str] | None = None,
        idle_timeout: float | None = None,
        record_path: str | Path | None = None,
        down: tuple[str, float | None] | None = None,
    ) -> None:
        if tls not in ("none", "starttls", "tls"):
            raise ValueError(f"tls must be none, starttls or tls, not {tls!r}")
        self.host, self.requested_port = host, port
        self.fail_every, self.drop_every = fail_every, drop_every
        self.reject = {a.lower() for a in reject}
        # envelope sender -> the full reply to MAIL FROM (e.g. "553 5.7.1 not allowed")
        self.reject_senders = {a.lower(): r for a, r in (reject_senders or {}).items()}
        self.parse, self.tls, self.auth = parse, tls, auth
        self.idle_timeout = idle_timeout
        self.record_path = Path(record_path) if record_path else None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._received: list[Received] = []
        self._connections = 0
        self._data_commands = 0
        self.failed = 0  # 451s injected
        self.dropped = 0  # connections aborted
        self._record_fd: int | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.cafile: Path | None = None
        self._controller: _Controller | None = None
        self.fault: str | None = None  # the outage mode in force, if any
        self.refused_while_down = 0
        self._down_at_start = down
        self._recovery: threading.Thread | None = None
        self._kwargs: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> SmtpSink:
        """Bind and serve; returns self."""
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.requested_port,
            "server_hostname": "sink.test",
            "ready_timeout": 10.0,
        }
        if self.tls != "none":
            kwargs.update(self._tls_kwargs())
        if self.auth:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        if self.idle_timeout:
            kwargs["timeout"] = self.idle_timeout  # aiosmtpd closes sessions idle this long
        if self.record_path:
            self._record_fd = os.open(
                self.record_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        self._kwargs = kwargs
        self._controller = _Controller(self, **kwargs)
        self._controller.start()
        with self._lock:
            self._connections = 0  # start() opened one connection of its own
        if self._down_at_start:
            self.go_down(*self._down_at_start)
        return self

    # -- outages ----------------------------------------------------------------------------

    OUTAGE_MODES = ("refuse", "silent", "421", "reset")

    def go_down(self, mode: str, seconds: float | None = None) -> None:
        """Make the relay unavailable (see the module docstring); back after ``seconds``."""
        if mode not in self.OUTAGE_MODES:
            raise ValueError(f"outage mode must be one of {self.OUTAGE_MODES}, not {mode!r}")
        assert self._controller is not None, "sink not started"
        port = self._controller.port
        self.fault = mode
        self._controller.cut_sessions()
        if mode == "refuse":  # nothing listens on the port until it recovers
            self._controller.stop()
            self._controller = None
            self._kwargs["port"] = port
        if seconds is not None:
            # A sleeping thread, not threading.Timer: timed condition waits never wake
            # under faketime (the suite must pass with the clock shifted).
            self._recovery = threading.Thread(
                target=self._recover_after, args=(seconds,), daemon=True
            )
            self._recovery.start()

    def _recover_after(self, seconds: float) -> None:
        time.sleep(seconds)
        if self.fault is not None:
            self.recover()

    def recover(self) -> None:
        """End an outage: the relay serves again on the same port."""
        if self._controller is None and self.fault == "refuse":
            self._controller = _Controller(self, **self._kwargs)
            self._controller.start()
            with self._lock:
                self._connections -= 1  # start() opened one connection of its own
        self.fault = None

    def _count_refused(self) -> None:
        with self._lock:
            self.refused_while_down += 1
            self._connections -= 1  # turned away: not a session

    def _tls_kwargs(self) -> dict[str, Any]:
        self._tmpdir = tempfile.TemporaryDirectory(prefix="smtp-sink-")
        cert, key = make_self_signed_cert(self._tmpdir.name)
        self.cafile = cert
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        if self.tls == "tls":
            return {"ssl_context": context}
        return {"tls_context": context, "require_starttls": True}

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.auth:
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if self.auth.get(login) == password:
                return AuthResult(success=True)
        # handled=False: let aiosmtpd answer 535 (the default, True, answers nothing).
        return AuthResult(success=False, handled=False)

    def stop(self) -> None:
        """Stop serving and release the port, the record file and the certificate."""
        self._recovery = None  # a pending recovery finds no fault left and does nothing
        self.fault = None
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._record_fd is not None:
            os.close(self._record_fd)
            self._record_fd = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (after start; also while down with nothing listening)."""
        if self._controller is None and "port" in self._kwargs:
            return self._kwargs["port"]
        assert self._controller is not None, "sink not started"
        return self._controller.port

    def env(self) -> dict[str, str]:
        """Environment variables that point notify at this sink (as TwilioDouble.env)."""
        return {
            "NOTIFY_SMTP_HOST": self.host,
            "NOTIFY_SMTP_PORT": str(self.port),
            "NOTIFY_SMTP_TLS": self.tls,
        }

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this sink's certificate."""
        return ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)

    # -- called from the server thread ------------------------------------------------------

    def _count_connection(self) -> int:
        with self._lock:
            self._connections += 1
            return self._connections

    def _count_data(self) -> int:
        with self._lock:
            self._data_commands += 1
            return self._data_commands

    def _record(self, server: Any, envelope: Any) -> Received:
        data: bytes = envelope.original_content or envelope.content or b""
        headers = None
        if self.parse:
            headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(data)
            message_id = headers.get("Message-ID")
            message_id = str(message_id).strip() if message_id else None
        else:
            message_id = _message_id(data)
        connection = getattr(server, "_sink_connection", 0)
        record = Received(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=data if self.parse else None,
            message_id=message_id,
            monotonic=time.monotonic(),
            wall=time.time(),
            connection=connection,
            headers=headers,
        )
        if self._record_fd is not None:
            line = (
                json.dumps(
                    {
                        "message_id": message_id,
                        "mail_from": record.mail_from,
                        "rcpt": record.rcpt_tos,
                        "time": record.wall,
                        "monotonic": record.monotonic,
                        "connection": connection,
                    }
                )
                + "\n"
            )
            os.write(self._record_fd, line.encode())  # O_APPEND: one whole line per write
        with self._arrived:
            self._received.append(record)
            self._arrived.notify_all()
        return record

    # -- inspection (any thread) ------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        """A snapshot of every accepted message, in arrival order."""
        with self._lock:
            return list(self._received)

    @property
    def count(self) -> int:
        """How many messages were accepted."""
        with self._lock:
            return len(self._received)

    @property
    def connections(self) -> int:
        """How many TCP connections clients opened."""
        with self._lock:
            return self._connections

    @property
    def data_commands(self) -> int:
        """How many DATA commands arrived (accepted, failed or dropped)."""
        with self._lock:
            return self._data_commands

    def message_ids(self) -> list[str | None]:
        """Message-IDs in arrival order."""
        return [r.message_id for r in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` messages arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
        return True

    def window_max(self, seconds: float = 1.0) -> int:
        """The most messages that arrived within any window [t, t + seconds)."""
        return window_max([r.monotonic for r in self.received], seconds)

    def reset(self) -> None:
        """Forget received messages and counters (faults keep their configuration)."""
        with self._lock:
            self._received.clear()
            self._connections = self._data_commands = 0
            self.failed = self.dropped = 0


def window_max(times: Iterable[float], seconds: float = 1.0) -> int:
    """The most timestamps within any half-open window of ``seconds``."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def read_record(path: str | Path) -> list[dict]:
    """The JSON lines a standalone sink wrote (a torn last line is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


@pytest.fixture(name="smtp_sink")
def smtp_sink_fixture() -> Iterator[SmtpSink]:
    """A started plain (no TLS) sink without faults."""
    with SmtpSink() as sink:
        yield sink


def main(argv: list[str] | None = None) -> None:
    """Run a sink until SIGTERM/SIGINT (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tests.smtp_sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", help="append one JSON line per accepted message")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--drop-every", type=int, default=0)
    parser.add_argument("--reject", default="", help="comma-separated addresses to 550")
    parser.add_argument("--no-parse", action="store_true", help="benchmark mode")
    parser.add_argument("--tls", default="none", choices=["none", "starttls", "tls"])
    parser.add_argument(
        "--down",
        help="MODE:SECONDS: start unavailable (refuse, silent, 421, reset), back after SECONDS",
    )
    args = parser.parse_args(argv)
    down = None
    if args.down:
        mode, _, seconds = args.down.partition(":")
        down = (mode, float(seconds) if seconds else None)
    sink = SmtpSink(
        host=args.host,
        port=args.port,
        fail_every=args.fail_every,
        drop_every=args.drop_every,
        reject=[a for a in args.reject.split(",") if a],
        parse=not args.no_parse,
        tls=args.tls,
        record_path=args.record,
        down=down,
    )

    def ready_lines() -> list[str]:
        cafile = [f"cafile {sink.cafile}"] if sink.cafile else []
        return [*cafile, f"listening {args.host}:{sink.port}"]

    serve_until_signalled(sink, args.port_file, ready_lines)


if __name__ == "__main__":
    main()
