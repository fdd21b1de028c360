"""`notify preview`: exactly what one contact gets, and never a real reset token."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import campaigns, db
from notify.cli import main
from notify.models import Contact, ResetToken


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def loaded(env, campaign_file):
    """The example campaign with three contacts inserted directly."""
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        campaign = campaigns.get_campaign(session, "acme-2026-11")
        session.add_all(
            [
                Contact(
                    campaign_id=campaign.id,
                    key="C-1001",
                    name="Jane <script>x</script>",
                    email="jane@xn--bcher-kva.example",
                    phone="+14155550123",
                    exposures="identity;passwords",
                    extra={},
                    enrollment_code="EN-42",
                ),
                Contact(
                    campaign_id=campaign.id,
                    key="C-1002",
                    name=None,
                    email=None,
                    phone="+14155550124",
                    exposures="card",
                    extra={},
                ),
            ]
        )
    return engine


def test_preview_email_shows_headers_and_text_with_a_placeholder_link(loaded):
    result = run("preview", "--campaign", "acme-2026-11", "--contact", "C-1001")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "From: Acme Security <security@acme.example>\n" in out
    assert "To: jane@xn--bcher-kva.example\n" in out
    assert "Reply-To: help@acme.example\n" in out
    assert "Subject: Notice of Data Breach: your personal information at Acme Corp\n" in out
    assert "Template: identity/notice (version " in out
    assert "Dear Jane <script>x</script>," in out  # the text part, as written
    assert "https://acme.example/reset?token=<issued-at-send>" in out
    assert "Your enrollment code is EN-42." in out
    for heading in ("What Happened", "What You Can Do", "For More Information"):
        assert heading in out
    assert "\r" not in out and "<html" not in out
    with db.session_scope(loaded) as session:  # previews never issue a token
        assert session.scalar(select(func.count()).select_from(ResetToken)) == 0


def test_preview_html_escapes_the_name(loaded):
    result = run("preview", "--campaign", "acme-2026-11", "--contact", "C-1001", "--html")
    assert result.exit_code == 0, result.output
    html = result.output.split("----- HTML part -----", 1)[1]
    assert "Dear Jane &lt;script&gt;x&lt;/script&gt;," in html
    assert "token=&lt;issued-at-send&gt;" in html


def test_preview_raw_is_the_mime_message(loaded):
    result = run("preview", "--campaign", "acme-2026-11", "--contact", "C-1001", "--raw")
    assert result.exit_code == 0, result.output
    assert "Content-Type: multipart/alternative;" in result.output
    assert "Message-ID: <notify." in result.output


def test_preview_sms_shows_text_and_segments(loaded):
    result = run("preview", "--campaign", "acme-2026-11", "--contact", "C-1001", "--channel", "sms")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "To: +14155550123\nFrom: +14155550199\n" in out
    assert "Segments: 3 (GSM-7, 359 characters)" in out  # counted with a real-length token
    assert "Reset your password now: https://acme.example/reset?token=<issued-at-send>" in out
    assert "Full notice: https://acme.example/security-notice" in out


def test_preview_reminder(loaded):
    result = run(
        "preview", "--campaign", "acme-2026-11", "--contact", "C-1001", "--notice", "reminder"
    )
    assert result.exit_code == 0, result.output
    assert "Subject: Reminder: please reset your Acme Corp password" in result.output
    assert "you have not yet reset it" in result.output


def test_preview_defaults_to_sms_without_email(loaded):
    result = run("preview", "--campaign", "acme-2026-11", "--contact", "C-1002")
    assert result.exit_code == 0, result.output
    assert "To: +14155550124\n" in result.output
    assert "Segments: 2 (GSM-7, " in result.output
    assert "payment card information was involved" in result.output
    assert "reset" not in result.output.lower()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--campaign", "nope", "--contact", "C-1001"], "unknown campaign 'nope'"),
        (["--campaign", "acme-2026-11", "--contact", "C-404"], "no contact with key 'C-404'"),
        (
            ["--campaign", "acme-2026-11", "--contact", "C-1002", "--channel", "email"],
            "has no email address",
        ),
        (
            ["--campaign", "acme-2026-11", "--contact", "C-1002", "--notice", "reminder"],
            "reminders go only to contacts whose password was exposed",
        ),
    ],
)
def test_preview_errors_are_one_line(loaded, args, message):
    result = run("preview", *args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
