"""`notify demo` runs the whole job on the embedded defaults, whatever the environment says."""

from __future__ import annotations

import csv
import json

from click.testing import CliRunner

from notify.cli import main

COLUMNS = (
    "campaign,contact_key,name,channel,address,exposures,template,status,attempts,"
    "provider_message_id,error_code,error_message,first_attempt_at,sent_at,"
    "delivered_at,last_event_at,content_sha256,reset_status,reset_completed_at,"
    "transport,template_version,state,country"
)


def test_demo_end_to_end(tmp_path, monkeypatch):
    # A configured relay must not be used by the demo.
    monkeypatch.setenv("NOTIFY_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NOTIFY_SMTP_PORT", "9")
    folder = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "rejected line" in out and "no email and no phone" in out
    assert "password reset completed" in out
    deliveries = folder / "deliveries.csv"
    with deliveries.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert ",".join(rows[0]) == COLUMNS
    body = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert {r["status"] for r in body} == {"sent", "skipped"}
    assert {r["reset_status"] for r in body} >= {"pending", "completed"}
    emails = list((folder / "outbox" / "email").glob("*.eml"))
    sms = [json.loads(line) for line in (folder / "outbox" / "sms.jsonl").read_text().splitlines()]
    assert len(emails) == sum(1 for r in body if r["channel"] == "email" and r["status"] == "sent")
    assert len(sms) == sum(1 for r in body if r["channel"] == "sms" and r["status"] == "sent")
    assert (folder / "rejects.csv").read_text().startswith("line,reason,")


def test_demo_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "something").write_text("x")
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "needs an empty or new folder" in result.output
