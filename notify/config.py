"""Settings from the environment (docs/contracts.md); a campaign file holds the rest."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from notify.errors import ConfigError

# docs/contracts.md: a claimed batch is leased for at most 30 s without renewal.
LEASE_SECONDS = 30.0

SMTP_TLS_MODES = ("starttls", "tls", "none")

# The reset webhook's HMAC key: shorter keys can be guessed or brute-forced offline from one
# signed request (RFC 2104 asks for at least the hash length, 32 bytes for SHA-256).
MIN_WEBHOOK_SECRET_BYTES = 32

# Fields never shown by repr() (tracebacks, debuggers and logs print dataclasses whole).
SECRET_FIELDS = frozenset({"smtp_password", "twilio_auth_token", "webhook_secret"})


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
    smtp_allow_plaintext: bool = False
    # The outbox was asked for (NOTIFY_OUTBOX set, `--outbox`, or the demo). Never implied: a
    # job that lost its environment must not "notify" everyone into a folder.
    use_outbox: bool = False

    def __repr__(self) -> str:
        """Every field, but secrets as ``***`` and the database URL without its password."""
        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in SECRET_FIELDS and value is not None:
                value = "***"
            elif item.name == "database_url":
                from notify.db import mask_url  # db imports this module

                value = mask_url(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def transport(self, channel: str) -> str:
        """Where ``channel`` goes: ``smtp:HOST``, ``twilio`` or ``outbox``, as recorded on
        each message. A ConfigError naming the variables when nothing is configured."""
        if channel == "email":
            if self.smtp_host:
                return f"smtp:{self.smtp_host}"
            if self.use_outbox:
                return "outbox"
            raise ConfigError(
                "email: no provider configured: set NOTIFY_SMTP_HOST (and "
                "NOTIFY_SMTP_PORT, NOTIFY_SMTP_USERNAME, NOTIFY_SMTP_PASSWORD), "
                "or ask for the outbox folder with --outbox or NOTIFY_OUTBOX"
            )
        if channel == "sms":
            if self.twilio_account_sid and self.twilio_auth_token:
                return "twilio"
            if self.use_outbox:
                return "outbox"
            raise ConfigError(
                "sms: no provider configured: set TWILIO_ACCOUNT_SID and "
                "TWILIO_AUTH_TOKEN, or ask for the outbox folder with --outbox "
                "or NOTIFY_OUTBOX"
            )
        raise ConfigError(f"unknown channel {channel!r}")

    def outbox_only(self) -> Settings:
        """These settings with every channel sent to the outbox folder (``--outbox``)."""
        return replace(
            self, smtp_host=None, twilio_account_sid=None, twilio_auth_token=None, use_outbox=True
        )

    @property
    def status_callback_url(self) -> str | None:
        """The URL Twilio posts status callbacks to, when a public URL is known."""
        if not self.public_url:
            return None
        return self.public_url.rstrip("/") + "/webhooks/twilio/status"


def _blank_to_none(value: str | None) -> str | None:
    return value if value not in (None, "") else None


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses: traffic that never leaves the machine.

    Names other than ``localhost`` are not resolved: what a name resolves to can change
    between this check and the connection.
    """
    if not host:
        return False
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport_security(settings: Settings) -> None:
    """Refuse settings that would send a credential in clear over the network (ConfigError).

    SMTP AUTH over an unencrypted connection (NOTIFY_SMTP_TLS=none with a username) to a
    host other than loopback needs NOTIFY_SMTP_ALLOW_PLAINTEXT=1; NOTIFY_TWILIO_API_URL
    carries the auth token in every request, so it must be https unless it is loopback.
    Checked when settings are loaded, before any command claims or sends anything.
    """
    if (
        settings.smtp_host
        and settings.smtp_tls == "none"
        and settings.smtp_username
        and not settings.smtp_allow_plaintext
        and not is_loopback(settings.smtp_host)
    ):
        raise ConfigError(
            f"NOTIFY_SMTP_TLS=none would send the SMTP password for "
            f"{settings.smtp_username!r} in clear to {settings.smtp_host}: use starttls or "
            "tls, or set NOTIFY_SMTP_ALLOW_PLAINTEXT=1 if the network path is protected"
        )
    if settings.twilio_api_url:
        parts = urlsplit(settings.twilio_api_url)
        try:
            host = parts.hostname
        except ValueError:
            host = None
        if parts.scheme not in ("https", "http") or not host:
            raise ConfigError(
                f"NOTIFY_TWILIO_API_URL: {settings.twilio_api_url!r} is not an http(s) URL"
            )
        if parts.scheme != "https" and not is_loopback(host):
            raise ConfigError(
                f"NOTIFY_TWILIO_API_URL: {parts.scheme}://{host} would send the Twilio auth "
                "token in clear: use https (plain http only to a loopback address)"
            )


def check_webhook_secret(secret: str | None) -> None:
    """Refuse a NOTIFY_WEBHOOK_SECRET too short to resist guessing (ConfigError).

    Unset is allowed (the reset webhook then refuses every request); a set but short key
    would make forged completions feasible.
    """
    if secret is not None and len(secret.encode("utf-8")) < MIN_WEBHOOK_SECRET_BYTES:
        raise ConfigError(
            f"NOTIFY_WEBHOOK_SECRET is {len(secret.encode('utf-8'))} bytes long: use at least "
            f"{MIN_WEBHOOK_SECRET_BYTES} random bytes (e.g. the output of "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`)'
        )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the NOTIFY_* and TWILIO_* variables; a bad value is a ConfigError naming it.

    Settings that would put a credential on the network in clear are refused here
    (:func:`check_transport_security`).
    """
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
        raise ConfigError(f"NOTIFY_SMTP_TLS: {tls!r} is not one of {', '.join(SMTP_TLS_MODES)}")
    plaintext_text = (env.get("NOTIFY_SMTP_ALLOW_PLAINTEXT") or "").strip()
    if plaintext_text not in ("", "0", "1"):
        raise ConfigError(f"NOTIFY_SMTP_ALLOW_PLAINTEXT: {plaintext_text!r} is not 0 or 1")
    settings = Settings(
        database_url=env.get("NOTIFY_DATABASE_URL") or "sqlite:///notify.db",
        outbox=Path(env.get("NOTIFY_OUTBOX") or "outbox"),
        use_outbox=bool(env.get("NOTIFY_OUTBOX")),
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
        smtp_allow_plaintext=plaintext_text == "1",
    )
    check_transport_security(settings)
    return settings
