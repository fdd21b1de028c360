"""Configuration that would leak a secret is refused before anything runs (issue 13)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from notify import db
from notify.cli import main
from notify.config import Settings, load_settings
from notify.errors import ConfigError
from notify.models import Message

SECRETS = {
    "NOTIFY_SMTP_PASSWORD": "smtp-pass-1234",
    "TWILIO_AUTH_TOKEN": "twilio-tok-5678",
    "NOTIFY_WEBHOOK_SECRET": "w" * 40,
    "NOTIFY_DATABASE_URL": "postgresql+psycopg://notify:db-pass-9999@db.example/n",
}


def test_repr_and_str_hide_every_secret():
    settings = load_settings(SECRETS)
    for shown in (repr(settings), str(settings), f"{settings!r}"):
        for secret in ("smtp-pass-1234", "twilio-tok-5678", "w" * 40, "db-pass-9999"):
            assert secret not in shown
        assert "smtp_password='***'" in shown and "db.example" in shown
    assert "smtp_password=None" in repr(Settings())  # unset stays visibly unset


PLAIN = {
    "NOTIFY_SMTP_HOST": "smtp.example.com",
    "NOTIFY_SMTP_TLS": "none",
    "NOTIFY_SMTP_USERNAME": "notify",
    "NOTIFY_SMTP_PASSWORD": "smtp-pass-1234",
}


@pytest.mark.parametrize(
    "env, problem",
    [
        (PLAIN, "NOTIFY_SMTP_TLS=none would send the SMTP password"),
        ({**PLAIN, "NOTIFY_SMTP_HOST": "10.0.0.5"}, "in clear to 10.0.0.5"),
        ({**PLAIN, "NOTIFY_SMTP_HOST": "127.0.0.1.example.com"}, "in clear"),
        ({**PLAIN, "NOTIFY_SMTP_ALLOW_PLAINTEXT": "yes"}, "NOTIFY_SMTP_ALLOW_PLAINTEXT: 'yes'"),
        ({"NOTIFY_TWILIO_API_URL": "http://api.twilio.example"}, "would send the Twilio auth"),
        ({"NOTIFY_TWILIO_API_URL": "http://192.168.1.10:8080"}, "use https"),
        ({"NOTIFY_TWILIO_API_URL": "ftp://127.0.0.1"}, "is not an http(s) URL"),
    ],
)
def test_cleartext_credentials_are_refused(env, problem):
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value) and "smtp-pass-1234" not in str(caught.value)


@pytest.mark.parametrize(
    "env",
    [
        {**PLAIN, "NOTIFY_SMTP_ALLOW_PLAINTEXT": "1"},  # the operator says the path is protected
        {**PLAIN, "NOTIFY_SMTP_HOST": "127.0.0.1"},
        {**PLAIN, "NOTIFY_SMTP_HOST": "localhost"},
        {**PLAIN, "NOTIFY_SMTP_HOST": "::1"},
        {**PLAIN, "NOTIFY_SMTP_TLS": "starttls"},
        {**PLAIN, "NOTIFY_SMTP_TLS": "tls"},
        {k: v for k, v in PLAIN.items() if k != "NOTIFY_SMTP_USERNAME"},  # no AUTH at all
        {"NOTIFY_TWILIO_API_URL": "https://api.twilio.example"},
        {"NOTIFY_TWILIO_API_URL": "http://127.0.0.1:8099"},
        {"NOTIFY_TWILIO_API_URL": "http://localhost:8099/"},
        {"NOTIFY_TWILIO_API_URL": "http://[::1]:8099"},
    ],
)
def test_encrypted_or_loopback_settings_are_accepted(env):
    load_settings(env)


def test_send_refuses_plaintext_auth_before_claiming_anything(
    env, campaign_file, monkeypatch, tmp_path
):
    """`notify send` stops with one line; every message stays pending, nothing reaches SMTP."""
    runner = CliRunner()
    assert runner.invoke(main, ["campaign", "load", str(campaign_file)]).exit_code == 0
    contacts = tmp_path / "c.csv"
    contacts.write_text("email,exposure\nann@example.com,card\n")
    result = runner.invoke(
        main, ["contacts", "import", str(contacts), "--campaign", "acme-2026-11"]
    )
    assert result.exit_code == 0, result.output
    for name, value in PLAIN.items():  # smtp.example.com: not loopback
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NOTIFY_OUTBOX")
    result = runner.invoke(main, ["send", "acme-2026-11", "--yes", "--channel", "email"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert "NOTIFY_SMTP_ALLOW_PLAINTEXT=1" in result.output
    assert "smtp-pass-1234" not in result.output
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Message).where(Message.status != "pending")
            )
            == 0
        )


@pytest.mark.parametrize("secret", ["x", "y" * 31, "é" * 15])
def test_short_webhook_secret_is_refused_at_serve_start(env, monkeypatch, secret):
    started = []
    monkeypatch.setattr("notify.server.serve", lambda *a, **k: started.append(a))
    monkeypatch.setenv("NOTIFY_WEBHOOK_SECRET", secret)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 1 and started == []
    assert result.output.count("\n") == 1
    assert "NOTIFY_WEBHOOK_SECRET is" in result.output and "at least 32" in result.output
    assert secret not in result.output


def test_make_app_refuses_a_short_webhook_secret(sqlite_url):
    from notify.server import make_app

    engine = db.make_engine(sqlite_url)
    with pytest.raises(ConfigError, match="at least 32"):
        make_app(engine, Settings(webhook_secret="short"))
    make_app(engine, Settings(webhook_secret="z" * 32))
    make_app(engine, Settings(webhook_secret=None))  # unset: the webhook refuses everything
