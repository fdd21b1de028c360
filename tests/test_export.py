"""`notify export deliveries|events|unreached`: exact columns, safe cells, streamed, atomic."""

from __future__ import annotations

import csv
import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select

from notify import db, export
from notify.cli import main
from notify.errors import NotifyError
from notify.models import AuditRecord, Contact, Event, Message, PasswordReset
from tests.test_status import NOW, seed_sample

NAME = "acme-2026-11"


def read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def rows_by(path, *keys):
    header, *rows = read(path)
    return [dict(zip(header, row, strict=True)) for row in rows]


def expire_c5(engine, ids):
    with db.session_scope(engine) as session:
        reset = session.scalar(select(PasswordReset).where(PasswordReset.contact_id == ids["c5"]))
        reset.link_expires_at = NOW - timedelta(days=1)


def test_deliveries_columns_values_and_safe_cells(engine, campaign_file, tmp_path):
    ids = seed_sample(engine, campaign_file)
    expire_c5(engine, ids)
    out = tmp_path / "deliveries.csv"
    assert export.export_deliveries(engine, NAME, out, now=NOW) == 8
    header = read(out)[0]
    assert header == [
        "campaign",
        "contact_key",
        "name",
        "channel",
        "address",
        "exposures",
        "template",
        "status",
        "attempts",
        "provider_message_id",
        "error_code",
        "error_message",
        "first_attempt_at",
        "sent_at",
        "delivered_at",
        "last_event_at",
        "content_sha256",
        "reset_status",
        "reset_completed_at",
        "transport",
        "template_version",
        "state",
        "country",
    ]
    rows = rows_by(out)
    assert len(rows) == 8
    first = rows[0]
    assert first == {
        "campaign": NAME,
        "contact_key": "c1",
        "name": "Ann Example",
        "channel": "email",
        "address": "Ann.Example@example.com",
        "exposures": "identity;passwords",
        "template": "passwords/email",
        "status": "delivered",
        "attempts": "1",
        "provider_message_id": "<1@acme.example>",
        "error_code": "",
        "error_message": "",
        "first_attempt_at": "2026-11-27T10:02:03Z",
        "sent_at": "2026-11-27T10:02:03Z",
        "delivered_at": "2026-11-27T10:02:03Z",
        "last_event_at": "",
        "content_sha256": "ab" * 32,
        "reset_status": "completed",
        "reset_completed_at": "2026-11-27T13:02:03Z",
        "transport": "smtp:relay.acme.example",
        "template_version": "cd" * 32,
        "state": "CA",
        "country": "US",
    }
    sms = rows[1]
    assert (sms["channel"], sms["address"], sms["error_code"]) == ("sms", "+14155550101", "21610")
    bob = [r for r in rows if r["contact_key"] == "c2"]
    assert bob[0]["name"] == '\'=HYPERLINK("x")'  # a formula, neutralized
    assert bob[0]["error_message"] == "'=cmd|' /C calc'!A0"
    assert bob[0]["reset_status"] == "pending"
    assert {r["reset_status"] for r in rows if r["contact_key"] == "c3"} == {""}
    assert {r["reset_status"] for r in rows if r["contact_key"] == "c5"} == {"expired"}


def test_state_and_country_are_neutralized_and_bom_is_optional(engine, campaign_file, tmp_path):
    ids = seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        contact = session.get(Contact, ids["c2"])
        contact.state, contact.country = "=1+2", "Côte d'Ivoire"
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    export.export_deliveries(engine, NAME, plain)
    export.export_deliveries(engine, NAME, bom, bom=True)
    assert not plain.read_bytes().startswith(b"\xef\xbb\xbf")
    assert bom.read_bytes() == b"\xef\xbb\xbf" + plain.read_bytes()
    bob = [r for r in rows_by(plain) if r["contact_key"] == "c2"][0]
    assert (bob["state"], bob["country"]) == ("'=1+2", "Côte d'Ivoire")
    result = CliRunner().invoke(
        main,
        ["export", "unreached", NAME, "-o", "-", "--bom"],
        env={"NOTIFY_DATABASE_URL": str(engine.url.render_as_string(hide_password=False))},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(b"\xef\xbb\xbfkey,name,")


def test_phone_exemption_is_exact(engine, campaign_file, tmp_path):
    ids = seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        for n, address in enumerate(["+12+cmd|' /C calc'!A0", "+", "+44 20 7946 0958"]):
            session.add(
                Message(
                    campaign_id=1,
                    contact_id=ids["c4"],
                    channel="sms",
                    notice="reminder",
                    sequence=n + 1,
                    status="pending",
                    address=address,
                )
            )
    out = tmp_path / "d.csv"
    export.export_deliveries(engine, NAME, out)
    addresses = [r["address"] for r in rows_by(out) if r["contact_key"] == "c4"]
    assert addresses == ["'+12+cmd|' /C calc'!A0", "'+", "'+44 20 7946 0958"]
    plain = [r["address"] for r in rows_by(out) if r["channel"] == "sms"]
    assert "+14155550101" in plain


def _selects(engine):
    seen = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda *a: (
            a[2].lstrip().upper().startswith("SELECT") and "messages" in a[2] and seen.append(a[2])
        ),
    )
    return seen


