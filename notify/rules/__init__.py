"""Breach-notification law as data: the jurisdictions file, read and validated.

The facts live in ``jurisdictions.toml`` next to this module (shipped in the wheel), one table
per jurisdiction with its sources, the date it was last checked and a confidence. They are a
starting point, not legal advice (docs/compliance.md). This module turns them into typed,
validated objects and maps a contact's ``country`` and ``state`` to a jurisdiction code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from notify.errors import NotifyError

DATA_FILE = Path(__file__).resolve().parent / "jurisdictions.toml"
CONFIDENCE = ("high", "medium", "low")
NOTICE_FROM = ("discovery", "determination")
REGULATOR_FROM = ("discovery", "determination", "consumer_notice", "year_end")
VARIANTS = ("standard", "US-MA", "US-IL", "US-CA")
UNKNOWN = "unknown"
TOP_KEYS = (
    "name",
    "law",
    "notice",
    "law_enforcement_delay",
    "regulators",
    "cra",
    "content",
    "variant",
    "monitoring",
    "substitute",
    "electronic",
    "credentials",
    "source",
    "last_checked",
    "confidence",
)


class RulesError(NotifyError):
    """The jurisdictions file is incomplete or holds a bad value (names entry and field)."""


@dataclass(frozen=True)
class Regulator:
    """Someone to notify besides the residents: who, from how many residents, by when."""

    name: str
    threshold: int  # residents that trigger it (1 = any)
    wants: str
    days: int | None = None
    hours: int | None = None
    from_: str | None = None  # discovery | determination | consumer_notice | year_end
    business_days: bool = False
    before: bool = False  # before the consumer notice
    below: int | None = None  # only when fewer residents than this (HIPAA annual log)
    per_state: bool = False  # threshold counted in one state (HIPAA media)
    effective: date | None = None


@dataclass(frozen=True)
class Jurisdiction:
    """One jurisdiction's breach-notice rules (see the header of jurisdictions.toml)."""

    code: str
    name: str
    law: str
    notice_standard: str
    notice_days: int | None
    notice_from: str | None
    notice_effective: date | None
    law_enforcement_delay: bool
    regulators: tuple[Regulator, ...]
    cra_threshold: int | None  # None: not required or not determined (cra_note says which)
    cra_known: bool
    cra_note: str
    must_include: tuple[str, ...]
    must_not_include: tuple[str, ...]
    variant: str
    monitoring_months: int
    monitoring_when: str
    substitute: str
    electronic: str
    credentials: str
    credentials_not_to_business_email: bool
    source: str
    last_checked: date
    confidence: str  # as written, e.g. "high (deadline, AG); low (the rest)"

    @property
    def confidence_level(self) -> str:
        """``high``, ``medium`` or ``low``: the first word of the confidence."""
        return self.confidence.split()[0]


def _need(
    code: str, table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = ""
) -> Any:
    if key not in table:
        raise RulesError(f"{DATA_FILE.name}: [{code}] {where}{key}: missing")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RulesError(f"{DATA_FILE.name}: [{code}] {where}{key}: {value!r} has the wrong type")
    return value


def _regulator(code: str, i: int, raw: dict[str, Any]) -> Regulator:
    where = f"regulators[{i}]."
    known = {
        "name",
        "threshold",
        "wants",
        "days",
        "hours",
        "from",
        "business_days",
        "before",
        "below",
        "per_state",
        "effective",
    }
    for key in raw:
        if key not in known:
            raise RulesError(f"{DATA_FILE.name}: [{code}] {where}{key}: unknown field")
    reg = Regulator(
        name=_need(code, raw, "name", str, where),
        threshold=_need(code, raw, "threshold", int, where),
        wants=_need(code, raw, "wants", str, where),
        days=raw.get("days"),
        hours=raw.get("hours"),
        from_=raw.get("from"),
        business_days=bool(raw.get("business_days", False)),
        before=bool(raw.get("before", False)),
        below=raw.get("below"),
        per_state=bool(raw.get("per_state", False)),
        effective=raw.get("effective"),
    )
    if (reg.days is not None or reg.hours is not None) and reg.from_ not in REGULATOR_FROM:
        raise RulesError(
            f"{DATA_FILE.name}: [{code}] {where}from: {reg.from_!r} must be one of "
            + ", ".join(REGULATOR_FROM)
        )
    if reg.effective is not None and not isinstance(reg.effective, date):
        raise RulesError(f"{DATA_FILE.name}: [{code}] {where}effective: not a date")
    return reg


