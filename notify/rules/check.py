"""`notify rules check`: the campaign's contacts against the law of where they live.

Per jurisdiction: residents affected, the individual-notice deadline and days left, each
regulator (and the consumer reporting agencies) with whether its threshold is met and when it
is due, the months of credit monitoring required, the notice variant, and problems. A
problem is something to fix before it is too late: a deadline passed with residents not yet
reached, monitoring required but not offered, a rendered notice the law forbids. The clock
(``as_of``) is a parameter, so the report is the same whatever day the tests run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.orm import Session

from notify import exposures as kinds_mod
from notify import rules as rules_mod
from notify.campaigns import CampaignConfig, config_of, get_campaign
from notify.models import Campaign, Contact, ContactReach, Message
from notify.rules import UNKNOWN, Jurisdiction, Regulator
from notify.rules.variants import variant_name, verify_notices

CRA_NAME = "Consumer reporting agencies (Equifax, Experian, TransUnion)"


@dataclass
class RegulatorDue:
    """One regulator notice: required by its threshold or not, and when it is due."""

    name: str
    required: bool
    due: date | None
    wants: str = ""
    before_consumer_notice: bool = False


@dataclass
class Residents:
    """Contacts of one jurisdiction, counted."""

    total: int = 0
    notified: int = 0  # a notice was handed over to a provider for them
    reached: int = 0  # a message reached them (sent or delivered)
    combos: dict[tuple[str, ...], int] = field(default_factory=dict)  # exposures -> contacts
    first_notice: date | None = None  # when the first of them was sent a notice
    by_state: dict[str, int] = field(default_factory=dict)  # for HIPAA's per-state media rule

    @property
    def identity(self) -> int:
        return sum(n for kinds, n in self.combos.items() if "identity" in kinds)

    @property
    def unreached(self) -> int:
        return self.total - self.reached


@dataclass
class JurisdictionCheck:
    """The rules check of one jurisdiction."""

    code: str
    name: str
    residents: Residents
    notice_deadline: date | None
    days_left: int | None
    regulators: list[RegulatorDue]
    monitoring_months_required: int
    monitoring_months_offered: int
    variant: str
    problems: list[str]
    notes: list[str]
    rules: Jurisdiction | None
    templates_ok: bool = True  # the campaign's notices meet the variant's content rules

    def as_json(self) -> dict[str, Any]:
        """The contract shape of one jurisdiction (docs/contracts.md, "Law as data")."""
        return {
            "code": self.code,
            "residents": self.residents.total,
            "notice_deadline": self.notice_deadline.isoformat() if self.notice_deadline else None,
            "days_left": self.days_left,
            "regulators": [
                {
                    "name": r.name,
                    "required": r.required,
                    "due": r.due.isoformat() if r.due else None,
                }
                for r in self.regulators
            ],
            "monitoring_months_required": self.monitoring_months_required,
            "variant": self.variant,
            "problems": self.problems,
        }


@dataclass
class RulesReport:
    """Every jurisdiction the campaign's contacts live in."""

    campaign: str
    as_of: date
    jurisdictions: list[JurisdictionCheck]

    @property
    def failed(self) -> bool:
        """True when anything must be fixed (``notify rules check`` exits 1)."""
        return any(j.problems for j in self.jurisdictions)

    def as_json(self) -> dict[str, Any]:
        """``{"campaign", "as_of", "jurisdictions": [...]}``."""
        return {
            "campaign": self.campaign,
            "as_of": self.as_of.isoformat(),
            "jurisdictions": [j.as_json() for j in self.jurisdictions],
        }


# --- dates ----------------------------------------------------------------------------------


def _date(value: str) -> date | None:
    return date.fromisoformat(value) if value else None


def add_business_days(start: date, days: int) -> date:
    """``days`` working days (Monday to Friday) after ``start``; public holidays not counted."""
    day = start
    while days > 0:
        day += timedelta(days=1)
        if day.weekday() < 5:
            days -= 1
    return day


