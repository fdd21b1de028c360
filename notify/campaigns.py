"""Campaign files (TOML): parse, validate every key and value, store by name."""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from notify import template_versions
from notify.errors import ConfigError, NotFound
from notify.models import CHANNELS, Campaign
from notify.verp import MAX_BASE_LOCAL


@dataclass(frozen=True)
class ThrottleConfig:
    """Per-channel rates (messages per second, global), concurrency and retry cap."""

    email_per_second: float = 20.0
    sms_per_second: float = 1.0
    concurrency: int = 10
    max_attempts: int = 5


@dataclass(frozen=True)
class Prices:
    """What one message costs, for `notify plan` (0: not known)."""

    email: float = 0.0
    sms_segment: float = 0.0
    currency: str = "USD"


MONITORING_KEYS = ("provider", "months", "enroll_url")


@dataclass(frozen=True)
class CampaignConfig:
    """Every field of a campaign file, validated; templates see them as ``campaign.*``."""

    name: str
    organization: str
    sender_email: str
    sender_name: str = ""
    reply_to: str = ""
    sms_from: str = ""
    incident_date: str = ""
    discovered_date: str = ""
    description: str = ""
    support_phone: str = ""
    support_email: str = ""
    support_url: str = ""
    reset_url: str = ""
    reset_token_ttl_days: int = 14
    channels: tuple[str, ...] = ("email", "sms")
    fallback: str = "none"
    templates: str | None = None
    # Where bounces go: each email's envelope sender becomes local+TAG@domain (notify.verp).
    bounce_address: str = ""
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    # Breach-law facts (notify.rules): all optional.
    determined_date: str = ""  # when the breach was determined (some deadlines count from it)
    law_enforcement_delay_until: str = ""  # a law-enforcement delay of the notice ends then
    regimes: tuple[str, ...] = ()  # sector regimes that apply, e.g. ("hipaa",)
    credit_monitoring: dict[str, Any] | None = None  # {provider, months, enroll_url}
    business_email_domains: tuple[str, ...] = ()  # email domains the business furnishes
    prices: Prices = field(default_factory=Prices)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for storage and template context."""
        data = asdict(self)
        data["channels"] = list(self.channels)
        data["regimes"] = list(self.regimes)
        data["business_email_domains"] = list(self.business_email_domains)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CampaignConfig:
        """Inverse of :meth:`as_dict` (stored settings are already validated)."""
        data = dict(data)
        data["throttle"] = ThrottleConfig(**data.get("throttle", {}))
        data["channels"] = tuple(data.get("channels", ()))
        data["regimes"] = tuple(data.get("regimes", ()))
        data["business_email_domains"] = tuple(data.get("business_email_domains", ()))
        data["prices"] = Prices(**data.get("prices", {}))
        return cls(**data)

    @property
    def sender_domain(self) -> str:
        """Domain of the sender address, used in deterministic Message-IDs."""
        return self.sender_email.rsplit("@", 1)[-1]


_REQUIRED = ("name", "organization", "sender_email")
_DATE_KEYS = ("incident_date", "discovered_date", "determined_date", "law_enforcement_delay_until")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")
_SID_RE = re.compile(r"^MG[0-9a-fA-F]{32}$")


def _fail(path: Path, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {problem}")


def _check_email(path: Path, key: str, value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise _fail(path, key, f"{value!r} is not an email address ({exc})") from None


def _check_bounce_address(path: Path, value: str) -> str:
    """An ASCII address whose local part leaves room for the VERP tag (+ID-MAC)."""
    address = _check_email(path, "bounce_address", value)
    local, _, domain = address.rpartition("@")
    if not address.isascii():
        raise _fail(
            path,
            "bounce_address",
            f"{value!r} must be an ASCII address (it is the SMTP envelope sender)",
        )
    if len(local) > MAX_BASE_LOCAL:
        raise _fail(
            path,
            "bounce_address",
            f"{value!r}: the part before @ must be at most "
            f"{MAX_BASE_LOCAL} characters, to leave room for the tag (+ID-MAC)",
        )
    return f"{local}@{domain.lower()}"


def _check_types(path: Path, raw: dict[str, Any]) -> None:
    known = {f.name: f for f in fields(CampaignConfig)}
    for key, value in raw.items():
        if key not in known:
            raise _fail(path, key, "unknown key (known: " + ", ".join(sorted(known)) + ")")
        if key == "throttle":
            if not isinstance(value, dict):
                raise _fail(path, key, "must be a table [throttle]")
            tknown = {f.name for f in fields(ThrottleConfig)}
            for tkey in value:
                if tkey not in tknown:
                    raise _fail(
                        path,
                        f"throttle.{tkey}",
                        "unknown key (known: " + ", ".join(sorted(tknown)) + ")",
                    )
        elif key in ("channels", "regimes", "business_email_domains"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _fail(path, key, "must be a list of strings")
        elif key in ("credit_monitoring", "prices"):
            if not isinstance(value, dict):
                raise _fail(path, key, f"must be a table [{key}]")
            sub = (
                MONITORING_KEYS
                if key == "credit_monitoring"
                else tuple(f.name for f in fields(Prices))
            )
            for skey in value:
                if skey not in sub:
                    raise _fail(
                        path, f"{key}.{skey}", "unknown key (known: " + ", ".join(sorted(sub)) + ")"
                    )
        elif key == "reset_token_ttl_days":
            if not isinstance(value, int) or isinstance(value, bool):
                raise _fail(path, key, f"{value!r} must be a whole number of days")
        elif not isinstance(value, str) and not (key in _DATE_KEYS and isinstance(value, date)):
            raise _fail(path, key, f"{value!r} must be a string")


def _positive(path: Path, key: str, value: Any, kind: type) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        noun = "a positive whole number" if kind is int else "a positive number"
        raise _fail(path, f"throttle.{key}", f"{value!r} must be {noun}")
    return kind(value)


def _validate(path: Path, raw: dict[str, Any]) -> CampaignConfig:
    _check_types(path, raw)
    for key in _REQUIRED:
        if not str(raw.get(key, "")).strip():
            raise _fail(path, key, "is required")
    data = dict(raw)
    if not _NAME_RE.match(data["name"]):
        raise _fail(path, "name", f"{data['name']!r} must be letters, digits, '.', '_' or '-'")
    data["sender_email"] = _check_email(path, "sender_email", data["sender_email"])
    for key in ("reply_to", "support_email"):
        if data.get(key):
            data[key] = _check_email(path, key, data[key])
    if data.get("bounce_address"):
        data["bounce_address"] = _check_bounce_address(path, data["bounce_address"])
    for key in _DATE_KEYS:
        if key in data:
            value = data[key]
            try:
                if isinstance(value, datetime):  # a TOML date-time: the day is what counts
                    value = value.date()
                parsed = value if isinstance(value, date) else date.fromisoformat(value)
                data[key] = parsed.isoformat()
            except ValueError:
                raise _fail(path, key, f"{value!r} is not a date (YYYY-MM-DD)") from None
    sms_from = data.get("sms_from", "")
    if sms_from and not (_E164_RE.match(sms_from) or _SID_RE.match(sms_from)):
        raise _fail(
            path,
            "sms_from",
            f"{sms_from!r} is not an E.164 number or a Messaging Service SID (MG...)",
        )
    reset_url = data.get("reset_url", "")
    if reset_url and (not re.match(r"^https?://", reset_url) or "{token}" not in reset_url):
        raise _fail(path, "reset_url", f"{reset_url!r} must be an http(s) URL containing {{token}}")
    if data.get("reset_token_ttl_days", 14) < 1:
        raise _fail(path, "reset_token_ttl_days", "must be at least 1")
    channels = data.get("channels", ["email", "sms"])
    bad = [c for c in channels if c not in CHANNELS]
    if bad or not channels:
        raise _fail(
            path,
            "channels",
            f"{channels!r} must be a non-empty list of " + " and ".join(repr(c) for c in CHANNELS),
        )
    data["channels"] = tuple(dict.fromkeys(channels))
    if data.get("fallback", "none") not in ("sms", "none"):
        raise _fail(path, "fallback", f'{data["fallback"]!r} must be "sms" or "none"')
    throttle = dict(data.get("throttle", {}))
    for key in ("email_per_second", "sms_per_second"):
        if key in throttle:
            throttle[key] = _positive(path, key, throttle[key], float)
    for key in ("concurrency", "max_attempts"):
        if key in throttle:
            throttle[key] = _positive(path, key, throttle[key], int)
    data["throttle"] = ThrottleConfig(**throttle)
    if data.get("templates"):  # within the campaign file's folder, and a folder
        template_versions.override_folder(path, data["templates"])
    _validate_law_facts(path, data)
    return CampaignConfig(**data)


def _validate_law_facts(path: Path, data: dict[str, Any]) -> None:
    """The optional breach-law keys: regimes, credit_monitoring, business domains, prices."""
    known_regimes = ("hipaa",)
    regimes = [r.strip().lower() for r in data.get("regimes", [])]
    bad = [r for r in regimes if r not in known_regimes]
    if bad:
        raise _fail(
            path,
            "regimes",
            f"{bad[0]!r} is not a known regime (known: " + ", ".join(known_regimes) + ")",
        )
    data["regimes"] = tuple(dict.fromkeys(regimes))
    if "credit_monitoring" in data:
        offer = dict(data["credit_monitoring"])
        for key in MONITORING_KEYS:
            if key not in offer:
                raise _fail(path, f"credit_monitoring.{key}", "is required")
        months = offer["months"]
        if not isinstance(months, int) or isinstance(months, bool) or months < 1:
            raise _fail(
                path,
                "credit_monitoring.months",
                f"{months!r} must be a positive whole number of months",
            )
        for key in ("provider", "enroll_url"):
            if not isinstance(offer[key], str) or not offer[key].strip():
                raise _fail(
                    path, f"credit_monitoring.{key}", f"{offer[key]!r} must be a non-empty string"
                )
        if not re.match(r"^https?://", offer["enroll_url"]):
            raise _fail(
                path,
                "credit_monitoring.enroll_url",
                f"{offer['enroll_url']!r} must be an http(s) URL",
            )
        data["credit_monitoring"] = offer
    domains = []
    for domain in data.get("business_email_domains", []):
        cleaned = domain.strip().lower().lstrip("@")
        if not re.match(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$", cleaned):
            raise _fail(path, "business_email_domains", f"{domain!r} is not a domain")
        domains.append(cleaned)
    data["business_email_domains"] = tuple(dict.fromkeys(domains))
    prices = dict(data.get("prices", {}))
    for key in ("email", "sms_segment"):
        value = prices.get(key, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise _fail(path, f"prices.{key}", f"{value!r} must be a number, 0 or more")
        prices[key] = float(value)
    if not isinstance(prices.get("currency", "USD"), str):
        raise _fail(path, "prices.currency", 'must be a string such as "USD"')
    data["prices"] = Prices(**prices)


def parse_campaign_file(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign file; any problem is one ConfigError naming the key."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a campaign file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _validate(path, raw)


@dataclass(frozen=True)
class Loaded:
    """What ``campaign load`` did: the campaign, and the template version it now uses."""

    campaign: Campaign
    created: bool
    template_version: str  # sha256 of the stored set
    templates_changed: bool  # a new version for this campaign (always True when created)
    warnings: list[str]  # template parts overridden without their counterpart


def load(session: Session, path: str | Path) -> Loaded:
    """Create or update the campaign the file names, and store its notices as a version.

    The override folder and the defaults are read once, here (realpath-checked, see
    notify.template_versions); sending renders from the stored version, so changing the
    notices means loading again, and messages already sent keep the version they had.
    """
    path = Path(path)
    config = parse_campaign_file(path)
    tset = template_versions.read_for_campaign(path, config.templates)
    version = template_versions.store(session, tset)
    campaign = session.scalar(select(Campaign).where(Campaign.name == config.name))
    created = campaign is None
    if campaign is None:
        campaign = Campaign(name=config.name)
        session.add(campaign)
    before = campaign.template_version_id
    campaign.settings = config.as_dict()
    campaign.templates_dir = (
        str(template_versions.override_folder(path, config.templates)) if config.templates else None
    )
    campaign.template_version_id = version.id
    campaign.source_path = str(path.resolve())
    session.flush()
    return Loaded(
        campaign,
        created,
        version.sha256,
        before != version.id,
        template_versions.counterpart_warnings(tset),
    )


def load_campaign(session: Session, path: str | Path) -> tuple[Campaign, bool]:
    """Create or update the campaign the file names; returns (campaign, created)."""
    loaded = load(session, path)
    return loaded.campaign, loaded.created


def get_campaign(session: Session, name: str) -> Campaign:
    """The campaign called ``name``, or NotFound with a hint."""
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        raise NotFound(f"unknown campaign {name!r} (load it with: notify campaign load FILE)")
    return campaign


def config_of(campaign: Campaign) -> CampaignConfig:
    """The validated configuration stored with a campaign."""
    return CampaignConfig.from_dict(campaign.settings)


def list_campaigns(session: Session) -> list[Campaign]:
    """All campaigns, oldest first."""
    return list(session.scalars(select(Campaign).order_by(Campaign.id)))
