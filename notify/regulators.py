"""`notify report regulators`: a filled report for each regulator the campaign must notify.

For every regulator whose threshold the campaign's residents meet (notify.rules.check), one
report as Markdown and as HTML: who the organization is and how to reach it, residents
affected (in that jurisdiction and in all), the dates, what happened, what information was
involved, what was done (notices sent and reached, credit monitoring, password resets), what
the regulator asks for and by when, and the notice as sent to that jurisdiction's residents,
rendered for a placeholder person. Plus ``counts.csv`` (jurisdiction, residents, notified,
reached, unreached). No file holds personal data: only counts and the notice's template text.
"""

from __future__ import annotations

import csv
import html
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy.orm import Session

from notify import exposures as kinds_mod
from notify.campaigns import config_of, get_campaign
from notify.errors import NotifyError
from notify.rules.check import CRA_NAME, JurisdictionCheck, RulesReport, check_campaign
from notify.rules.variants import sample_residence

COUNTS_COLUMNS = ("jurisdiction", "residents", "notified", "reached", "unreached")
DISCLAIMER = (
    "Prepared by notify from its breach-law data (not legal advice): check the "
    "regulator's current form and the statute before filing."
)
KIND_LABEL = {
    "identity": "identity information (such as Social Security, driver's license "
    "numbers, dates of birth)",
    "card": "payment card information",
    "passwords": "account passwords",
}


@dataclass
class Section:
    """A heading and its paragraphs or list items (rendered to Markdown and to HTML)."""

    title: str
    lines: list[str]
    bullets: bool = False
    preformatted: bool = False


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


def _longdate(value: str | date | None) -> str:
    if not value:
        return "not set"
    day = value if isinstance(value, date) else date.fromisoformat(value)
    return f"{day:%B} {day.day}, {day.year}"


def _sample_notice(notices, code: str, kinds: tuple[str, ...]) -> str:
    """The notice a resident of ``code`` with ``kinds`` exposed is sent, for a placeholder
    person: no real name, address, link or code appears in the report."""
    from notify.templates import ContactView, TemplateError

    country, state = sample_residence(code)
    view = ContactView(
        key="[key]",
        name="[Name]",
        email="[email]",
        phone="[phone]",
        exposures=list(kinds),
        extra={},
        country=country,
        state=state,
        enrollment_code="[enrollment code]" if "identity" in kinds else None,
    )
    reset = "[personal reset link]" if "passwords" in kinds else None
    try:
        if "email" in notices.config.channels or not notices.config.channels:
            mail = notices.render_email(view, reset_url=reset)
            return f"Subject: {mail.subject}\n\n{mail.text}"
        return notices.render_sms(view, reset_url=reset).text
    except TemplateError as exc:
        return f"(the notice cannot be rendered: {exc})"


