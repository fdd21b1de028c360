"""`notify bounces import`: RFC 3464 DSNs shaped like Postfix, Exim and Gmail."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from notify import bounces, campaigns, db
from notify.cli import main
from notify.models import AuditRecord, Contact, Event, Message, utcnow

NAME = "acme-2026-11"
ANN_ID = "<m1.20261127@acme.example>"
CAROL_ID = "<m3.20261127@acme.example>"


def postfix_dsn(
    recipient: str, message_id: str, action: str = "failed", status: str = "5.1.1"
) -> bytes:
    """Postfix: text/plain + message/delivery-status + text/rfc822-headers, folded diag."""
    return f"""Return-Path: <>
Received: by mail.acme.example (Postfix) id 4C0A21F4B2; Fri, 27 Nov 2026 10:03:00 +0000 (UTC)
Date: Fri, 27 Nov 2026 10:03:00 +0000 (UTC)
From: MAILER-DAEMON@mail.acme.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: security@acme.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4C0A21F4B2.1764237780/mail.acme.example"
Message-Id: <20261127100300.4C0A21F4B2@mail.acme.example>

This is a MIME-encapsulated message.

--4C0A21F4B2.1764237780/mail.acme.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.acme.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<{recipient}>: host mx.example.com[203.0.113.5] said: 550 5.1.1
    <{recipient}>: Recipient address rejected: User unknown

--4C0A21F4B2.1764237780/mail.acme.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.acme.example
X-Postfix-Queue-ID: 4C0A21F4B2
X-Postfix-Sender: rfc822; security@acme.example
Arrival-Date: Fri, 27 Nov 2026 10:02:58 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected:
    User unknown in virtual mailbox table

--4C0A21F4B2.1764237780/mail.acme.example
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <security@acme.example>
Received: from notify.acme.example (notify.acme.example [198.51.100.7])
\tby mail.acme.example (Postfix) with ESMTPS id 4C0A21F4B2
Message-ID: {message_id}
From: Acme Security <security@acme.example>
To: {recipient}
Subject: Notice of Data Breach

--4C0A21F4B2.1764237780/mail.acme.example--
""".replace("\n", "\r\n").encode()


def exim_dsn(recipient_utf8: str) -> bytes:
    """Exim: the failed address in the utf-8 address type; the returned message's
    Message-ID is not ours (rewritten by a relay), so the recipient must match."""
    return f"""Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.acme.example>
To: security@acme.example
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1kiZzP-0004xS-Fq@mx.acme.example>
Date: Fri, 27 Nov 2026 10:04:11 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
 boundary=1764237851-eximdsn-1804289383
Auto-Submitted: auto-replied

--1764237851-eximdsn-1804289383
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {recipient_utf8}
    host mx.bücher.example [192.0.2.1]
    SMTP error from remote mail server after RCPT TO:<{recipient_utf8}>:
    550 No such user here

--1764237851-eximdsn-1804289383
Content-type: message/delivery-status; charset=utf-8

Reporting-MTA: dns; mx.acme.example

Action: failed
Final-Recipient: utf-8;{recipient_utf8}
Status: 5.0.0
Remote-MTA: dns; mx.xn--bcher-kva.example
Diagnostic-Code: smtp; 550 No such user here

--1764237851-eximdsn-1804289383
Content-type: message/rfc822

Return-path: <security@acme.example>
Received: from [198.51.100.7] by relay.example with esmtp id 1kiZzO-0004xN
Message-ID: <rewritten-by-relay@relay.example>
From: Acme Security <security@acme.example>
To: bob@xn--bcher-kva.example
Subject: Reminder: reset your password

Please reset your password.

--1764237851-eximdsn-1804289383--
""".encode()


def gmail_dsn(recipient: str, message_id: str) -> bytes:
    """Gmail: nested multipart/related + alternative notice with an icon, a multi-line
    Diagnostic-Code, X-Original-Message-ID, and the whole original as message/rfc822."""
    return f"""Delivered-To: security@acme.example
