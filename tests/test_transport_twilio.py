"""TwilioMessenger through the official twilio library against tests/twilio_double.py."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from notify.config import Settings
from notify.transports import Outgoing, TransportConfigError, TransportError, twilio_sms
from notify.transports.twilio_sms import TwilioMessenger
from tests.twilio_double import (  # noqa: F401 - fixture "twilio_double"
    TwilioDouble,
    post_signed,
    sign,
    twilio_double_fixture,
)

FROM = "+14155550199"
ANN = "+14155550100"
BOB = "+14155550111"


def settings_for(double: TwilioDouble, **overrides) -> Settings:
    values = {
        "twilio_account_sid": double.account_sid,
        "twilio_auth_token": double.auth_token,
        "twilio_api_url": double.url,
    }
    return Settings(**{**values, **overrides})


def messenger(double: TwilioDouble, concurrency: int = 4, **kwargs) -> TwilioMessenger:
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in ("public_url", "twilio_auth_token")}
    return TwilioMessenger(
        settings_for(double, **overrides),
        concurrency,
        default_sender=FROM,
        **{"timeout": 5.0, **kwargs},
    )


def sms(row_id: int, to: str = ANN, body: str = "Acme: your data was exposed.", **kw) -> Outgoing:
    return Outgoing(row_id=row_id, channel="sms", to=to, body=body, **kw)


class CallbackSink:
    """A tiny aiohttp server in the test's loop that keeps the callbacks it gets."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], str | None]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.received.append((str(request.url), form, request.headers.get("X-Twilio-Signature")))
        return web.Response(status=204)


@pytest.fixture
async def callbacks() -> AsyncIterator[CallbackSink]:
    sink = CallbackSink()
    app = web.Application()
    app.router.add_post("/webhooks/twilio/status", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sink.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield sink
    await runner.cleanup()


async def test_created_message_is_sent_with_its_sid(twilio_double):
    async with messenger(twilio_double) as tw:
        result = await tw.push(sms(1))
    assert result.outcome == "sent" and result.provider_status == "queued"
    assert re.fullmatch(r"SM[0-9a-f]{32}", result.provider_id)
    [stored] = twilio_double.messages  # it went to the double: the base URL override works
    assert (stored["sid"], stored["to"], stored["from"], stored["body"]) == (
        result.provider_id,
        ANN,
        FROM,
        "Acme: your data was exposed.",
    )
    assert stored["status_callback"] is None  # no NOTIFY_PUBLIC_URL, no callback


def test_default_base_url_is_twilio():
    tw = TwilioMessenger(Settings(twilio_account_sid="AC1", twilio_auth_token="tok"), 1)
    assert tw.client.api.base_url == "https://api.twilio.com"
    assert "tok" not in repr(tw)


async def test_messaging_service_sender_and_per_item_sender(twilio_double):
    service = "MG" + "b" * 32
    async with messenger(twilio_double) as tw:
        via_service = await tw.push(sms(1, sender=service))
        via_number = await tw.push(sms(2, sender="+14155550000"))
    assert via_service.outcome == "sent" and via_service.provider_status == "accepted"
    assert via_number.provider_status == "queued"
    first, second = twilio_double.messages
    assert first["messaging_service_sid"] == service and first["from"] is None
    assert second["from"] == "+14155550000" and second["messaging_service_sid"] is None


async def test_status_callback_passed_when_public_url_is_set(twilio_double):
    async with messenger(twilio_double, public_url="https://notify.acme.example/") as tw:
        await tw.push(sms(1))
    [stored] = twilio_double.messages
    assert stored["status_callback"] == "https://notify.acme.example/webhooks/twilio/status"


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("+15005550001", "21211"),
        ("12345", "21211"),
        ("+15005550004", "21610"),
        ("+15005550009", "21408"),
    ],
)
async def test_permanent_errors_fail_with_twilio_code(number, code):
    with TwilioDouble(
        invalid={"+15005550001"}, opted_out={"+15005550004"}, errors={"+15005550009": 21408}
    ) as double:
        async with messenger(double) as tw:
            result = await tw.push(sms(1, to=number))
        assert result.outcome == "failed" and result.error_code == code
        assert result.error_message and not result.error_message.startswith("Unable to")
        assert double.messages == []