def _jurisdiction(code: str, raw: dict[str, Any]) -> Jurisdiction:
    for key in raw:
        if key not in TOP_KEYS and key != "credentials_not_to_business_email":
            raise RulesError(f"{DATA_FILE.name}: [{code}] {key}: unknown field")
    notice = _need(code, raw, "notice", dict)
    standard = _need(code, notice, "standard", str, "notice.")
    days = notice.get("days")
    if days is not None and notice.get("from") not in NOTICE_FROM:
        raise RulesError(
            f"{DATA_FILE.name}: [{code}] notice.from: {notice.get('from')!r} must "
            "be " + " or ".join(NOTICE_FROM)
        )
    effective = notice.get("effective")
    if effective is not None and not isinstance(effective, date):
        raise RulesError(f"{DATA_FILE.name}: [{code}] notice.effective: not a date")
    regulators = tuple(
        _regulator(code, i, r) for i, r in enumerate(_need(code, raw, "regulators", list))
    )
    cra = _need(code, raw, "cra", dict)
    note = _need(code, cra, "note", str, "cra.")
    threshold = cra.get("threshold")
    known = not cra.get("unknown", False)
    if threshold is None and known and cra.get("required") is not False:
        raise RulesError(
            f"{DATA_FILE.name}: [{code}] cra: needs threshold, required = false or unknown = true"
        )
    content = _need(code, raw, "content", dict)
    monitoring = _need(code, raw, "monitoring", dict)
    variant = _need(code, raw, "variant", str)
    if variant not in VARIANTS:
        raise RulesError(
            f"{DATA_FILE.name}: [{code}] variant: {variant!r} must be one of " + ", ".join(VARIANTS)
        )
    confidence = _need(code, raw, "confidence", str)
    if not confidence or confidence.split()[0] not in CONFIDENCE:
        raise RulesError(
            f"{DATA_FILE.name}: [{code}] confidence: {confidence!r} must start "
            "with high, medium or low"
        )
    last_checked = _need(code, raw, "last_checked", date)
    return Jurisdiction(
        code=code,
        name=_need(code, raw, "name", str),
        law=_need(code, raw, "law", str),
        notice_standard=standard,
        notice_days=days,
        notice_from=notice.get("from"),
        notice_effective=effective,
        law_enforcement_delay=_need(code, raw, "law_enforcement_delay", bool),
        regulators=regulators,
        cra_threshold=threshold,
        cra_known=known,
        cra_note=note,
        must_include=tuple(_need(code, content, "must_include", list, "content.")),
        must_not_include=tuple(_need(code, content, "must_not_include", list, "content.")),
        variant=variant,
        monitoring_months=_need(code, monitoring, "months", int, "monitoring."),
        monitoring_when=_need(code, monitoring, "when", str, "monitoring."),
        substitute=_need(code, raw, "substitute", str),
        electronic=_need(code, raw, "electronic", str),
        credentials=_need(code, raw, "credentials", str),
        credentials_not_to_business_email=bool(raw.get("credentials_not_to_business_email")),
        source=_need(code, raw, "source", str),
        last_checked=last_checked,
        confidence=confidence,
    )


