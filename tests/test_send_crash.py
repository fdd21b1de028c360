"""kill -9 in the middle of `notify send`, then run it again: everyone told, nobody twice.

The only repeats allowed are emails that were in flight at the instant of the kill (at most
--concurrency), re-sent with the same Message-ID; SMS in doubt are reconciled, never repeated.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from email import message_from_bytes

import pytest

from notify import db
from tests.factories import add_contacts, campaign_toml, make_campaign, message_statuses
from tests.processes import notify_process, smtp_env, wait_for_sink
from tests.smtp_sink import SmtpSink
from tests.twilio_double import TwilioDouble

CONTACTS = 150
CONCURRENCY = 4


@pytest.mark.slow
def test_kill_9_mid_send_then_resume(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, CONTACTS, exposures="passwords;card")
    with SmtpSink() as sink, TwilioDouble(delay=0.02) as tw:
        child_env = smtp_env({**os.environ, **env, **tw.env()}, sink)
        args = [
            "send",
            campaign.name,
            "--yes",
            "--email-rate",
            "120",
            "--sms-rate",
            "60",
            "--concurrency",
            str(CONCURRENCY),
        ]
        first = notify_process(child_env, *args)
        wait_for_sink(sink, CONTACTS // 3, [first])
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = (sink.count, len(tw.messages))
        assert 0 < killed_at[0] < CONTACTS

        second = notify_process(child_env, *args)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err

        emails = Counter(r.rcpt_tos[0] for r in sink.received)
        ids_by_rcpt: dict[str, set] = {}
        for r in sink.received:
            ids_by_rcpt.setdefault(r.rcpt_tos[0], set()).add(
                message_from_bytes(r.data)["Message-ID"]
            )
        sms = Counter(m["to"] for m in tw.messages)

    expected_emails = {f"user{i}@example.com" for i in range(CONTACTS)}
    assert set(emails) == expected_emails  # nobody skipped
    repeats = sum(n - 1 for n in emails.values())
    assert repeats <= CONCURRENCY, f"{repeats} repeated emails"
    assert all(len(ids) == 1 for ids in ids_by_rcpt.values())  # same Message-ID on repeat
    assert set(sms) == {f"+1415555{i:04d}" for i in range(CONTACTS)}
    assert max(sms.values()) == 1  # no SMS ever repeated
    assert message_statuses(engine) == {"sent": 2 * CONTACTS}