async def test_429_is_a_retry_with_retry_after():
    with TwilioDouble(rate=1, burst=1, retry_after=7) as double:
        async with messenger(double, concurrency=5) as tw:
            results = await asyncio.gather(
                *(tw.push(sms(i, to=f"+1415555{i:04d}")) for i in range(5))
            )
        sent = [r for r in results if r.outcome == "sent"]
        limited = [r for r in results if r.outcome == "retry"]
        assert len(sent) == 1 and len(limited) == 4 and double.rejected_429 == 4
        assert {(r.error_code, r.retry_after) for r in limited} == {("429", 7.0)}
        assert sent[0].retry_after is None


async def test_retry_after_is_per_request_under_concurrency():
    numbers = [f"+1415555{i:04d}" for i in range(12)]
    with TwilioDouble(
        rate=0.001,
        burst=4,
        retry_after=7,
        fail_numbers=numbers,
        fail_status=503,
        fail_retry_after=11,
    ) as double:
        async with messenger(double, concurrency=12) as tw:
            results = await asyncio.gather(*(tw.push(sms(i, to=n)) for i, n in enumerate(numbers)))
    pairs = sorted((r.error_code, r.retry_after) for r in results)
    assert pairs == [("429", 7.0)] * 8 + [("503", 11.0)] * 4


async def test_429_retry_after_computed_by_the_bucket():
    with TwilioDouble(rate=0.5, burst=1) as double:
        async with messenger(double) as tw:
            assert (await tw.push(sms(1))).outcome == "sent"
            limited = await tw.push(sms(2))
        assert limited.outcome == "retry" and limited.retry_after == 2.0


async def test_500_is_a_retry_and_the_library_does_not_retry():
    with TwilioDouble(fail_every=2) as double:
        async with messenger(double) as tw:
            ok = await tw.push(sms(1))
            failed = await tw.push(sms(2))
        assert ok.outcome == "sent"
        assert failed.outcome == "retry" and failed.error_code == "500"
        assert double.creates == 2  # one request per push: no hidden retries
        assert len(double.messages) == 1


async def test_bad_credentials_are_a_config_error(twilio_double):
    secret = "wrong-token-value"
    tw = messenger(twilio_double, twilio_auth_token=secret)
    with pytest.raises(TransportConfigError, match="TWILIO_AUTH_TOKEN") as caught:
        await tw.push(sms(1))
    assert secret not in str(caught.value)
    with pytest.raises(TransportConfigError):
        await tw.find_sent(ANN, datetime.now(UTC))
    with pytest.raises(TransportConfigError):
        await tw.fetch_status("SM" + "0" * 32)
    await tw.close()
    assert twilio_double.messages == []


async def test_unreachable_api_is_a_retry():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        tw = TwilioMessenger(
            Settings(twilio_account_sid="AC1", twilio_auth_token="t", twilio_api_url=url),
            1,
            default_sender=FROM,
            timeout=2.0,
        )
        result = await tw.push(sms(1))
        await tw.close()
    assert result.outcome == "retry" and result.error_code == "disconnected"


async def test_timeout_in_doubt_is_reconciled_not_repeated():
    with TwilioDouble(delay=1.5) as double:
        async with messenger(double, timeout=0.3) as tw:
            result = await tw.push(sms(1))
        [stored] = double.messages  # Twilio created it although the client gave up
        assert result.outcome == "sent" and result.provider_id == stored["sid"]
        assert "reconciled after timeout" in result.error_message


async def test_timeout_without_reconcile_is_a_retry():
    with TwilioDouble(delay=1.5) as double:
        async with messenger(double, timeout=0.3, reconcile=False) as tw:
            result = await tw.push(sms(1))
        assert result.outcome == "retry" and result.error_code == "timeout"


async def test_find_sent_by_recipient_and_time(twilio_double, monkeypatch):
    monkeypatch.setattr(twilio_sms, "LIST_PAGE_SIZE", 2)  # exercise next_page_uri paging
    before = datetime.now(UTC) - timedelta(seconds=5)
    async with messenger(twilio_double) as tw:
        to_ann = [await tw.push(sms(i, body=f"notice {i}")) for i in range(5)]
        await tw.push(sms(9, to=BOB))
        found = await tw.find_sent(ANN, before)
        later = await tw.find_sent(ANN, datetime.now(UTC) + timedelta(minutes=1))
        naive = await tw.find_sent(ANN, before.replace(tzinfo=None))
    assert sorted(f.provider_id for f in found) == sorted(r.provider_id for r in to_ann)
    assert {f.to for f in found} == {ANN} and {f.status for f in found} == {"queued"}
    assert {f.body for f in found} == {f"notice {i}" for i in range(5)}
    assert all(f.created_at and f.created_at >= before.replace(microsecond=0) for f in found)
    assert later == [] and len(naive) == 5


