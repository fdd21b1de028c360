"""Password resets: records, tokens (hash only), completions, webhook, export, IdP import."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import campaigns, db
from notify.cli import main
from notify.config import Settings
from notify.errors import NotifyError
from notify.export import export_resets
from notify.models import (
    AuditRecord,
    Campaign,
    Contact,
    Event,
    Message,
    PasswordReset,
    ResetToken,
    utcnow,
)
from notify.resets.completions import complete, import_completions
from notify.resets.state import counts, iso
from notify.resets.tokens import (
    count_links_sent,
    ensure_resets,
    hash_token,
    issue_token,
    issue_tokens,
    reset_url,
)
from notify.server import handle_webhook, signature_for, verify_signature

SECRET = "s3cret-webhook-key-long-enough-for-hmac"
SETTINGS = Settings(webhook_secret=SECRET)
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43,}$")


# --------------------------------------------------------------------------- helpers (shared)


def make_campaign(session, campaign_file, name: str | None = None) -> Campaign:
    """Load the example campaign (optionally renamed) through the real loader."""
    if name:
        text = campaign_file.read_text().replace('name = "acme-2026-11"', f'name = "{name}"')
        campaign_file = campaign_file.with_name(f"{name}.toml")
        campaign_file.write_text(text)
    campaign, _ = campaigns.load_campaign(session, campaign_file)
    return campaign


def add_contact(
    session,
    campaign,
    key: str,
    exposures: str = "passwords",
    email: str | None = "",
    phone: str | None = None,
) -> Contact:
    contact = Contact(
        campaign_id=campaign.id,
        key=key,
        exposures=exposures,
        email=f"{key}@example.com" if email == "" else email,
        phone=phone,
    )
    session.add(contact)
    session.flush()
    return contact


def add_message(
    session,
    campaign,
    contact,
    *,
    channel: str = "email",
    status: str = "sent",
    sent_at: datetime | None = None,
    notice: str = "notice",
    sequence: int = 0,
) -> Message:
    message = Message(
        campaign_id=campaign.id,
        contact_id=contact.id,
        channel=channel,
        notice=notice,
        sequence=sequence,
        status=status,
        address=contact.email if channel == "email" else contact.phone,
        sent_at=sent_at if status in ("sent", "delivered") else None,
    )
    session.add(message)
    session.flush()
    return message


def snapshot(session) -> dict:
    """Everything a completion may touch, to prove an error changed nothing."""
    session.expire_all()
    return {
        "resets": sorted(
            (r.id, r.status, r.completed_at, r.completed_via, r.links_sent, r.link_expires_at)
            for r in session.scalars(select(PasswordReset))
        ),
        "tokens": sorted(
            (t.id, t.revoked_at, t.used_at) for t in session.scalars(select(ResetToken))
        ),
        "events": session.scalar(select(func.count()).select_from(Event)),
    }


def completions(session) -> int:
    return session.scalar(
        select(func.count()).select_from(Event).where(Event.kind == "reset_completed")
    )


def signed(payload: dict) -> tuple[bytes, str]:
    body = json.dumps(payload).encode()
    return body, signature_for(SECRET, body)


# --------------------------------------------------------------------------- records and tokens


def test_ensure_resets_only_for_password_contacts_and_idempotent(session, campaign):
    pw = add_contact(session, campaign, "a", "passwords")
    add_contact(session, campaign, "b", "card")
    both = add_contact(session, campaign, "c", "identity;passwords")
    add_contact(session, campaign, "d", "identity;card")
    assert ensure_resets(session, campaign) == 2
    assert ensure_resets(session, campaign) == 0
    owners = set(session.scalars(select(PasswordReset.contact_id)))
    assert owners == {pw.id, both.id}
    assert {r.status for r in session.scalars(select(PasswordReset))} == {"pending"}


def test_token_format_and_only_its_hash_is_stored(session, campaign):
    contact = add_contact(session, campaign, "a")
    message = add_message(session, campaign, contact, status="pending")
    now = utcnow()
    raw = issue_token(session, campaign, contact.id, message.id, now=now)
    other = issue_token(session, campaign, contact.id, None, now=now)
    assert raw and TOKEN_RE.match(raw) and TOKEN_RE.match(other) and raw != other
    stored = session.scalars(select(ResetToken).order_by(ResetToken.id)).all()
    assert [t.token_hash for t in stored] == [
        hashlib.sha256(raw.encode()).hexdigest(),
        hashlib.sha256(other.encode()).hexdigest(),
    ]
    assert stored[0].message_id == message.id
    assert stored[0].expires_at == now + timedelta(days=14)
    reset = session.scalar(select(PasswordReset))  # created on demand by issue_token
    session.refresh(reset)
    assert reset.links_sent == 2 and reset.link_expires_at == now + timedelta(days=14)
    # The raw token appears in no column of any table.
    session.flush()
    for table in ("reset_tokens", "password_resets", "events", "messages", "audit_log"):
        for row in session.execute(select(db_table(table))):
            assert not any(raw in str(cell) or other in str(cell) for cell in row), table
    url = reset_url(campaigns.config_of(campaign), raw)
    assert url == f"https://acme.example/reset?token={raw}"


def db_table(name: str):
    from notify.models import Base

    return Base.metadata.tables[name]


def test_issue_token_none_without_passwords_or_when_completed(session, campaign):
    card = add_contact(session, campaign, "card", "card")
    assert issue_token(session, campaign, card.id, None) is None
    assert session.scalar(select(func.count()).select_from(PasswordReset)) == 0
    contact = add_contact(session, campaign, "a")
    token = issue_token(session, campaign, contact.id, None)
    assert (
        complete(session, campaign, token=token, completed_at=utcnow(), source="webhook").status
        == 200
    )
    assert issue_token(session, campaign, contact.id, None) is None
    assert session.scalar(select(func.count()).select_from(ResetToken)) == 1


def test_issue_tokens_in_bulk_follows_the_same_rules(session, campaign):
    now = utcnow()
    linked = add_contact(session, campaign, "a")
    card = add_contact(session, campaign, "card", "card")
    done = add_contact(session, campaign, "done")
    first = add_message(session, campaign, linked, status="pending")
    second = add_message(session, campaign, linked, channel="sms", status="pending")
    ensure_resets(session, campaign)
    assert complete(session, campaign, key="done", completed_at=now, source="import").status == 200
    issued = issue_tokens(
        session,
        campaign,
        [(linked.id, first.id), (linked.id, second.id), (card.id, None), (done.id, None)],
        now=now,
    )
    assert issued[2:] == [None, None]
    assert all(TOKEN_RE.match(t) for t in issued[:2]) and issued[0] != issued[1]
    stored = dict(session.execute(select(ResetToken.message_id, ResetToken.token_hash)).all())
    assert stored == {first.id: hash_token(issued[0]), second.id: hash_token(issued[1])}
    session.expire_all()
    reset = session.scalar(select(PasswordReset).where(PasswordReset.contact_id == linked.id))
    # Issued is not sent: a link counts once its message is handed to the provider.
    assert (reset.links_sent, reset.link_expires_at) == (0, None)
    assert count_links_sent(session, [first.id, second.id]) == 2
    session.expire_all()
    reset = session.scalar(select(PasswordReset).where(PasswordReset.contact_id == linked.id))
    assert (reset.links_sent, reset.link_expires_at) == (2, now + timedelta(days=14))
    assert (
        complete(session, campaign, token=issued[1], completed_at=now, source="webhook").status
        == 200
    )


# --------------------------------------------------------------------------- completions


def test_completion_happens_once_and_revokes_the_other_links(session, campaign):
    contact = add_contact(session, campaign, "a")
    first = issue_token(session, campaign, contact.id, None)
    second = issue_token(session, campaign, contact.id, None)
    third = issue_token(session, campaign, contact.id, None)
    when = utcnow().replace(microsecond=0)
    result = complete(session, campaign, token=second, completed_at=when, source="webhook")
    assert (result.status, result.contact_key) == (200, "a")
    reset = session.scalar(select(PasswordReset))
    assert (reset.status, reset.completed_at, reset.completed_via) == ("completed", when, "webhook")
    tokens = {t.token_hash: t for t in session.scalars(select(ResetToken))}
    assert tokens[hash_token(second)].used_at == when
    assert tokens[hash_token(second)].revoked_at is None
    assert tokens[hash_token(first)].revoked_at is not None
    assert tokens[hash_token(third)].revoked_at is not None
    before = snapshot(session)
    for token in (first, second, third):
        again = complete(session, campaign, token=token, completed_at=utcnow(), source="webhook")
        assert again.status == 409
    assert snapshot(session) == before
    event = session.scalar(select(Event).where(Event.kind == "reset_completed"))
    assert (event.source, event.contact_id, event.campaign_id) == ("reset", contact.id, campaign.id)
    assert completions(session) == 1


def test_expired_link_is_410_and_a_fresh_one_still_works(session, campaign):
    contact = add_contact(session, campaign, "a")
    old = issue_token(session, campaign, contact.id, None, now=utcnow() - timedelta(days=15))
    before = snapshot(session)
    result = complete(session, campaign, token=old, completed_at=utcnow(), source="webhook")
    assert result.status == 410
    assert snapshot(session) == before
    fresh = issue_token(session, campaign, contact.id, None)
    assert (
        complete(session, campaign, token=fresh, completed_at=utcnow(), source="webhook").status
        == 200
    )


def test_unknown_token_is_404_and_foreign_campaign_token_too(session, campaign, campaign_file):
    other = make_campaign(session, campaign_file, "other-2026")
    contact = add_contact(session, other, "a")
    token = issue_token(session, other, contact.id, None)
    before = snapshot(session)
    for bad in ("x" * 43, "not a token!", token[:-1] + ("A" if token[-1] != "A" else "B")):
        assert (
            complete(session, campaign, token=bad, completed_at=utcnow(), source="webhook").status
            == 404
        )
    # A real token of another campaign is unknown in this one.
    assert (
        complete(session, campaign, token=token, completed_at=utcnow(), source="webhook").status
        == 404
    )
    assert snapshot(session) == before


def test_completion_by_key_and_by_email(session, campaign):
    by_key = add_contact(session, campaign, "K-1")
    add_contact(session, campaign, "K-2", email="Mixed.Case@example.com")
    add_contact(session, campaign, "card-only", "card")
    ensure_resets(session, campaign)
    token = issue_token(session, campaign, by_key.id, None)
    assert (
        complete(session, campaign, key="K-1", completed_at=utcnow(), source="import").status == 200
    )
    # Its link was revoked by the completion.
    assert (
        complete(session, campaign, token=token, completed_at=utcnow(), source="webhook").status
        == 409
    )
    # Domain case differs from the stored (lower-cased) domain; local part matched as stored.
    result = complete(
        session, campaign, email="Mixed.Case@EXAMPLE.COM", completed_at=utcnow(), source="webhook"
    )
    assert (result.status, result.contact_key) == (200, "K-2")
    assert (
        complete(
            session,
            campaign,
            email="mixed.case@example.com",
            completed_at=utcnow(),
            source="webhook",
        ).status
        == 409
    )
    before = snapshot(session)
    assert (
        complete(session, campaign, key="nobody", completed_at=utcnow(), source="import").status
        == 404
    )
    assert (
        complete(session, campaign, key="card-only", completed_at=utcnow(), source="import").status
        == 404
    )
    assert (
        complete(
            session,
            campaign,
            key="K-1",
            email="x@example.com",
            completed_at=utcnow(),
            source="import",
        ).status
        == 400
    )
    assert snapshot(session) == before
    assert completions(session) == 2


# --------------------------------------------------------------------------- webhook


def test_webhook_signature_good_bad_missing(session, campaign):
    contact = add_contact(session, campaign, "a")
    received = datetime.fromisoformat("2026-11-25T10:02:00+00:00")  # the injected clock
    token = issue_token(session, campaign, contact.id, None, now=received - timedelta(days=1))
    body, signature = signed({"token": token, "completed_at": "2026-11-25T10:00:00Z"})
    before = snapshot(session)
    bad = signature_for("wrong-secret", body)
    for header in (None, "", bad, signature.replace("sha256=", "sha1="), "sha256=zz"):
        status, answer = handle_webhook(session, SETTINGS, body, header, received)
        assert status == 403
        assert token not in json.dumps(answer)
    # No secret configured: nothing is accepted, even a "valid" signature.
    assert handle_webhook(session, Settings(), body, signature)[0] == 403
    assert snapshot(session) == before
    assert verify_signature(SECRET, body, signature)
    assert not verify_signature(SECRET, body + b" ", signature)
    status, answer = handle_webhook(session, SETTINGS, body, signature, received)
    assert status == 200
    assert answer["status"] == "completed" and answer["completed_at"] == "2026-11-25T10:00:00Z"
    assert token not in json.dumps(answer)
    reset = session.scalar(select(PasswordReset))
    assert reset.completed_at == datetime.fromisoformat("2026-11-25T10:00:00+00:00")
    assert reset.completion_received_at == received
    assert reset.completed_via == "webhook"


def test_webhook_replay_is_409_and_errors_change_nothing(session, campaign):
    contact = add_contact(session, campaign, "a")
    expired_contact = add_contact(session, campaign, "b")
    token = issue_token(session, campaign, contact.id, None)
    expired = issue_token(
        session, campaign, expired_contact.id, None, now=utcnow() - timedelta(days=20)
    )
    body, signature = signed({"token": token, "completed_at": utcnow().isoformat()})
    assert handle_webhook(session, SETTINGS, body, signature)[0] == 200
    before = snapshot(session)
    cases = [
        ((body, signature), 409),  # the very same request, replayed
        (signed({"token": expired}), 410),
        (signed({"token": "Z" * 43}), 404),
        (signed({"key": "nobody"}), 404),
        (signed({"completed_at": "2026-11-25"}), 400),
        (signed({"token": token, "completed_at": "yesterday"}), 400),
        (signed({"token": 12345}), 400),
        (signed(["token"]), 400),
        ((b"{not json", signature_for(SECRET, b"{not json")), 400),
        (signed({"key": "a", "campaign": "no-such-campaign"}), 404),
    ]
    for (payload, header), expected in cases:
        status, answer = handle_webhook(session, SETTINGS, payload, header)
        assert status == expected, (payload, answer)
        assert answer["status"] == "error" and answer["error"]
        assert token not in json.dumps(answer) and expired not in json.dumps(answer)
    assert snapshot(session) == before


def test_webhook_by_key_resolves_the_campaign(session, campaign, campaign_file):
    other = make_campaign(session, campaign_file, "other-2026")
    add_contact(session, campaign, "shared")
    add_contact(session, other, "shared")
    add_contact(session, other, "only-other")
    status, answer = handle_webhook(session, SETTINGS, *signed({"key": "shared"}))
    assert status == 400 and "campaign" in answer["error"]
    status, answer = handle_webhook(
        session, SETTINGS, *signed({"key": "shared", "campaign": "other-2026"})
    )
    assert (status, answer["campaign"]) == (200, "other-2026")
    status, answer = handle_webhook(session, SETTINGS, *signed({"key": "only-other"}))
    assert (status, answer["campaign"]) == (200, "other-2026")
    status, _ = handle_webhook(session, SETTINGS, *signed({"email": "only-other@example.com"}))
    assert status == 409
    done = session.scalars(select(PasswordReset).where(PasswordReset.status == "completed"))
    assert {r.campaign_id for r in done} == {other.id}


# --------------------------------------------------------------------------- export


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_export_columns_and_statuses(session, campaign, tmp_path):
    now = utcnow()
    add_contact(session, campaign, "no-link", phone="+14155550100")
    linked = add_contact(session, campaign, "linked")
    old = add_contact(session, campaign, '=HYPERLINK("http://x")')
    done = add_contact(session, campaign, "done")
    add_contact(session, campaign, "card", "card")
    ensure_resets(session, campaign)
    issue_token(session, campaign, linked.id, None, now=now)
    issue_token(session, campaign, old.id, None, now=now - timedelta(days=30))
    issue_token(session, campaign, old.id, None, now=now - timedelta(days=20))
    token = issue_token(session, campaign, done.id, None, now=now)
    when = now.replace(microsecond=0) - timedelta(hours=1)
    assert (
        complete(session, campaign, token=token, completed_at=when, source="webhook").status == 200
    )
    path = tmp_path / "resets.csv"
    assert export_resets(session, campaign, path) == 4
    with open(path, newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == [
            "campaign",
            "contact_key",
            "email",
            "phone",
            "reset_status",
            "reset_completed_at",
            "links_sent",
            "link_expires_at",
        ]
    rows = {row["contact_key"]: row for row in read_csv(path)}
    assert set(rows) == {"no-link", "linked", '\'=HYPERLINK("http://x")', "done"}
    assert rows["no-link"]["reset_status"] == "pending"
    assert rows["no-link"]["links_sent"] == "0" and rows["no-link"]["link_expires_at"] == ""
    assert rows["no-link"]["phone"] == "+14155550100"  # E.164 left as is
    assert rows["linked"]["reset_status"] == "pending"
    assert rows["linked"]["link_expires_at"] == iso(now + timedelta(days=14))
    expired = rows['\'=HYPERLINK("http://x")']
    assert (expired["reset_status"], expired["links_sent"]) == ("expired", "2")
    assert expired["link_expires_at"] == iso(now - timedelta(days=6))
    assert rows["done"]["reset_status"] == "completed"
    assert rows["done"]["reset_completed_at"] == when.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert all(row["campaign"] == "acme-2026-11" for row in rows.values())
    assert sorted(p.name for p in tmp_path.iterdir() if "resets" in p.name) == ["resets.csv"]
    assert counts(session, campaign) == {"pending": 2, "completed": 1, "expired": 1}


# --------------------------------------------------------------------------- IdP import


def write(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def test_import_completions_rejects_and_idempotency(session, campaign, tmp_path):
    for key in ("a", "b", "c"):
        add_contact(session, campaign, key)
    add_contact(session, campaign, "card", "card")
    assert ensure_resets(session, campaign) == 3
    token = issue_token(
        session, campaign, session.scalar(select(Contact.id).where(Contact.key == "a")), None
    )
    source = write(
        tmp_path / "idp.csv",
        (
            "Customer ID,E-mail,Completed At\r\n"
            "a,,2026-11-25T10:00:00Z\r\n"  # 2: by key
            ",B@Example.com,2026-11-25 11:00\r\n"  # 3: by email, domain case differs
            "zz,,2026-11-25T10:00:00Z\r\n"  # 4: unknown key
            "c,,not a date\r\n"  # 5: bad time
            "card,,2026-11-25T10:00:00Z\r\n"  # 6: no passwords exposed
            '"a",,2026-11-26T10:00:00Z\r\n'  # 7: same contact again
            ",=cmd|' /C calc'!A0,2026-11-25\r\n"  # 8: unknown email, formula cell
            ",,2026-11-25\r\n"  # 9: neither key nor email
        ),
    )
    rejects = tmp_path / "rejects.csv"
    summary = import_completions(session, campaign, source, rejects_path=rejects)
    assert summary.as_dict() == {
        "read": 8,
        "completed": 2,
        "already_completed": 1,
        "rejected": 5,
        "dry_run": False,
    }
    rows = read_csv(rejects)
    assert [r["line"] for r in rows] == ["4", "5", "6", "8", "9"]
    assert "unknown key 'zz'" in rows[0]["reason"]
    assert "ISO-8601" in rows[1]["reason"]
    assert "no exposed password" in rows[2]["reason"]
    assert rows[3]["E-mail"].startswith("'=")  # neutralized, as in the exports
    assert list(rows[0]) == ["line", "reason", "Customer ID", "E-mail", "Completed At"]
    done = {
        c.key: r
        for r, c in session.execute(
            select(PasswordReset, Contact).join(Contact, Contact.id == PasswordReset.contact_id)
        )
    }
    assert done["a"].status == "completed" and done["b"].status == "completed"
    assert done["a"].completed_at == datetime.fromisoformat("2026-11-25T10:00:00+00:00")
    assert done["a"].completed_via == "import"
    assert done["c"].status == "pending"
    assert session.scalar(select(ResetToken.revoked_at)) is not None
    assert (
        complete(session, campaign, token=token, completed_at=utcnow(), source="webhook").status
        == 409
    )
    assert completions(session) == 2
    again = import_completions(session, campaign, source, rejects_path=rejects)
    assert again.as_dict() == {
        "read": 8,
        "completed": 0,
        "already_completed": 3,
        "rejected": 5,
        "dry_run": False,
    }
    assert completions(session) == 2


def test_import_is_all_or_nothing_on_a_bad_file(session, campaign, tmp_path):
    add_contact(session, campaign, "a")
    add_contact(session, campaign, "b")
    ensure_resets(session, campaign)
    before = snapshot(session)
    good = b"key,completed_at\na,2026-11-25\nb,2026-11-25\n"
    # Valid rows first, then bytes that are not UTF-8: nothing may be applied.
    padding = b"".join(b"a,2026-11-25\n" for _ in range(2000))
    bad = write(tmp_path / "bad.csv", good + padding + b"\xff\xfe,2026-11-25\n")
    with pytest.raises(NotifyError, match="not UTF-8"):
        import_completions(session, campaign, bad, rejects_path=tmp_path / "r.csv")
    assert snapshot(session) == before
    assert not (tmp_path / "r.csv").exists()
    for text, problem in [
        ("key,when_done\na,2026-11-25\n", "no completed_at column"),
        ("name,completed_at\nx,2026-11-25\n", "no key or email column"),
        ("", "empty"),
    ]:
        with pytest.raises(NotifyError, match=problem):
            import_completions(session, campaign, write(tmp_path / "x.csv", text))
    with pytest.raises(NotifyError, match="no such file"):
        import_completions(session, campaign, tmp_path / "missing.csv")
    assert snapshot(session) == before


def test_import_dry_run_counts_and_changes_nothing(session, campaign, tmp_path):
    add_contact(session, campaign, "a")
    ensure_resets(session, campaign)
    before = snapshot(session)
    source = write(tmp_path / "idp.tsv", "key\tcompleted_at\na\t2026-11-25\nzz\t2026-11-25\n")
    summary = import_completions(session, campaign, source, dry_run=True)
    assert (summary.completed, summary.rejected, summary.dry_run) == (1, 1, True)
    assert snapshot(session) == before


# --------------------------------------------------------------------------- CLI


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_export_and_complete(env, campaign_file, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        campaign = make_campaign(session, campaign_file)
        add_contact(session, campaign, "a")
        add_contact(session, campaign, "b")
    source = write(
        tmp_path / "idp.csv",
        "email,completed_at\na@example.com,2026-11-25\nnobody@example.com,2026-11-25\n",
    )
    dry = run(
        "resets", "complete", str(source), "--campaign", "acme-2026-11", "--dry-run", "--json"
    )
    assert json.loads(dry.output.strip().splitlines()[-1])["completed"] == 1
    result = run(
        "resets",
        "complete",
        str(source),
        "--campaign",
        "acme-2026-11",
        "--rejects",
        str(tmp_path / "rej.csv"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == {
        "read": 2,
        "completed": 1,
        "already_completed": 0,
        "rejected": 1,
        "dry_run": False,
    }
    assert read_csv(tmp_path / "rej.csv")[0]["line"] == "3"
    out = tmp_path / "out.csv"
    result = run("resets", "export", "acme-2026-11", "-o", str(out))
    assert result.exit_code == 0 and "Wrote 2 reset(s)" in result.output
    assert {r["contact_key"]: r["reset_status"] for r in read_csv(out)} == {
        "a": "completed",
        "b": "pending",
    }
    with db.session_scope(engine) as session:
        audit = {a.command: a.counts for a in session.scalars(select(AuditRecord))}
    assert audit["resets complete"]["completed"] == 1
    assert audit["resets export"] == {"rows": 2}
    missing = CliRunner().invoke(main, ["resets", "export", "nope", "-o", str(out)])
    assert missing.exit_code == 1 and missing.output.startswith("Error: unknown campaign")
    bad = CliRunner().invoke(
        main, ["resets", "complete", str(tmp_path / "none.csv"), "--campaign", "acme-2026-11"]
    )
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1
