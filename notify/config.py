"""Settings from the environment (DESIGN.md, Configuration); a campaign file holds the rest."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from notify.errors import ConfigError

# DESIGN.md: a claimed batch is leased for at most 30 s without renewal.
LEASE_SECONDS = 30.0

SMTP_TLS_MODES = ("starttls", "tls", "none")


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration read once from environment variables."""

    database_url: str = "sqlite:///notify.db"
    outbox: Path = Path("outbox")
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_tls: str = "starttls"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    sms_from: str | None = None
    twilio_api_url: str | None = None
    public_url: str | None = None
    webhook_secret: str | None = None

    @property
    def email_transport(self) -> str:
        """``smtp`` when a relay is configured, else the embedded ``outbox``."""
        return "smtp" if self.smtp_host else "outbox"

    @property
    def sms_transport(self) -> str:
        """``twilio`` when credentials are configured, else the embedded ``outbox``."""
        return "twilio" if self.twilio_account_sid and self.twilio_auth_token else "outbox"

    @property
    def status_callback_url(self) -> str | None:
        """The URL Twilio posts status callbacks to, when a public URL is known."""
        if not self.public_url:
            return None
        return self.public_url.rstrip("/") + "/webhooks/twilio/status"


def _blank_to_none(value: str | None) -> str | None:
    return value if value not in (None, "") else None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the NOTIFY_* and TWILIO_* variables; a bad value is a ConfigError naming it."""
    env = os.environ if env is None else env
    port_text = env.get("NOTIFY_SMTP_PORT") or "587"
    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(f"NOTIFY_SMTP_PORT: {port_text!r} is not a TCP port number") from None
    tls = (env.get("NOTIFY_SMTP_TLS") or "starttls").strip().lower()
    if tls not in SMTP_TLS_MODES:
        raise ConfigError(
            f"NOTIFY_SMTP_TLS: {tls!r} is not one of {', '.join(SMTP_TLS_MODES)}"
        )
    return Settings(
        database_url=env.get("NOTIFY_DATABASE_URL") or "sqlite:///notify.db",
        outbox=Path(env.get("NOTIFY_OUTBOX") or "outbox"),
        smtp_host=_blank_to_none(env.get("NOTIFY_SMTP_HOST")),
        smtp_port=port,
        smtp_username=_blank_to_none(env.get("NOTIFY_SMTP_USERNAME")),
        smtp_password=_blank_to_none(env.get("NOTIFY_SMTP_PASSWORD")),
        smtp_tls=tls,
        twilio_account_sid=_blank_to_none(env.get("TWILIO_ACCOUNT_SID")),
        twilio_auth_token=_blank_to_none(env.get("TWILIO_AUTH_TOKEN")),
        sms_from=_blank_to_none(env.get("NOTIFY_SMS_FROM")),
        twilio_api_url=_blank_to_none(env.get("NOTIFY_TWILIO_API_URL")),
        public_url=_blank_to_none(env.get("NOTIFY_PUBLIC_URL")),
        webhook_secret=_blank_to_none(env.get("NOTIFY_WEBHOOK_SECRET")),
    )
