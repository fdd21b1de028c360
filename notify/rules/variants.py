"""Notice variants by jurisdiction: what a template is told (``rules``) and what a rendered
notice must and must not say there.

Templates receive ``jurisdiction`` (the contact's code, e.g. ``US-MA``, or ``unknown``) and
``rules`` (a :class:`NoticeRules`). The shipped notices use them to leave out the nature of the
breach in Massachusetts, add the police-report and free-freeze paragraphs there, and switch to
California's credentials-only form for a passwords-only breach. :func:`verify` checks a
rendered notice against the law, so an override that forgets a rule fails ``templates check``,
``rules check`` and ``send``, not a regulator's review.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from functools import lru_cache

from notify import rules as rules_mod

# Words a notice must carry for these variants (case-insensitive); why, in the problem text.
POLICE_REPORT = "police report"
SECURITY_FREEZE = "security freeze"
NO_CHARGE = "no charge"
CA_TITLE = "Notice of Data Breach"
CA_HEADINGS = (
    "What Happened",
    "What Information Was Involved",
    "What We Are Doing",
    "What You Can Do",
    "For More Information",
)
CREDENTIALS_DIRECTIVE = "change your password"
# "1,234 Illinois residents", "12 residents of Massachusetts", "affected 345 customers"
_COUNT_PHRASE = re.compile(
    r"\b\d[\d,.]*\s+(?:[A-Z][a-z]+\s+){0,2}(?:residents?|customers?|individuals?|people|persons?"
    r"|consumers?|accounts?)\b",
    re.I,
)


@dataclass(frozen=True, slots=True)
class NoticeRules:
    """What the law of the contact's jurisdiction asks of their notice (``rules`` in templates).

    Hashable and read-only: the sandbox reads its fields fast, and rendered advice that
    depends on it can be cached.
    """

    code: str  # "US-MA", "EU", "unknown", ...
    name: str  # "Massachusetts"
    variant: str  # standard | US-MA | US-IL | US-CA
    omit_nature: bool  # MA: never say what happened
    omit_count: bool  # MA, IL: never say how many residents
    police_report: bool  # MA: the right to obtain a police report
    free_freeze: bool  # MA: a security freeze, and that it costs nothing
    credentials_form: bool  # CA, passwords only: the credentials-only notice
    monitoring_months: int  # months of credit monitoring this contact is offered (0: none)
    monitoring_required: int  # months the jurisdiction requires for this contact (0: none)


@lru_cache(maxsize=1024)
def notice_rules(code: str, kinds: tuple[str, ...], offered_months: int) -> NoticeRules:
    """The rules for a contact of jurisdiction ``code`` with exposures ``kinds``, in a campaign
    that offers ``offered_months`` of monitoring (0: none). Offered months follow the strictest
    rule: raised to what the jurisdiction requires for identity data."""
    found = rules_mod.get(code)
    variant = found.variant if found else "standard"
    required = found.monitoring_months if found and "identity" in kinds else 0
    offered = max(offered_months, required) if offered_months and "identity" in kinds else 0
    return NoticeRules(
        code=code,
        name=found.name if found else "",
        variant=variant,
        omit_nature=variant == "US-MA",
        omit_count=variant in ("US-MA", "US-IL"),
        police_report=variant == "US-MA",
        free_freeze=variant == "US-MA",
        credentials_form=variant == "US-CA" and tuple(kinds) == ("passwords",),
        monitoring_months=offered,
        monitoring_required=required,
    )


def variant_name(code: str, kinds: tuple[str, ...]) -> str:
    """The variant a contact's notice needs, e.g. ``US-CA-credentials`` or ``standard``."""
    found = rules_mod.get(code)
    variant = found.variant if found else "standard"
    if variant == "US-CA" and tuple(kinds) == ("passwords",):
        return "US-CA-credentials"
    return variant


def _has(text: str, words: str) -> bool:
    return words.casefold() in " ".join(text.split()).casefold()