def parse_rules(text: str) -> dict[str, Jurisdiction]:
    """Validate a jurisdictions file's text; any gap is a RulesError naming entry and field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{DATA_FILE.name}: not valid TOML: {exc}") from None
    return {code: _jurisdiction(code, table) for code, table in raw.items()}


@lru_cache(maxsize=1)
def load_rules() -> dict[str, Jurisdiction]:
    """Every jurisdiction of the shipped data file, by code (read once per process)."""
    return parse_rules(DATA_FILE.read_text(encoding="utf-8"))


def get(code: str) -> Jurisdiction | None:
    """The rules of one jurisdiction code, or None (e.g. for ``unknown``)."""
    return load_rules().get(code)


# --- where a contact lives -----------------------------------------------------------------

US_STATES = {
    "AL": "Alabama",
    "AK": "Alaska",
    "AZ": "Arizona",
    "AR": "Arkansas",
    "CA": "California",
    "CO": "Colorado",
    "CT": "Connecticut",
    "DE": "Delaware",
    "DC": "District of Columbia",
    "FL": "Florida",
    "GA": "Georgia",
    "HI": "Hawaii",
    "ID": "Idaho",
    "IL": "Illinois",
    "IN": "Indiana",
    "IA": "Iowa",
    "KS": "Kansas",
    "KY": "Kentucky",
    "LA": "Louisiana",
    "ME": "Maine",
    "MD": "Maryland",
    "MA": "Massachusetts",
    "MI": "Michigan",
    "MN": "Minnesota",
    "MS": "Mississippi",
    "MO": "Missouri",
    "MT": "Montana",
    "NE": "Nebraska",
    "NV": "Nevada",
    "NH": "New Hampshire",
    "NJ": "New Jersey",
    "NM": "New Mexico",
    "NY": "New York",
    "NC": "North Carolina",
    "ND": "North Dakota",
    "OH": "Ohio",
    "OK": "Oklahoma",
    "OR": "Oregon",
    "PA": "Pennsylvania",
    "RI": "Rhode Island",
    "SC": "South Carolina",
    "SD": "South Dakota",
    "TN": "Tennessee",
    "TX": "Texas",
    "UT": "Utah",
    "VT": "Vermont",
    "VA": "Virginia",
    "WA": "Washington",
    "WV": "West Virginia",
    "WI": "Wisconsin",
    "WY": "Wyoming",
    "PR": "Puerto Rico",
}
EU_MEMBERS = {
    "AT": "Austria",
    "BE": "Belgium",
    "BG": "Bulgaria",
    "HR": "Croatia",
    "CY": "Cyprus",
    "CZ": "Czechia",
    "DK": "Denmark",
    "EE": "Estonia",
    "FI": "Finland",
    "FR": "France",
    "DE": "Germany",
    "GR": "Greece",
    "HU": "Hungary",
    "IE": "Ireland",
    "IT": "Italy",
    "LV": "Latvia",
    "LT": "Lithuania",
    "LU": "Luxembourg",
    "MT": "Malta",
    "NL": "Netherlands",
    "PL": "Poland",
    "PT": "Portugal",
    "RO": "Romania",
    "SK": "Slovakia",
    "SI": "Slovenia",
    "ES": "Spain",
    "SE": "Sweden",
}
_COUNTRY_ALIASES = {
    "US": "US",
    "USA": "US",
    "UNITEDSTATES": "US",
    "UNITEDSTATESOFAMERICA": "US",
    "AMERICA": "US",
    "GB": "GB",
    "UK": "GB",
    "UNITEDKINGDOM": "GB",
    "GREATBRITAIN": "GB",
    "ENGLAND": "GB",
    "SCOTLAND": "GB",
    "WALES": "GB",
    "NORTHERNIRELAND": "GB",
    "CA": "CA",
    "CAN": "CA",
    "CANADA": "CA",
    "AU": "AU",
    "AUS": "AU",
    "AUSTRALIA": "AU",
    "PR": "PR",
    "PUERTORICO": "PR",
    "EL": "GR",
    "CZECHREPUBLIC": "CZ",
    "HOLLAND": "NL",
    "DEUTSCHLAND": "DE",
    "ESPANA": "ES",
    "ITALIA": "IT",
}
_COUNTRY_ALIASES.update({name.upper().replace(" ", ""): iso for iso, name in EU_MEMBERS.items()})
_COUNTRY_ALIASES.update({iso: iso for iso in EU_MEMBERS})
_STATE_ALIASES = {name.upper().replace(" ", ""): abbr for abbr, name in US_STATES.items()}
_STATE_ALIASES.update({abbr: abbr for abbr in US_STATES})
_STATE_ALIASES.update(
    {"WASHINGTONDC": "DC", "DISTRICTOFCOLUMBIA": "DC", "CALIF": "CA", "MASS": "MA"}
)


def _squash(value: str | None) -> str:
    return "".join(ch for ch in (value or "").upper() if ch.isalnum())


@lru_cache(maxsize=4096)  # called for every notice rendered: the same few pairs recur
def residence(country: str | None, state: str | None) -> str:
    """The jurisdiction code of a contact: ``US-CA``, ``EU``, ``GB``, ``CA`` (Canada), ``AU``,
    or ``unknown`` when neither field says (a US contact without a state is unknown too:
    US law is by state). A state with no country is read as a US state."""
    return _residence(_squash(country), _squash(state))


@lru_cache(maxsize=4096)
def _residence(country: str, state: str) -> str:
    iso = _COUNTRY_ALIASES.get(country) if country else None
    if country and iso is None:
        # A country the data does not cover: reported under its own code, with no rules.
        return country if len(country) == 2 else UNKNOWN
    if iso == "PR":
        return "US-PR"
    if iso in (None, "US"):
        if state.startswith("US") and state[2:] in US_STATES:  # "US-CA" written as a state
            state = state[2:]
        abbr = _STATE_ALIASES.get(state)
        return f"US-{abbr}" if abbr else UNKNOWN
    if iso in EU_MEMBERS:
        return "EU"
    return iso if iso in ("GB", "CA", "AU") else UNKNOWN