def _base(config: CampaignConfig, counted_from: str | None) -> tuple[date | None, str | None]:
    """The date a deadline counts from, and a note when a fallback was used."""
    discovered = _date(config.discovered_date)
    if counted_from == "determination":
        determined = _date(config.determined_date)
        if determined:
            return determined, None
        if discovered:
            return discovered, (
                "determined_date is not set: the deadline counts from "
                "discovered_date (the earliest it can be)"
            )
    return discovered, None


def notice_deadline(rules: Jurisdiction, config: CampaignConfig) -> tuple[date | None, list[str]]:
    """The individual-notice deadline as a date (None: no fixed number of days), and notes.

    Counted from discovery or determination as the jurisdiction says; a law-enforcement
    delay moves it to the end of the delay when that is later (where the law allows one).
    Days that took effect on a date (California's 30 days from 2026) apply to breaches
    discovered on or after it.
    """
    notes: list[str] = []
    if rules.notice_days is None:
        return None, notes
    base, note = _base(config, rules.notice_from)
    if base is None:
        return None, ["discovered_date is not set: the deadline cannot be computed"]
    if note:
        notes.append(note)
    discovered = _date(config.discovered_date) or base
    if rules.notice_effective and discovered < rules.notice_effective:
        notes.append(
            f"the {rules.notice_days}-day deadline applies to breaches discovered from "
            f"{rules.notice_effective.isoformat()}; before: {rules.notice_standard}"
        )
        return None, notes
    deadline = base + timedelta(days=rules.notice_days)
    delay = _date(config.law_enforcement_delay_until)
    if delay and rules.law_enforcement_delay and delay > deadline:
        notes.append(f"law-enforcement delay until {delay.isoformat()}")
        deadline = delay
    return deadline, notes