def verify(rules: NoticeRules, text: str, *, description: str = "") -> list[str]:
    """What is wrong with one rendered notice (plain text or HTML made text) for ``rules``.

    ``description`` is the campaign's account of what happened (MA notices must not carry
    it). Where the count is forbidden, any "N residents / customers / people ..." phrase is
    reported (a bare number cannot be told from a date or a phone number).
    """
    found: list[str] = []
    name = rules.name or rules.code
    if rules.omit_nature and description.strip() and _has(text, description.strip()[:80]):
        found.append(
            f"{name} notices must not describe the nature of the breach, but this one "
            "includes the campaign description"
        )
    if rules.omit_count:
        phrase = _COUNT_PHRASE.search(" ".join(text.split()))
        if phrase:
            found.append(
                f"{name} notices must not state the number of residents affected, "
                f"but this one says {phrase.group(0)!r}"
            )
    if rules.police_report and not _has(text, POLICE_REPORT):
        found.append(
            f"{name} notices must tell the resident of the right to obtain a police "
            f"report (no {POLICE_REPORT!r} in it)"
        )
    if rules.free_freeze and not (_has(text, SECURITY_FREEZE) and _has(text, NO_CHARGE)):
        found.append(
            f"{name} notices must explain how to request a security freeze and that "
            f"there is no charge for it (needs {SECURITY_FREEZE!r} and {NO_CHARGE!r})"
        )
    if rules.variant == "US-CA":
        if rules.credentials_form:
            if not _has(text, CREDENTIALS_DIRECTIVE):
                found.append(
                    f"{name} credentials-only notices must direct the person to "
                    f"change the password ({CREDENTIALS_DIRECTIVE!r})"
                )
        else:
            missing = [h for h in (CA_TITLE, *CA_HEADINGS) if not _has(text, h)]
            if missing:
                found.append(
                    f"{name} notices need the title and headings of Civ. Code "
                    f"1798.82; missing {missing[0]!r}"
                )
    if rules.monitoring_required:
        months = rules.monitoring_months
        if months < rules.monitoring_required:
            found.append(
                f"{name} requires {rules.monitoring_required} months of free credit "
                f"monitoring for identity data; the campaign offers "
                f"{months or 'none'} (set credit_monitoring in the campaign file)"
            )
        elif not re.search(rf"\b{months}[- ]months?\b", text, re.I):
            found.append(
                f"{name} requires {rules.monitoring_required} months of credit "
                f'monitoring, but the notice does not offer "{months} months"'
            )
    return found


# --- checking what a campaign's contacts will get -----------------------------------------

_SAMPLE_RESIDENCE = {
    "EU": ("FR", None),
    "GB": ("GB", None),
    "CA": ("CA", None),
    "AU": ("AU", None),
    "US-HIPAA": ("US", None),
}
_TAGS = re.compile(r"<[^>]+>")


def sample_residence(code: str) -> tuple[str | None, str | None]:
    """(country, state) of a sample contact whose residence is ``code``."""
    if code in _SAMPLE_RESIDENCE:
        return _SAMPLE_RESIDENCE[code]
    if code.startswith("US-"):
        return "US", code[3:]
    return None, None


def html_text(html: str) -> str:
    """The words of an HTML notice, for the same checks as the text part."""
    return html_lib.unescape(_TAGS.sub(" ", html))


def verify_notices(notices, needs: dict[str, set[tuple[str, ...]]]) -> dict[str, list[str]]:
    """Render, for each jurisdiction, a notice of every exposure combination its residents
    have, and check each against the jurisdiction's content rules. Returns problems per code,
    each naming the variant and exposures (``[US-MA, identity+card] ...``)."""
    # Imported here: notify.templates imports this module for the `rules` it gives templates.
    from notify.templates import ContactView, TemplateError, reset_link, sample_token

    config = notices.config
    email = "email" in config.channels
    sms = "sms" in config.channels or config.fallback == "sms"
    link = reset_link(config, sample_token())
    found: dict[str, list[str]] = {}
    for code, combos in sorted(needs.items()):
        country, state = sample_residence(code)
        problems: list[str] = []
        for kinds in sorted(combos):
            view = ContactView(
                key="sample-0001",
                name="Alex Sample",
                email="alex@example.com",
                phone="+14155550123",
                exposures=list(kinds),
                extra={},
                country=country,
                state=state,
                enrollment_code="SAMPLE-CODE",
            )
            reset = link if "passwords" in kinds else None
            rules = notice_rules(
                code, tuple(kinds), int((config.credit_monitoring or {}).get("months") or 0)
            )
            where = f"[{variant_name(code, tuple(kinds))}, {'+'.join(kinds)}]"
            bodies: list[tuple[str, str]] = []
            try:
                if email:
                    mail = notices.render_email(view, reset_url=reset)
                    bodies += [("email text", mail.text), ("email HTML", html_text(mail.html))]
                if sms:
                    bodies.append(("SMS", notices.render_sms(view, reset_url=reset).text))
            except TemplateError as exc:
                problems.append(f"{where} {exc}")
                continue
            for part, body in bodies:
                if part == "SMS":  # a short pointer to the full notice: only what it must not say
                    checks = NoticeRules(
                        **{
                            **_fields(rules),
                            "police_report": False,
                            "free_freeze": False,
                            "monitoring_required": 0,
                            "variant": "standard",
                        }
                    )
                else:
                    checks = rules
                for problem in verify(checks, body, description=config.description):
                    problems.append(f"{where} {part}: {problem}")
        if problems:
            found[code] = list(dict.fromkeys(problems))
    return found


def _fields(rules: NoticeRules) -> dict:
    return {name: getattr(rules, name) for name in NoticeRules.__slots__}
