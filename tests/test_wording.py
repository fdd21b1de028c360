"""Words that say what happened: each summary the issue names, exactly as printed."""

from __future__ import annotations

import json

from click.testing import CliRunner

from notify import db
from notify.cli import main
from notify.models import Message
from tests.factories import add_contacts, campaign_toml, count, make_campaign


def run(*args, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)


def test_dry_run_says_what_would_be_sent_and_what_is_skipped_why(env, tmp_path):
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    campaign = make_campaign(engine, campaign_toml(tmp_path))
    add_contacts(engine, campaign, 5)
    add_contacts(engine, campaign, 2, emails=False, start=10)
    add_contacts(engine, campaign, 1, phones=False, start=20)
    result = run("send", campaign.name, "--dry-run")
    lines = result.output.splitlines()
    assert lines[0].startswith(f"Dry run (nothing sent): campaign {campaign.name} in ")
    assert lines[1:] == ["  email: 6 would be sent, 2 skipped (no address)",
                         "  sms: 7 would be sent, 1 skipped (no address)"]
    data = json.loads(run("send", campaign.name, "--dry-run", "--json").output)
    assert data["run"] == {"email": {"would_send": 6}, "sms": {"would_send": 7}}
    assert data["skipped"] == {"email": {"no_address": 2}, "sms": {"no_address": 1}}
    with db.session_scope(engine) as session:
        assert count(session, Message) == 0  # a dry run plans nothing
    run("send", campaign.name, "--yes", "--channel", "email", "--email-rate", "0")
    after = run("send", campaign.name, "--dry-run").output.splitlines()
    assert after[1:] == ["  email: 0 would be sent, 6 already sent, 2 skipped (no address)",
                         "  sms: 7 would be sent, 1 skipped (no address)"]