def regulator_due(
    reg: Regulator, config: CampaignConfig, deadline: date | None, first_notice: date | None
) -> date | None:
    """When a regulator notice is due (None: no fixed time, e.g. "as soon as practicable").

    Relative to the consumer notice: the day the first resident was sent one, else the notice
    deadline (the latest the consumer notice may go).
    """
    if reg.days is None and reg.hours is None:
        return None
    if reg.from_ == "consumer_notice":
        base = first_notice or deadline
    elif reg.from_ == "year_end":
        discovered = _date(config.discovered_date)
        base = date(discovered.year, 12, 31) if discovered else None
    else:
        base, _ = _base(config, reg.from_)
    if base is None:
        return None
    if reg.hours is not None:
        return base + timedelta(days=-(-reg.hours // 24))
    if reg.business_days:
        return add_business_days(base, reg.days or 0)
    return base + timedelta(days=reg.days or 0)


def _regulators(
    rules: Jurisdiction, config: CampaignConfig, residents: Residents, deadline: date | None
) -> tuple[list[RegulatorDue], list[str]]:
    dues: list[RegulatorDue] = []
    notes: list[str] = []
    discovered = _date(config.discovered_date)
    for reg in rules.regulators:
        count = max(residents.by_state.values(), default=0) if reg.per_state else residents.total
        required = count >= reg.threshold and (reg.below is None or count < reg.below)
        if reg.effective and discovered and discovered < reg.effective:
            required = False
            notes.append(f"{reg.name}: applies to breaches from {reg.effective.isoformat()}")
        dues.append(
            RegulatorDue(
                reg.name,
                required,
                regulator_due(reg, config, deadline, residents.first_notice),
                reg.wants,
                reg.before,
            )
        )
    if rules.cra_threshold is not None:
        dues.append(
            RegulatorDue(CRA_NAME, residents.total >= rules.cra_threshold, None, rules.cra_note)
        )
    elif not rules.cra_known:
        notes.append(f"consumer reporting agencies: threshold not determined ({rules.cra_note})")
    return dues, notes


# --- the campaign's residents ----------------------------------------------------------------


def residents_by_jurisdiction(
    session: Session, campaign: Campaign, config: CampaignConfig | None = None
) -> dict[str, Residents]:
    """Contacts counted by jurisdiction code (``unknown`` for no usable country or state),
    plus ``US-HIPAA`` for every contact when the campaign's regimes include HIPAA.

    One grouped query: the number of distinct (country, state, exposures) is small whatever
    the number of contacts.
    """
    config = config or config_of(campaign)
    notified = exists().where(and_(Message.contact_id == Contact.id, Message.sent_at.is_not(None)))
    rows = session.execute(
        select(
            Contact.country,
            Contact.state,
            Contact.exposures,
            func.count(),
            func.sum(case((notified, 1), else_=0)),
            func.sum(case((ContactReach.reached_n > 0, 1), else_=0)),
        )
        .outerjoin(ContactReach, ContactReach.contact_id == Contact.id)
        .where(Contact.campaign_id == campaign.id)
        .group_by(Contact.country, Contact.state, Contact.exposures)
    )
    found: dict[str, Residents] = defaultdict(Residents)
    hipaa = "hipaa" in config.regimes
    for country, state, exposures, total, sent, reached in rows:
        code = rules_mod.residence(country, state)
        kinds = tuple(kinds_mod.split(exposures))
        targets = [code, "US-HIPAA"] if hipaa else [code]
        for target in targets:
            res = found[target]
            res.total += total
            res.notified += int(sent or 0)
            res.reached += int(reached or 0)
            res.combos[kinds] = res.combos.get(kinds, 0) + total
            if target == "US-HIPAA" and code.startswith("US-"):
                res.by_state[code] = res.by_state.get(code, 0) + total
    firsts = session.execute(
        select(Contact.country, Contact.state, func.min(Message.sent_at))
        .join(Message, Message.contact_id == Contact.id)
        .where(
            Contact.campaign_id == campaign.id,
            Message.notice == "notice",
            Message.sent_at.is_not(None),
        )
        .group_by(Contact.country, Contact.state)
    )
    for country, state, first in firsts:
        code = rules_mod.residence(country, state)
        for target in [code, "US-HIPAA"] if hipaa else [code]:
            if target in found and first is not None:
                day = first.date()
                res = found[target]
                res.first_notice = min(res.first_notice or day, day)
    return dict(found)


def variant_problems(session: Session, campaign: Campaign, notices) -> list[str]:
    """What ``templates check --campaign`` adds: every notice variant the campaign's contacts
    need (jurisdiction x exposures), rendered and checked against its content rules."""
    residents = residents_by_jurisdiction(session, campaign)
    needs = {
        code: set(res.combos)
        for code, res in residents.items()
        if rules_mod.get(code) is not None and code != "US-HIPAA"
    }
    found = verify_notices(notices, needs)
    return [problem for code in sorted(found) for problem in found[code]]


def _order(code: str) -> tuple[int, str]:
    return (2 if code == UNKNOWN else 1 if code not in rules_mod.load_rules() else 0, code)


def check_campaign(
    session: Session, name: str, as_of: date, *, verify_templates: bool = True
) -> RulesReport:
    """The rules check of campaign ``name`` on day ``as_of`` (see the module docstring)."""
    campaign = get_campaign(session, name)
    config = config_of(campaign)
    residents = residents_by_jurisdiction(session, campaign, config)
    offered = int((config.credit_monitoring or {}).get("months") or 0)
    template_problems: dict[str, list[str]] = {}
    if verify_templates:
        from notify.templates import notices_for

        needs = {
            code: set(res.combos)
            for code, res in residents.items()
            if rules_mod.get(code) is not None and code != "US-HIPAA"
        }
        template_problems = verify_notices(notices_for(session, campaign), needs)
    checks: list[JurisdictionCheck] = []
    for code in sorted(residents, key=_order):
        res = residents[code]
        rules = rules_mod.get(code)
        if rules is None:
            why = (
                "no country or state"
                if code == UNKNOWN
                else f"country {code!r} is not in the rules data"
            )
            checks.append(
                JurisdictionCheck(
                    code,
                    "",
                    res,
                    None,
                    None,
                    [],
                    0,
                    0,
                    "standard",
                    [],
                    [f"{res.total:,} contact(s) with {why}: which law applies cannot be told"],
                    None,
                )
            )
            continue
        deadline, notes = notice_deadline(rules, config)
        regulators, reg_notes = _regulators(rules, config, res, deadline)
        notes += reg_notes
        problems: list[str] = []
        days_left = (deadline - as_of).days if deadline else None
        if deadline and days_left is not None and days_left < 0 and res.unreached:
            problems.append(
                f"the notice deadline {deadline.isoformat()} has passed and "
                f"{res.unreached:,} resident(s) are not reached (export them with "
                f"notify export unreached for postal or substitute notice)"
            )
        required = rules.monitoring_months if res.identity else 0
        if required and not offered:
            problems.append(
                f"{res.identity:,} resident(s) with identity data exposed must be "
                f"offered {required} months of free credit monitoring "
                f"({rules.monitoring_when}); the campaign sets no credit_monitoring"
            )
        variant_problems = [
            p for p in template_problems.get(code, []) if "credit monitoring" not in p or offered
        ]
        problems += variant_problems
        variants = sorted({variant_name(code, kinds) for kinds in res.combos})
        checks.append(
            JurisdictionCheck(
                code=code,
                name=rules.name,
                residents=res,
                notice_deadline=deadline,
                days_left=days_left,
                regulators=regulators,
                monitoring_months_required=required,
                monitoring_months_offered=max(offered, required)
                if offered and required
                else offered,
                variant="+".join(variants),
                problems=problems,
                notes=notes,
                rules=rules,
                templates_ok=not variant_problems,
            )
        )
    return RulesReport(campaign=name, as_of=as_of, jurisdictions=checks)


def format_report(report: RulesReport) -> list[str]:
    """The human form of the rules check, one line per fact."""
    lines = [
        f"Rules check of {report.campaign} as of {report.as_of.isoformat()} "
        "(not legal advice: see docs/compliance.md)"
    ]
    if not report.jurisdictions:
        lines.append("  no contacts yet")
    for j in report.jurisdictions:
        res = j.residents
        title = f"{j.code} {j.name}".strip()
        lines.append("")
        lines.append(
            f"{title}: {res.total:,} resident(s), {res.reached:,} reached, "
            f"{res.unreached:,} not reached"
            + (f" [confidence: {j.rules.confidence}]" if j.rules else "")
        )
        if j.rules:
            if j.notice_deadline and j.days_left is not None:
                left = (
                    f"{j.days_left} day(s) left"
                    if j.days_left >= 0
                    else f"{-j.days_left} day(s) ago"
                )
                lines.append(f"  notice deadline: {j.notice_deadline.isoformat()} ({left})")
            else:
                lines.append(f"  notice deadline: no fixed date: {j.rules.notice_standard}")
            for reg in j.regulators:
                state = "required" if reg.required else "not required (below threshold)"
                due = f", due {reg.due.isoformat()}" if reg.due and reg.required else ""
                before = (
                    ", before the consumer notice"
                    if reg.before_consumer_notice and reg.required
                    else ""
                )
                lines.append(f"  {reg.name}: {state}{due}{before}")
            if j.monitoring_months_required:
                lines.append(
                    f"  credit monitoring: {j.monitoring_months_required} months "
                    f"required, {j.monitoring_months_offered or 'none'} offered"
                )
            meets = (
                "the campaign's notices meet it"
                if j.templates_ok
                else "the campaign's notices do NOT meet it"
            )
            lines.append(f"  notice variant: {j.variant} ({meets})")
        for note in j.notes:
            lines.append(f"  note: {note}")
        for problem in j.problems:
            lines.append(f"  PROBLEM: {problem}")
    count = sum(len(j.problems) for j in report.jurisdictions)
    lines.append("")
    lines.append(f"{count} problem(s)." if count else "No problems found.")
    return lines
