"""SmtpMessenger through a real aiosmtpd server on loopback (tests/smtp_sink.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import replace

import pytest

from notify.campaigns import CampaignConfig
from notify.config import Settings
from notify.transports import Outgoing, TransportConfigError, make_messenger
from notify.transports.smtp import SmtpMessenger
from tests.smtp_sink import SmtpSink, smtp_sink_fixture  # noqa: F401 - fixture "smtp_sink"

SENDER = "security@acme.example"


def email(row_id: int, to: str = "ann@example.com") -> Outgoing:
    mid = f"<{row_id}.acme-2026-11@acme.example>"
    data = (
        f"From: Acme Security <{SENDER}>\r\nTo: {to}\r\nSubject: Notice of Data Breach\r\n"
        f"Message-ID: {mid}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"Dear customer {row_id},\r\n.leading dot survives\r\nZ\u00fcrich\r\n"
    ).encode()
    return Outgoing(row_id=row_id, channel="email", to=to, data=data, message_id=mid, sender=SENDER)


def messenger(sink: SmtpSink, concurrency: int = 1, mode: str = "none", **kwargs) -> SmtpMessenger:
    settings = Settings(smtp_host=sink.host, smtp_port=sink.port, smtp_tls=mode, **kwargs)
    context = sink.client_context() if mode != "none" else None
    return SmtpMessenger(settings, concurrency, timeout=5.0, tls_context=context)


async def test_delivers_raw_message_with_envelope(smtp_sink):
    async with messenger(smtp_sink) as smtp:
        result = await smtp.push(email(1))
    assert result.outcome == "sent"
    assert result.provider_id == "<1.acme-2026-11@acme.example>"
    assert result.provider_status.startswith("250 ")
    [got] = smtp_sink.received
    assert got.mail_from == SENDER and got.rcpt_tos == ["ann@example.com"]
    assert got.data == email(1).data  # byte for byte: headers, dot-stuffing, 8-bit body
    assert got.message_id == "<1.acme-2026-11@acme.example>"
    assert got.headers["Subject"] == "Notice of Data Breach"


async def test_internationalized_address_uses_smtputf8(smtp_sink):
    async with messenger(smtp_sink) as smtp:
        result = await smtp.push(email(1, to="j\u00f6rg@xn--mnchen-3ya.example"))
    assert result.outcome == "sent"
    assert smtp_sink.received[0].rcpt_tos == ["j\u00f6rg@xn--mnchen-3ya.example"]


async def test_connections_are_reused(smtp_sink):
    smtp = messenger(smtp_sink, concurrency=3)
    results = await asyncio.gather(*(smtp.push(email(i)) for i in range(30)))
    results += [await smtp.push(email(100 + i)) for i in range(5)]
    await smtp.close()
    assert all(r.outcome == "sent" for r in results)
    assert smtp_sink.count == 35
    assert smtp_sink.connections == smtp.connections_opened <= 3
    assert len({r.connection for r in smtp_sink.received}) == smtp_sink.connections


async def test_sequential_pushes_use_one_connection(smtp_sink):
    async with messenger(smtp_sink, concurrency=4) as smtp:
        for i in range(10):
            assert (await smtp.push(email(i))).outcome == "sent"
    assert smtp_sink.connections == 1


async def test_451_is_a_retry_with_its_code():
    with SmtpSink(fail_every=2) as sink:
        async with messenger(sink) as smtp:
            first, second, third = [await smtp.push(email(i)) for i in range(3)]
        assert (first.outcome, third.outcome) == ("sent", "sent")
        assert second.outcome == "retry" and second.error_code == "451"
        assert "Temporary failure" in second.error_message
        assert sink.message_ids() == [email(0).message_id, email(2).message_id]
        assert sink.connections == 1  # a 4xx does not cost the connection


async def test_550_at_rcpt_is_failed_with_code_and_message():
    with SmtpSink(reject={"gone@example.com"}) as sink:
        async with messenger(sink) as smtp:
            refused = await smtp.push(email(1, to="gone@example.com"))
            after = await smtp.push(email(2))
        assert refused.outcome == "failed" and refused.error_code == "550"
        assert "gone@example.com" in refused.error_message and "rejected" in refused.error_message
        assert after.outcome == "sent" and sink.count == 1 and sink.connections == 1


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ("553 5.7.1 Sender address not allowed", "failed"),
        ("451 4.7.1 Try again later", "retry"),
    ],
)
async def test_refused_sender_at_mail_is_classified_by_its_code(reply, outcome):
    other = "alerts@acme.example"
    with SmtpSink(reject_senders={SENDER: reply}) as sink:
        async with messenger(sink) as smtp:
            refused = await smtp.push(email(1))
            after = await smtp.push(replace(email(2), sender=other))
        assert refused.outcome == outcome and refused.error_code == reply[:3]
        assert reply[4:] in refused.error_message
        # The envelope was reset: the next message goes through on the same connection.
        assert after.outcome == "sent" and sink.count == 1 and sink.connections == 1
        assert sink.received[0].mail_from == other


async def test_dropped_connection_retries_then_reconnects():
    with SmtpSink(drop_every=2) as sink:
        async with messenger(sink) as smtp:
            first = await smtp.push(email(1))
            dropped = await smtp.push(email(2))
            again = await smtp.push(email(3))
        assert first.outcome == "sent"
        assert dropped.outcome == "retry" and dropped.error_code == "disconnected"
        assert again.outcome == "sent"
        assert sink.connections == 2 and smtp.connections_opened == 2
        assert [r.connection for r in sink.received] == [1, 2]
        assert sink.message_ids() == [email(1).message_id, email(3).message_id]


async def test_connection_closed_by_idle_server_is_replaced_silently():
    with SmtpSink(idle_timeout=0.3) as sink:
        async with messenger(sink) as smtp:
            first = await smtp.push(email(1))
            await asyncio.sleep(0.8)  # the relay hangs up on the idle session
            second = await smtp.push(email(2))
        assert (first.outcome, second.outcome) == ("sent", "sent")
        assert sink.connections == 2 and sink.count == 2


async def test_refused_connection_is_a_retry():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        smtp = SmtpMessenger(
            Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none"), 2, timeout=2.0
        )
        result = await smtp.push(email(1))
    assert result.outcome == "retry" and result.error_code == "disconnected"


async def test_silent_server_is_a_timeout():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    try:
        smtp = SmtpMessenger(
            Settings(smtp_host="127.0.0.1", smtp_port=server.getsockname()[1], smtp_tls="none"),
            1,
            timeout=0.5,
        )
        result = await smtp.push(email(1))
    finally:
        thread.join(2)
        for conn in accepted:
            conn.close()
        server.close()
    assert result.outcome == "retry" and result.error_code == "timeout"


async def test_starttls_mode():
    with SmtpSink(tls="starttls") as sink:
        async with messenger(sink, concurrency=2, mode="starttls") as smtp:
            results = await asyncio.gather(*(smtp.push(email(i)) for i in range(4)))
        assert [r.outcome for r in results] == ["sent"] * 4 and sink.count == 4


async def test_implicit_tls_mode_trusting_ssl_cert_file(monkeypatch):
    with SmtpSink(tls="tls") as sink:
        # What a subprocess would do: trust the relay's certificate through the environment.
        monkeypatch.setenv("SSL_CERT_FILE", str(sink.cafile))
        settings = Settings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="tls")
        config = CampaignConfig(name="c", organization="Acme", sender_email=SENDER)
        async with make_messenger("email", settings, config, 2) as smtp:
            result = await smtp.push(email(1))
        assert result.outcome == "sent" and sink.count == 1


async def test_untrusted_certificate_is_a_config_error():
    with SmtpSink(tls="tls") as sink:
        smtp = SmtpMessenger(
            Settings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="tls"), 1, timeout=5.0
        )
        with pytest.raises(TransportConfigError, match="CERTIFICATE_VERIFY_FAILED"):
            await smtp.push(email(1))
        assert sink.count == 0


async def test_starttls_required_but_not_offered_is_a_config_error(smtp_sink):
    smtp = messenger(smtp_sink, mode="starttls")
    with pytest.raises(TransportConfigError, match="STARTTLS"):
        await smtp.push(email(1))


async def test_login_and_wrong_password():
    with SmtpSink(auth={"mailer": "s3cret"}) as sink:
        async with messenger(sink, smtp_username="mailer", smtp_password="s3cret") as smtp:
            assert (await smtp.push(email(1))).outcome == "sent"
        wrong = messenger(sink, smtp_username="mailer", smtp_password="guess")
        with pytest.raises(TransportConfigError, match="refused") as caught:
            await wrong.push(email(2))
        assert "guess" not in str(caught.value)
        assert sink.count == 1


async def test_missing_sender_is_a_config_error(smtp_sink):
    item = email(1)
    item.sender = None
    with pytest.raises(TransportConfigError):
        await messenger(smtp_sink).push(item)
    settings = Settings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, smtp_tls="none")
    async with SmtpMessenger(settings, 1, default_sender=SENDER) as smtp:
        assert (await smtp.push(item)).outcome == "sent"
    assert smtp_sink.received[0].mail_from == SENDER


async def test_close_quits_idle_connections(smtp_sink):
    smtp = messenger(smtp_sink, concurrency=2)
    await asyncio.gather(smtp.push(email(1)), smtp.push(email(2)))
    idle = [conn.client for conn in smtp._idle]
    await smtp.close()
    assert idle and not any(client.is_connected for client in idle)


async def test_rate_slot_is_taken_after_rcpt_and_before_data(smtp_sink):
    """The wait for the rate slot comes last, and a refused recipient takes no slot."""
    smtp_sink.reject.add("gone@example.com")
    seen: list[tuple[int, int]] = []

    async def ready() -> None:
        seen.append((smtp_sink.data_commands, len(smtp_sink.received)))

    async with messenger(smtp_sink) as smtp:
        refused = await smtp.push(replace(email(1, to="gone@example.com"), ready=ready))
        sent = await smtp.push(replace(email(2), ready=ready))
    assert (refused.outcome, sent.outcome) == ("failed", "sent")
    assert seen == [(0, 0)]  # one slot, taken before the DATA of the message that went out
    assert smtp_sink.data_commands == 1 and len(smtp_sink.received) == 1


@pytest.mark.parametrize("fault", ["refuse", "silent", "421", "reset", "dns", "tls-handshake"])
async def test_relay_unavailable_is_an_outage_not_the_message(fault):
    """Refused, silent, 421, reset, unknown host, failed TLS handshake: the relay is down."""
    with SmtpSink() as sink:
        settings = Settings(smtp_host=sink.host, smtp_port=sink.port, smtp_tls="none")
        if fault == "dns":
            settings = replace(settings, smtp_host="relay.invalid")
        elif fault == "tls-handshake":  # implicit TLS against a plain relay
            settings = replace(settings, smtp_tls="tls")
        elif fault:
            sink.go_down(fault)
        smtp = SmtpMessenger(settings, 1, timeout=0.5)
        result = await smtp.push(email(1))
        await smtp.close()
        assert sink.count == 0
    assert result.outcome == "retry" and result.outage == "connection", result
    assert not result.in_doubt


@pytest.mark.parametrize(
    ("sink_args", "code"), [({"fail_every": 1}, "451"), ({"reject": {"ann@example.com"}}, "550")]
)
async def test_answers_about_the_message_are_no_outage(sink_args, code):
    with SmtpSink(**sink_args) as sink:
        async with messenger(sink) as smtp:
            result = await smtp.push(email(1))
    assert result.error_code == code and result.outage is None


async def test_connection_lost_during_data_is_an_outage_in_doubt():
    with SmtpSink(drop_every=1) as sink:
        async with messenger(sink) as smtp:
            result = await smtp.push(email(1))
    assert result.outage == "connection" and result.in_doubt