async def test_fetch_status(twilio_double):
    async with messenger(twilio_double) as tw:
        sent = await tw.push(sms(1))
        assert (await tw.fetch_status(sent.provider_id)).status == "queued"
        await twilio_double.advance(sent.provider_id, "delivered")
        found = await tw.fetch_status(sent.provider_id)
        assert found.status == "delivered" and found.to == ANN and found.error_code is None
        await twilio_double.advance(sent.provider_id, "undelivered", 30003)
        assert (await tw.fetch_status(sent.provider_id)).error_code == "30003"
        assert await tw.fetch_status("SM" + "0" * 32) is None


async def test_fetch_status_network_error_is_a_transport_error():
    tw = TwilioMessenger(
        Settings(
            twilio_account_sid="AC1", twilio_auth_token="t", twilio_api_url="http://127.0.0.1:9"
        ),
        1,
        timeout=2.0,
    )
    with pytest.raises(TransportError):
        await tw.fetch_status("SM" + "0" * 32)
    await tw.close()


async def test_signed_status_callbacks_verify(twilio_double, callbacks):
    async with messenger(twilio_double, public_url=callbacks.url) as tw:
        sent = await tw.push(sms(1))
    assert await twilio_double.advance(sent.provider_id, "sent") == 204
    assert await twilio_double.deliver_all() == 1
    statuses = [form["MessageStatus"] for _, form, _ in callbacks.received]
    assert statuses == ["sent", "sent", "delivered"]
    validator = RequestValidator(twilio_double.auth_token)
    for url, form, signature in callbacks.received:
        assert url == callbacks.url + "/webhooks/twilio/status"
        assert (
            form["MessageSid"] == sent.provider_id
            and form["AccountSid"] == twilio_double.account_sid
        )
        assert validator.validate(url, form, signature)
        assert not RequestValidator("another-token").validate(url, form, signature)
    assert [c["status"] for c in twilio_double.callbacks] == [204, 204, 204]


async def test_sign_helper_matches_request_validator(callbacks):
    url = callbacks.url + "/webhooks/twilio/status"
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered", "To": ANN}
    assert RequestValidator("tok").validate(url, params, sign("tok", url, params))
    status, _ = await post_signed(url, params, "tok")
    assert status == 204
    _, form, signature = callbacks.received[-1]
    assert form == params and RequestValidator("tok").validate(url, form, signature)
    await post_signed(url, params, "tok", signature="")
    assert callbacks.received[-1][2] is None  # unsigned on request


async def test_5xx_is_a_server_outage_and_a_refused_connection_a_connection_outage():
    with TwilioDouble() as double:
        async with messenger(double, timeout=2.0) as tw:
            double.go_down("5xx", 30)
            server = await tw.push(sms(1))
            double.recover()
            double.go_down("refuse")
            cut = await tw.push(sms(2))  # its pooled connection was cut: may have reached it
            refused = await tw.push(sms(2))  # no connection at all: surely not
            double.recover()
            fine = await tw.push(sms(3))
    assert (server.outcome, server.error_code, server.outage) == ("retry", "500", "server")
    assert (cut.outcome, cut.outage) == ("retry", "connection")
    assert (refused.outcome, refused.outage, refused.in_doubt) == ("retry", "connection", False)
    assert fine.outcome == "sent" and fine.outage is None


async def test_lookups_raise_provider_down_when_twilio_is_unavailable():
    from notify.transports import ProviderDown

    with TwilioDouble() as double:
        async with messenger(double, timeout=2.0) as tw:
            double.go_down("5xx", 30)
            with pytest.raises(ProviderDown) as server:
                await tw.find_sent(ANN, datetime.now(UTC))
            double.recover()
            double.go_down("refuse")
            with pytest.raises(ProviderDown) as refused:
                await tw.fetch_status("SM" + "0" * 32)
    assert server.value.kind == "server" and refused.value.kind == "connection"
