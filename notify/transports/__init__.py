"""Messengers: how a rendered message reaches a provider (see docs/architecture.md).

``make_messenger`` picks the transport from the settings (``Settings.transport``): SMTP when
``NOTIFY_SMTP_HOST`` is set; Twilio when ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN`` are
set; else the outbox folder, but only when it was asked for (NOTIFY_OUTBOX, ``--outbox``).
"""

from __future__ import annotations

from typing import Any

from notify.campaigns import CampaignConfig
from notify.config import Settings
from notify.transports.base import (
    Found,
    HeldBack,
    Messenger,
    Outgoing,
    ProviderDown,
    Result,
    TransportConfigError,
    TransportError,
    parse_retry_after,
)

__all__ = [
    "Found",
    "HeldBack",
    "Messenger",
    "Outgoing",
    "ProviderDown",
    "Result",
    "TransportConfigError",
    "TransportError",
    "make_messenger",
    "parse_retry_after",
]


def make_messenger(
    channel: str,
    settings: Settings,
    config: CampaignConfig,
    concurrency: int,
    timeout: float | None = None,
) -> Messenger:
    """The messenger for ``channel`` ("email" or "sms") under these settings.

    The default sender is the campaign's ``sender_email`` for email, and ``NOTIFY_SMS_FROM``
    (else the campaign's ``sms_from``) for SMS; ``Outgoing.sender`` overrides it per item.
    ``timeout`` bounds every network step (None: the transport's default, 30 s).
    """
    settings.transport(channel)  # the outbox only when asked for: else one-line error
    limits: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if channel == "email":
        if settings.smtp_host:
            from notify.transports.smtp import SmtpMessenger

            return SmtpMessenger(
                settings, concurrency, default_sender=config.sender_email, **limits
            )
        from notify.transports.outbox import OutboxEmail

        return OutboxEmail(settings.outbox)
    if channel == "sms":
        sender = settings.sms_from or config.sms_from or None
        if settings.twilio_account_sid and settings.twilio_auth_token:
            from notify.transports.twilio_sms import TwilioMessenger

            return TwilioMessenger(settings, concurrency, default_sender=sender, **limits)
        from notify.transports.outbox import OutboxSms

        return OutboxSms(settings.outbox, sender)
    raise ValueError(f"unknown channel {channel!r}")
