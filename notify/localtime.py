"""Times on screen in a chosen zone (``--local``, NOTIFY_TIMEZONE); files stay UTC ISO-8601.

Every stored time is UTC (``models.utcnow``) and every file notify writes (CSV exports, JSON)
keeps it so, so that records from machines in different zones compare. Only what a person
reads on a terminal may be shown in their own zone: NOTIFY_TIMEZONE (an IANA name such as
``Europe/Berlin``) when set, else with ``--local`` the machine's zone (TZ, /etc/localtime).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from notify.errors import ConfigError
from notify.times import as_datetime as as_datetime  # re-exported: the CLI reads times here
from notify.times import iso_utc as iso_utc

ENV = "NOTIFY_TIMEZONE"
SCREEN_FORMAT = "%Y-%m-%d %H:%M"


def named_zone(name: str, source: str = ENV) -> tzinfo:
    """The IANA zone ``name`` (``UTC`` too); a ConfigError naming ``source`` otherwise."""
    text = name.strip()
    if text.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"{source}: {name!r} is not a time zone (use an IANA name such as "
            "Europe/Berlin or America/New_York)"
        ) from None


def system_zone(env: Mapping[str, str] | None = None) -> tzinfo:
    """The machine's zone: TZ when it names one, else /etc/localtime, else UTC.

    A ZoneInfo rather than today's fixed offset, so that a time in summer is shown with
    summer time even when the command runs in winter.
    """
    env = os.environ if env is None else env
    tz = (env.get("TZ") or "").lstrip(":").strip()
    if tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass  # a POSIX rule such as "EST5EDT,M3.2.0,M11.1.0": fall through to the file
    localtime = Path("/etc/localtime")
    try:
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
        with localtime.open("rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return UTC


def screen_zone(local: bool = False, env: Mapping[str, str] | None = None) -> tzinfo:
    """The zone times are shown in: NOTIFY_TIMEZONE when set, else the machine's zone with
    ``--local``, else UTC."""
    env = os.environ if env is None else env
    name = (env.get(ENV) or "").strip()
    if name:
        return named_zone(name)
    return system_zone(env) if local else UTC


def show(value: datetime | str | None, zone: tzinfo | None = None, empty: str = "-") -> str:
    """``2026-11-27 11:02 CET``: a time as a person reads it, in ``zone`` (UTC by default)."""
    moment = as_datetime(value)
    if moment is None:
        return empty
    local = moment.astimezone(zone or UTC)
    label = local.tzname() or "UTC"
    return f"{local.strftime(SCREEN_FORMAT)} {label}"