def _sections(
    report: RulesReport, j: JurisdictionCheck, reg, config, notices, totals: dict[str, int]
) -> list[Section]:
    res = j.residents
    org = config.organization
    contact = [f"Organization: {org}"]
    if config.sender_name:
        contact.append(f"Notices signed by: {config.sender_name} <{config.sender_email}>")
    for label, value in (
        ("Telephone", config.support_phone),
        ("Email", config.support_email),
        ("Web", config.support_url),
    ):
        if value:
            contact.append(f"{label}: {value}")
    first = res.first_notice.isoformat() if res.first_notice else "not sent yet"
    dates = [
        f"Date of the breach: {_longdate(config.incident_date)}",
        f"Date discovered: {_longdate(config.discovered_date)}",
        f"Date determined: {_longdate(config.determined_date)}",
        f"First notice to residents: {first}",
    ]
    if j.notice_deadline:
        dates.append(f"Notice deadline for residents: {j.notice_deadline.isoformat()}")
    if config.law_enforcement_delay_until:
        dates.append(
            "Notice delayed at the request of law enforcement until "
            f"{_longdate(config.law_enforcement_delay_until)}"
        )
    kinds: dict[str, int] = {}
    for combo, n in res.combos.items():
        for kind in combo:
            kinds[kind] = kinds.get(kind, 0) + n
    involved = [
        f"{KIND_LABEL.get(k, k)}: {n:,} resident(s)"
        for k, n in sorted(
            kinds.items(),
            key=lambda kv: kinds_mod.RANKED.index(kv[0]) if kv[0] in kinds_mod.RANKED else 9,
        )
    ]
    done = [
        f"Residents sent a notice: {res.notified:,} of {res.total:,}",
        f"Residents reached (notice sent or delivered): {res.reached:,}",
        f"Residents not reached yet: {res.unreached:,} (to be notified by other means)",
    ]
    offer = config.credit_monitoring
    if offer and kinds.get("identity"):
        months = max(int(offer["months"]), j.monitoring_months_required)
        done.append(
            f"Free credit monitoring offered: {months} months through "
            f"{offer['provider']} (enrollment: {offer['enroll_url']})"
        )
    if kinds.get("passwords"):
        done.append(
            "Passwords of affected accounts are being reset (each resident gets a "
            "personal reset link)"
        )
    cra = next((r for r in j.regulators if r.name == CRA_NAME and r.required), None)
    if cra:
        done.append("The nationwide consumer reporting agencies are notified")
    asked = [reg.wants]
    if reg.due:
        asked.append(
            f"Due: {reg.due.isoformat()}"
            + (" (before the notice to residents)" if reg.before_consumer_notice else "")
        )
    rules = j.rules
    sections = [
        Section("Reporting organization", contact),
        Section(
            "Residents affected",
            [f"{j.name}: {res.total:,}", f"All jurisdictions: {totals['residents']:,}"],
        ),
        Section(
            "Residents affected by state or country",
            [
                f"{other.code}: {other.residents.total:,}"
                for other in report.jurisdictions
                if other.code != "US-HIPAA"
            ],
            bullets=True,
        ),
        Section("Dates", dates),
        Section("What happened", [config.description or "(no description in the campaign)"]),
        Section("What information was involved", involved, bullets=True),
        Section("What was done", done, bullets=True),
        Section(f"What {reg.name} asks for", asked),
    ]
    for combo in sorted(res.combos):
        sections.append(
            Section(
                f"The notice as sent ({'+'.join(combo)} exposed)",
                [_sample_notice(notices, j.code, combo)],
                preformatted=True,
            )
        )
    source = (
        [
            f"{rules.law}; {rules.source}; last checked {rules.last_checked.isoformat()}; "
            f"confidence: {rules.confidence}."
        ]
        if rules is not None
        else []
    )
    sections.append(Section("Source", [*source, DISCLAIMER]))
    return sections


def _markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.preformatted:
            out += ["```", *s.lines[0].rstrip("\n").split("\n"), "```"]
        elif s.bullets:
            out += [f"- {line}" for line in s.lines]
        else:
            out += [f"{line}  " for line in s.lines]
        out.append("")
    return "\n".join(out)


def _html(title: str, sections: list[Section]) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for s in sections:
        out.append(f"<h2>{esc(s.title)}</h2>")
        if s.preformatted:
            out.append(f"<pre>{esc(s.lines[0])}</pre>")
        elif s.bullets:
            out += ["<ul>", *(f"<li>{esc(line)}</li>" for line in s.lines), "</ul>"]
        else:
            out.append("<p>" + "<br>\n".join(esc(line) for line in s.lines) + "</p>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_reports(session: Session, name: str, folder: str | Path, as_of: date) -> list[Path]:
    """Write the reports and counts.csv into ``folder`` (created if missing); returns the
    files written. Nothing is written when the campaign is unknown."""
    from notify.templates import notices_for

    campaign = get_campaign(session, name)
    config = config_of(campaign)
    report = check_campaign(session, name, as_of, verify_templates=False)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NotifyError(f"{folder}: cannot create the folder: {exc.strerror}") from None
    if not folder.is_dir():
        raise NotifyError(f"{folder}: not a folder")
    notices = notices_for(session, campaign)
    totals = {
        "residents": sum(j.residents.total for j in report.jurisdictions if j.code != "US-HIPAA")
    }
    written: list[Path] = []
    for j in report.jurisdictions:
        for reg in j.regulators:
            if not reg.required or reg.name == CRA_NAME or j.rules is None:
                continue
            title = f"Data breach notification to {reg.name}"
            sections = _sections(report, j, reg, config, notices, totals)
            stem = f"{j.code}-{_slug(reg.name)}"
            for suffix, text in (
                (".md", _markdown(title, sections)),
                (".html", _html(title, sections)),
            ):
                path = folder / f"{stem}{suffix}"
                path.write_text(text, encoding="utf-8")
                written.append(path)
    counts = folder / "counts.csv"
    with open(counts, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COUNTS_COLUMNS)
        for j in report.jurisdictions:
            res = j.residents
            writer.writerow([j.code, res.total, res.notified, res.reached, res.unreached])
    written.append(counts)
    return written
