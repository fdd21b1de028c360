"""The embedded outbox transports and make_messenger's choice of transport."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from notify.campaigns import CampaignConfig
from notify.config import Settings
from notify.errors import ConfigError
from notify.transports import Outgoing, TransportConfigError, make_messenger
from notify.transports.outbox import OutboxEmail, OutboxSms, eml_path, read_sms_lines
from notify.transports.smtp import SmtpMessenger
from notify.transports.twilio_sms import TwilioMessenger

CONFIG = CampaignConfig(
    name="c", organization="Acme", sender_email="security@acme.example", sms_from="+14155550199"
)


def email(row_id: int, text: str = "hello") -> Outgoing:
    mid = f"<{row_id}.c@acme.example>"
    data = (
        f"From: security@acme.example\r\nTo: a@example.com\r\nMessage-ID: {mid}\r\n"
        f"Subject: Notice\r\n\r\n{text}\r\n"
    ).encode()
    return Outgoing(
        row_id=row_id,
        channel="email",
        to="a@example.com",
        data=data,
        message_id=mid,
        sender="security@acme.example",
    )


def sms(row_id: int, to: str = "+14155550100", body: str = "Notice") -> Outgoing:
    return Outgoing(row_id=row_id, channel="sms", to=to, body=body)


async def test_outbox_email_writes_one_eml_per_row(tmp_path):
    outbox = OutboxEmail(tmp_path)
    result = await outbox.push(email(123))
    path = tmp_path / "email" / "000000123.eml"
    assert eml_path(tmp_path, 123) == path
    assert path.read_bytes() == email(123).data
    assert result.outcome == "sent" and result.provider_id == "<123.c@acme.example>"
    assert [p.name for p in (tmp_path / "email").iterdir()] == ["000000123.eml"]  # no temp


async def test_outbox_email_resend_overwrites(tmp_path):
    outbox = OutboxEmail(tmp_path)
    await outbox.push(email(7, "first"))
    await outbox.push(email(7, "second"))
    files = list((tmp_path / "email").iterdir())
    assert len(files) == 1
    assert files[0].read_bytes().endswith(b"second\r\n")


async def test_outbox_sms_appends_json_lines(tmp_path):
    outbox = OutboxSms(tmp_path, default_sender="+14155550199")
    first = await outbox.push(sms(1))
    second = await outbox.push(Outgoing(2, "sms", "+14155550101", body="B", sender="MG" + "a" * 32))
    lines = (tmp_path / "sms.jsonl").read_text().splitlines()
    assert len(lines) == 2
    one, two = (json.loads(line) for line in lines)
    assert re.fullmatch(r"outbox-[0-9a-f]{32}", one["sid"]) and one["sid"] == first.provider_id
    assert not re.fullmatch(r"SM[0-9a-f]{32}", one["sid"])  # never taken for a Twilio SID
    assert (one["row_id"], one["to"], one["from"], one["body"], one["status"]) == (
        1,
        "+14155550100",
        "+14155550199",
        "Notice",
        "sent",
    )
    assert datetime.fromisoformat(one["created_at"]).utcoffset() == timedelta(0)
    assert two["from"] == "MG" + "a" * 32 and two["sid"] == second.provider_id != first.provider_id


async def test_outbox_sms_concurrent_pushes_keep_lines_whole(tmp_path):
    outbox = OutboxSms(tmp_path, default_sender="+14155550199")
    body = "x" * 500
    results = await asyncio.gather(*(outbox.push(sms(i, body=body)) for i in range(60)))
    records = read_sms_lines(tmp_path / "sms.jsonl")
    assert sorted(r["row_id"] for r in records) == list(range(60))
    assert {r.provider_id for r in results} == {r["sid"] for r in records}


async def test_outbox_sms_tolerates_and_repairs_a_torn_line(tmp_path):
    path = tmp_path / "sms.jsonl"
    outbox = OutboxSms(tmp_path, default_sender="+14155550199")
    await outbox.push(sms(1))
    with open(path, "ab") as handle:  # a crash in the middle of a write
        handle.write(b'{"sid": "SMdead", "row_id": 2, "to": "+1415')
    assert [r["row_id"] for r in read_sms_lines(path)] == [1]
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert len(await outbox.find_sent("+14155550100", since)) == 1
    fresh = OutboxSms(tmp_path, default_sender="+14155550199")  # the next run
    await fresh.push(sms(3))
    assert [r["row_id"] for r in read_sms_lines(path)] == [1, 3]


async def test_outbox_sms_find_sent_by_number_and_time(tmp_path):
    outbox = OutboxSms(tmp_path, default_sender="+14155550199")
    old = await outbox.push(sms(1))
    # Age the first line by an hour, as if sent in an earlier run.
    path = tmp_path / "sms.jsonl"
    record = json.loads(path.read_text())
    record["created_at"] = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    path.write_text(json.dumps(record) + "\n")
    since = datetime.now(UTC) - timedelta(minutes=5)
    new = await outbox.push(sms(2))
    await outbox.push(sms(3, to="+14155550111"))
    found = await outbox.find_sent("+14155550100", since)
    assert [f.provider_id for f in found] == [new.provider_id]
    assert found[0].body == "Notice" and found[0].to == "+14155550100"
    naive = (datetime.now(UTC) - timedelta(hours=2)).replace(tzinfo=None)  # DB style: UTC
    assert {f.provider_id for f in await outbox.find_sent("+14155550100", naive)} == {
        old.provider_id,
        new.provider_id,
    }


async def test_outbox_sms_fetch_status_reports_delivered(tmp_path):
    outbox = OutboxSms(tmp_path, default_sender="+14155550199")
    sent = await outbox.push(sms(1))
    found = await outbox.fetch_status(sent.provider_id)
    assert found is not None and found.status == "delivered" and found.to == "+14155550100"
    assert await outbox.fetch_status("SM" + "0" * 32) is None


async def test_outbox_sms_without_sender_is_a_config_error(tmp_path):
    with pytest.raises(TransportConfigError, match="NOTIFY_SMS_FROM"):
        await OutboxSms(tmp_path).push(sms(1))
    assert not (tmp_path / "sms.jsonl").exists()


def test_make_messenger_picks_the_transport(tmp_path):
    with pytest.raises(ConfigError, match="NOTIFY_SMTP_HOST.*--outbox or NOTIFY_OUTBOX"):
        make_messenger("email", Settings(outbox=tmp_path), CONFIG, 4)  # never implied
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"):
        make_messenger("sms", Settings(outbox=tmp_path), CONFIG, 4)
    plain = Settings(outbox=tmp_path, use_outbox=True)
    assert isinstance(make_messenger("email", plain, CONFIG, 4), OutboxEmail)
    sms_outbox = make_messenger("sms", plain, CONFIG, 4)
    assert isinstance(sms_outbox, OutboxSms) and sms_outbox.default_sender == "+14155550199"
    override = Settings(outbox=tmp_path, sms_from="+14155550000", use_outbox=True)
    assert make_messenger("sms", override, CONFIG, 4).default_sender == "+14155550000"
    smtp = make_messenger("email", Settings(smtp_host="127.0.0.1"), CONFIG, 4)
    assert isinstance(smtp, SmtpMessenger) and smtp.default_sender == "security@acme.example"
    twilio = make_messenger(
        "sms", Settings(twilio_account_sid="AC1", twilio_auth_token="t"), CONFIG, 4
    )
    assert isinstance(twilio, TwilioMessenger) and twilio.name == "twilio"
    assert (smtp.name, smtp.channel, sms_outbox.name, sms_outbox.channel) == (
        "smtp",
        "email",
        "outbox-sms",
        "sms",
    )
    with pytest.raises(ConfigError):
        make_messenger("fax", plain, CONFIG, 1)