Return-Path: <>
Received: by 2002:a05:6000:1a8a:b0:2c5 with SMTP id h10csp123; Fri, 27 Nov 2026 02:03:05 -0800
Date: Fri, 27 Nov 2026 02:03:05 -0800 (PST)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: security@acme.example
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: {message_id}
In-Reply-To: {message_id}
X-Failed-Recipients: {recipient}
Message-ID: <5fc0e1a9.1c69fb81.8a1b2.0000.GMR@mx.google.com>
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000a1b2c3"; report-type=delivery-status

--000000000000a1b2c3
Content-Type: multipart/related; boundary="000000000000d4e5f6"

--000000000000d4e5f6
Content-Type: multipart/alternative; boundary="000000000000g7h8i9"

--000000000000g7h8i9
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to {recipient} because the address couldn't be found, or is
unable to receive mail.

--000000000000g7h8i9
Content-Type: text/html; charset="UTF-8"

<html><body><h2>Address not found</h2><img src="cid:icon.png"></body></html>

--000000000000g7h8i9--
--000000000000d4e5f6
Content-Type: image/png; name="icon.png"
Content-Disposition: attachment; filename="icon.png"
Content-Transfer-Encoding: base64
Content-ID: <icon.png>

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==
--000000000000d4e5f6--
--000000000000a1b2c3
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; security@acme.example
Arrival-Date: Fri, 27 Nov 2026 02:03:04 -0800 (PST)
X-Original-Message-ID: {message_id}

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (142.250.102.27, the server for the domain
 gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.
 Please try 550-5.1.1 double-checking the recipient's email address for typos or
 550-5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser
 a1-20020a05600c021100b003b4 - gsmtp
Last-Attempt-Date: Fri, 27 Nov 2026 02:03:05 -0800 (PST)

--000000000000a1b2c3
Content-Type: message/rfc822

Message-ID: {message_id}
Date: Fri, 27 Nov 2026 10:03:00 +0000
From: Acme Security <security@acme.example>
To: {recipient}
Subject: Notice of Data Breach
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"

Notice of Data Breach ...

--000000000000a1b2c3--
""".encode()


@pytest.fixture
def seeded(engine, campaign_file):
    return seed_bounces(engine, campaign_file)


def seed_bounces(engine, campaign_file) -> dict[str, int]:
    """Email-only campaign with SMS fallback; ann and bob have phones, carol does not."""
    text = campaign_file.read_text().replace('channels = ["email", "sms"]', 'channels = ["email"]')
    campaign_file.write_text(text)
    ids = {}
    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, campaign_file)

        def person(key, email, phone=None):
            contact = Contact(
                campaign_id=campaign.id, key=key, email=email, phone=phone, exposures="passwords"
            )
            session.add(contact)
            session.flush()
            return contact

        def email(contact, mid, notice="notice", sequence=0, status="sent"):
            # sent an hour ago: within the 30 days in which an untagged DSN may match it
            row = Message(
                campaign_id=campaign.id,
                contact_id=contact.id,
                channel="email",
                notice=notice,
                sequence=sequence,
                status=status,
                address=contact.email,
                provider_message_id=mid,
                sent_at=utcnow() - timedelta(hours=1),
            )
            session.add(row)
            session.flush()
            return row.id

        ann = person("ann", "ann@example.com", "+14155550101")
        bob = person("bob", "bob@xn--bcher-kva.example", "+14155550102")
        carol = person("carol", "Carol.Smith@gmail.com")
        dan = person("dan", "dan@example.net", "+14155550104")
        ids["ann"] = email(ann, ANN_ID)
        ids["bob_notice"] = email(bob, "<m2a@acme.example>")
        ids["bob_reminder"] = email(bob, "<m2b@acme.example>", "reminder", 1)
        ids["carol"] = email(carol, CAROL_ID)
        ids["dan"] = email(dan, "<m4@acme.example>")
    return ids


@pytest.fixture
def bounce_dir(tmp_path):
    folder = tmp_path / "bounces"
    folder.mkdir()
    (folder / "postfix.eml").write_bytes(postfix_dsn("ann@example.com", ANN_ID))
    (folder / "exim.eml").write_bytes(exim_dsn("bob@bücher.example"))
    (folder / "gmail.eml").write_bytes(gmail_dsn("Carol.Smith@gmail.com", CAROL_ID))
    (folder / "delayed.eml").write_bytes(
        postfix_dsn("dan@example.net", "<m4@acme.example>", "delayed", "4.4.1")
    )
    (folder / "ghost.eml").write_bytes(postfix_dsn("ghost@nowhere.example", "<zz@x>"))
    (folder / "notes.txt").write_text("Hello, this is not a bounce.\n")
    (folder / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    return folder


def message(engine, row_id) -> Message:
    with db.session_scope(engine) as session:
        return session.get(Message, row_id)


def sms_rows(engine) -> list[Message]:
    with db.session_scope(engine) as session:
        return list(session.scalars(select(Message).where(Message.channel == "sms")))


def test_parse_postfix_exim_gmail():
    postfix = bounces.parse_dsn(postfix_dsn("ann@example.com", ANN_ID), "p")
    assert postfix.message_id == ANN_ID and postfix.reporting_mta == "mail.acme.example"
    (rcpt,) = postfix.recipients
    assert (rcpt.final_recipient, rcpt.original_recipient, rcpt.action, rcpt.status) == (
        "ann@example.com",
        "ann@example.com",
        "failed",
        "5.1.1",
    )
    assert rcpt.diagnostic == (
        "550 5.1.1 <ann@example.com>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    exim = bounces.parse_dsn(exim_dsn("bob@bücher.example"), "e")
    assert exim.recipients[0].final_recipient == "bob@bücher.example"
    assert exim.recipients[0].status == "5.0.0"
    gmail = bounces.parse_dsn(gmail_dsn("carol@gmail.com", CAROL_ID), "g")
    assert gmail.message_id == CAROL_ID
    assert gmail.recipients[0].diagnostic.startswith("550-5.1.1 The email account")
    assert "NoSuchUser" in gmail.recipients[0].diagnostic


def test_not_a_dsn():
    with pytest.raises(bounces.NotADsn, match="not a delivery status notification"):
        bounces.parse_dsn(b"Subject: hi\r\n\r\nhello\r\n", "x")


def test_import_matches_bounces_and_queues_fallbacks(engine, seeded, bounce_dir):
    with db.session_scope(engine) as session:
        report = bounces.import_path(session, bounce_dir)
    ann = message(engine, seeded["ann"])
    assert (ann.status, ann.error_code) == ("bounced", "5.1.1")
    assert ann.error_message.startswith("550 5.1.1 <ann@example.com>: Recipient address")
    # Exim: matched by the IDNA form of the recipient, to the latest email (the reminder).
    assert message(engine, seeded["bob_reminder"]).status == "bounced"
    assert message(engine, seeded["bob_notice"]).status == "sent"
    carol = message(engine, seeded["carol"])
    assert (carol.status, carol.error_code) == ("bounced", "5.1.1")
    dan = message(engine, seeded["dan"])
    assert dan.status == "sent"  # delayed: an event only
    with db.session_scope(engine) as session:
        kinds = [
            (e.source, e.kind, e.applied)
            for e in session.scalars(select(Event).where(Event.message_id == seeded["dan"]))
        ]
        assert kinds == [("bounce", "delayed", False)]
        ann_event = session.scalar(select(Event).where(Event.message_id == seeded["ann"]))
        assert ann_event.detail["matched_by"] == "recipient"  # no VERP tag in these
        assert ann_event.detail["note"].startswith("matched by recipient")
        assert ann_event.detail["file"].endswith("postfix.eml")
    fallbacks = sms_rows(engine)
    assert sorted(
        (m.address, m.notice, m.sequence, m.status, m.is_fallback) for m in fallbacks
    ) == [
        ("+14155550101", "notice", 0, "pending", True),
        ("+14155550102", "reminder", 1, "pending", True),
    ]
    counts = report.counts()
    assert counts == {
        "messages": 7,
        "dsns": 5,
        "recipients": 5,
        "bounced": 3,
        "already_final": 0,
        "events_only": 1,
        "fallbacks_queued": 2,
        "verified_by_tag": 0,
        "matched_by_recipient": 4,
        "unmatched": 1,
        "unparseable": 2,
        "skipped": 0,
    }
    assert report.unmatched == [f"{bounce_dir / 'ghost.eml'}: ghost@nowhere.example"]
    assert sorted(name.rsplit("/", 1)[1] for name, _ in report.unparseable) == [
        "garbage.bin",
        "notes.txt",
    ]
    # Importing the same bounces again changes nothing and queues nothing new.
    with db.session_scope(engine) as session:
        again = bounces.import_path(session, bounce_dir)
    assert (again.bounced, again.already_final, again.fallbacks) == (0, 3, 0)
    assert len(sms_rows(engine)) == 2


def test_delivered_and_relayed_are_events_only(engine, seeded, tmp_path):
    for action in ("delivered", "relayed", "expanded"):
        path = tmp_path / f"{action}.eml"
        path.write_bytes(postfix_dsn("ann@example.com", ANN_ID, action, "2.0.0"))
        with db.session_scope(engine) as session:
            report = bounces.import_path(session, path)
        assert report.events_only == 1
    assert message(engine, seeded["ann"]).status == "sent"
    assert sms_rows(engine) == []


def test_mbox_and_a_message_id_alone_is_not_believed(engine, seeded, tmp_path):
    mbox = tmp_path / "bounces.mbox"
    # Message-IDs are guessable: without a VERP tag, the recipient must match.
    parts = [
        postfix_dsn("ann@example.com", ANN_ID).replace(b"\r\n", b"\n"),
        gmail_dsn("someone-else@gmail.com", CAROL_ID),
    ]
    mbox.write_bytes(
        b"".join(b"From MAILER-DAEMON Fri Nov 27 10:03:00 2026\n" + p + b"\n" for p in parts)
    )
    with db.session_scope(engine) as session:
        report = bounces.import_path(session, mbox)
    assert (report.messages, report.dsns, report.bounced) == (2, 2, 1)
    assert message(engine, seeded["carol"]).status == "sent"
    assert report.unmatched == [f"{mbox}#2: someone-else@gmail.com"]


def test_missing_path_is_an_error(engine, tmp_path):
    with (
        pytest.raises(bounces.NotifyError, match="no such file"),
        db.session_scope(engine) as session,
    ):
        bounces.import_path(session, tmp_path / "nope")


@pytest.fixture
def cli_seeded(env, campaign_file):
    return seed_bounces(db.connect(env["NOTIFY_DATABASE_URL"]), campaign_file)


def test_bounces_cli_reports_and_audits(env, cli_seeded, bounce_dir):
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["--actor", "postmaster", "bounces", "import", str(bounce_dir)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Read 7 message(s): 5 delivery status notification(s) with 5 recipient report(s)." in out
    assert "Bounced: 3 email(s) newly marked bounced; 0 already final." in out
    assert f"Queued 2 SMS fallback(s) for {NAME}; send them with: notify send {NAME}" in out
    assert "Unmatched (1)" in out and "ghost@nowhere.example" in out
    assert "Unparseable (2)" in out and "notes.txt: not a delivery status notification" in out
    assert "Traceback" not in out
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        audit = session.scalar(select(AuditRecord).where(AuditRecord.command == "bounces import"))
    assert audit.actor == "postmaster" and audit.counts["bounced"] == 3
    assert audit.arguments == {"path": str(bounce_dir)}
    again = runner.invoke(
        main,
        ["bounces", "import", str(bounce_dir / "postfix.eml"), "--json"],
        catch_exceptions=False,
    )
    data = json.loads(again.output)
    assert (data["bounced"], data["already_final"], data["fallbacks_queued"]) == (0, 1, 0)
    missing = runner.invoke(main, ["bounces", "import", str(bounce_dir / "nope")])
    assert missing.exit_code == 1
    assert missing.output.strip().startswith("Error: ") and "no such file" in missing.output
