"""`notify templates check`: exit 0 on good notices, 1 naming file and line on broken ones."""

from __future__ import annotations

from click.testing import CliRunner

from notify import campaigns, db
from notify.cli import main
from notify.templates import notices_for


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_check_defaults_without_a_campaign():
    result = run("templates", "check")
    assert result.exit_code == 0, result.output
    assert "Templates OK for the built-in notices" in result.output


def test_check_a_campaign_with_a_good_override(env, campaign_file):
    folder = campaign_file.parent / "notices" / "card"
    folder.mkdir(parents=True)
    (folder / "email.subject.j2").write_text("Important: your card at {{ organization }}\n")
    campaign_file.write_text(_with_templates(campaign_file.read_text()))
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    result = run("templates", "check", "--campaign", "acme-2026-11")
    assert result.exit_code == 0, result.output
    assert "Templates OK for campaign 'acme-2026-11'" in result.output
    assert str(folder.parent) in result.output
    with db.session_scope(db.connect(env["NOTIFY_DATABASE_URL"])) as session:
        notices = notices_for(session, campaigns.get_campaign(session, "acme-2026-11"))
    assert notices.templates.overrides == {
        "card/email.subject.j2": "Important: your card at {{ organization }}\n"
    }


def test_check_a_campaign_with_a_broken_override(env, campaign_file):
    folder = campaign_file.parent / "notices" / "identity"
    folder.mkdir(parents=True)
    (folder / "email.txt.j2").write_text("Notice of Data Breach\n\n{{ campaign.descripton }}\n")
    (folder / "sms.txt.j2").write_text("{{ organization }}\n{% for x in %}\n")
    campaign_file.write_text(_with_templates(campaign_file.read_text()))
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    result = run("templates", "check", "--campaign", "acme-2026-11")
    assert result.exit_code == 1
    assert "notices/identity/email.txt.j2, line 3: undefined" in result.output
    assert "descripton" in result.output
    assert "notices/identity/sms.txt.j2, line 2: syntax error" in result.output
    assert "Error: 2 problem(s) in the notices of campaign 'acme-2026-11'" in result.output
    assert "Traceback" not in result.output


def test_check_unknown_campaign(env):
    db.connect(env["NOTIFY_DATABASE_URL"])  # an existing database without that campaign
    result = run("templates", "check", "--campaign", "nope")
    assert result.exit_code == 1
    assert "Error: unknown campaign 'nope'" in result.output


def _with_templates(toml: str) -> str:
    """The campaign file with `templates = "notices"` (a top-level key, before [throttle])."""
    return toml.replace("[throttle]", 'templates = "notices"\n\n[throttle]')