def test_deliveries_stream_in_batches(engine, campaign_file, tmp_path, monkeypatch):
    seed_sample(engine, campaign_file)
    full = tmp_path / "full.csv"
    export.export_deliveries(engine, NAME, full)
    monkeypatch.setattr(export, "BATCH", 3)
    paged = tmp_path / "paged.csv"
    selects = _selects(engine)
    export.export_deliveries(engine, NAME, paged)
    assert read(paged) == read(full)  # same rows, same order
    if db.is_sqlite(engine):
        assert len(selects) == 3  # id-keyset pages of 3: 3 + 3 + 2
    else:
        assert len(selects) == 1  # one statement on a server-side cursor
    ids = [row[0] for row in read(paged)[1:]]
    assert len(ids) == 8


def test_failed_export_leaves_no_file(engine, campaign_file, tmp_path, monkeypatch):
    seed_sample(engine, campaign_file)
    out = tmp_path / "deliveries.csv"
    out.write_text("the previous good export\n")

    def broken(session, campaign, writer, now=None, progress=None):
        writer.writerow(["half", "a", "row"])
        raise RuntimeError("database went away")

    monkeypatch.setattr(export, "_write_deliveries", broken)
    with pytest.raises(RuntimeError):
        export.export_deliveries(engine, NAME, out)
    assert out.read_text() == "the previous good export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "deliveries" in p.name) == [
        "deliveries.csv"
    ]
    fresh = tmp_path / "fresh.csv"
    with pytest.raises(RuntimeError):
        export.export_deliveries(engine, NAME, fresh)
    assert not fresh.exists()


def test_export_paths_and_unknown_campaign(engine, campaign_file, tmp_path):
    seed_sample(engine, campaign_file)
    with pytest.raises(NotifyError, match="does not exist"):
        export.export_deliveries(engine, NAME, tmp_path / "missing" / "x.csv")
    with pytest.raises(NotifyError, match="is a folder"):
        export.export_deliveries(engine, NAME, tmp_path)
    with pytest.raises(NotifyError, match="unknown campaign"):
        export.export_deliveries(engine, "nope", tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_events_export(engine, campaign_file, tmp_path):
    seed_sample(engine, campaign_file)
    out = tmp_path / "events.csv"
    assert export.export_events(engine, NAME, out) == 8
    header, *rows = read(out)
    assert header == [
        "id",
        "at",
        "campaign",
        "contact_key",
        "message_id",
        "channel",
        "source",
        "kind",
        "applied",
        "detail",
    ]
    first = dict(zip(header, rows[0], strict=True))
    assert (
        first["campaign"],
        first["contact_key"],
        first["channel"],
        first["source"],
        first["kind"],
        first["applied"],
    ) == (NAME, "c1", "email", "send", "delivered", "true")
    assert first["at"] == "2026-11-27T10:02:03Z"
    assert json.loads(first["detail"]) == {"note": "seed"}
    assert [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows)


def test_events_export_pages_on_sqlite(engine, campaign_file, tmp_path, monkeypatch):
    seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        session.add(
            Event(campaign_id=1, source="reset", kind="completed", detail=None, applied=True)
        )
    monkeypatch.setattr(export, "BATCH", 2)
    out = tmp_path / "events.csv"
    assert export.export_events(engine, NAME, out) == 9
    last = read(out)[-1]
    assert last[3:6] == ["", "", ""] and last[6:8] == ["reset", "completed"]


def test_unreached_export(engine, campaign_file, tmp_path, monkeypatch):
    seed_sample(engine, campaign_file)
    monkeypatch.setattr(export, "BATCH", 2)  # contacts span pages
    out = tmp_path / "unreached.csv"
    assert export.export_unreached(engine, NAME, out) == 3
    header, *rows = read(out)
    assert header == ["key", "name", "email", "phone", "exposures", "country", "state", "why"]
    by_key = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert set(by_key) == {"c2", "c3", "c4"}
    assert by_key["c2"]["why"] == (
        "email: bounced (5.1.1 =cmd|' /C calc'!A0); sms: undelivered (30003 unreachable handset)"
    )
    assert by_key["c2"]["name"].startswith("'=")
    assert by_key["c2"]["exposures"] == "card;passwords"
    assert by_key["c3"]["why"] == "email: pending; sms: skipped (no phone)"
    assert by_key["c4"]["why"] == "no message planned yet"
    assert (by_key["c4"]["phone"], by_key["c4"]["country"], by_key["c4"]["state"]) == (
        "+14155550104",
        "US",
        "CA",
    )


def test_export_cli_writes_audits_and_errors(env, campaign_file, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    seed_sample(engine, campaign_file)
    runner = CliRunner()
    for what, rows in (("deliveries", 8), ("events", 8), ("unreached", 3)):
        out = tmp_path / f"{what}.csv"
        result = runner.invoke(
            main,
            ["--actor", "auditor", "export", what, NAME, "-o", str(out)],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"Wrote {rows:,} {what} row(s) of {NAME} to {out}."
        assert len(read(out)) == rows + 1
    result = runner.invoke(
        main, ["export", "deliveries", NAME, "-o", str(tmp_path / "j.csv"), "--json"]
    )
    assert json.loads(result.output)["rows"] == 8
    with db.session_scope(engine) as session:
        audits = list(session.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    assert [a.command for a in audits][:3] == [
        "export deliveries",
        "export events",
        "export unreached",
    ]
    assert audits[0].actor == "auditor" and audits[0].counts == {"rows": 8}
    bad = runner.invoke(main, ["export", "deliveries", "nope", "-o", str(tmp_path / "n.csv")])
    assert bad.exit_code == 1 and bad.output.startswith("Error: unknown campaign 'nope'")
    assert not (tmp_path / "n.csv").exists()
    missing = runner.invoke(main, ["export", "events", NAME])
    assert missing.exit_code == 2 and "-o" in missing.output
