"""Notices: pick the template for a contact's exposures and render it safely.

One message per channel per contact, from the folder of the highest-ranked exposure
(``identity`` > ``card`` > ``passwords``); that template lists every exposed kind and the
advice for each. Templates come from a stored set (``notify.template_versions``): the
campaign's overrides first, then the shipped defaults, as they were when the campaign was
loaded. Jinja resolves includes and extends among those names only, never on disk.

Rendering is sandboxed (contact data and override templates are not trusted), undefined names
are errors, HTML autoescapes, and the subject can never carry a line break. Everything that
can be done once per campaign (compiling, hashing the sources, the sender headers) is, because
the send engine renders and builds one message in a fraction of a millisecond.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import markupsafe
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from notify import exposures as kinds_mod
from notify import template_versions
from notify.campaigns import CampaignConfig, config_of
from notify.errors import NotifyError
from notify.models import NOTICES, Campaign, Contact, TemplateVersion
from notify.rules import residence
from notify.rules.variants import NoticeRules, notice_rules
from notify.sms_segments import sms_encoding, sms_segments
from notify.template_versions import TemplateSet

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlalchemy.orm import Session

# The files of one exposure folder, by (notice, channel); an email is (subject, text, html).
FILES: dict[tuple[str, str], tuple[str, ...]] = {
    ("notice", "email"): ("email.subject.j2", "email.txt.j2", "email.html.j2"),
    ("notice", "sms"): ("sms.txt.j2",),
    ("reminder", "email"): ("reminder.subject.j2", "reminder.txt.j2", "reminder.html.j2"),
    ("reminder", "sms"): ("reminder.sms.txt.j2",),
}
KNOWN_FILES = frozenset(name for names in FILES.values() for name in names)
SHARED = "_shared"
ADVICE = SHARED + "/advice/{kind}.txt.j2"
# `{% extends "defaults/identity/email.txt.j2" %}` reaches a shipped file from an override of
# the same name (the override would otherwise shadow it).
DEFAULTS_PREFIX = "defaults"

REQUIRED_HEADINGS = (
    "Notice of Data Breach",
    "What Happened",
    "What Information Was Involved",
    "What We Are Doing",
    "What You Can Do",
    "For More Information",
)
MAX_SMS_SEGMENTS = 3
# resets issue secrets.token_urlsafe(32): 43 characters. Previews and checks use this length
# so that the segment count they show is the one the real message will have.
TOKEN_LENGTH = 43
# What `notify preview` shows instead of a token: previews must never issue a real one.
PREVIEW_TOKEN = "<issued-at-send>"

# How the notices name each kind: `labels` for the list of what was involved (see
# _labels), `short_labels` in sentences ("your identity information and password").
SHORT_LABELS = {
    "identity": "identity information",
    "card": "payment card information",
    "passwords": "password",
}


def _labels(organization: str) -> dict[str, str]:
    """What each kind covers, as listed under "What Information Was Involved"."""
    return {
        "identity": "Identity information, such as your Social Security number, driver's "
        "license number or date of birth",
        "card": "Payment card information, such as your card number and expiration date",
        "passwords": f"The password for your {organization} account",
    }


class TemplateError(NotifyError):
    """A notice template cannot be used: ``file, line N: problem``."""


@dataclass(frozen=True)
class ContactView:
    """What templates see as ``contact``: plain data, detached from the database."""

    key: str
    name: str | None
    email: str | None
    phone: str | None
    exposures: list[str]  # rank order: ["identity", "passwords"]
    extra: dict = field(default_factory=dict)  # other columns of the imported file
    country: str | None = None
    state: str | None = None
    locale: str | None = None
    enrollment_code: str | None = None  # the contact's credit-monitoring code (notify.codes)

    @classmethod
    def from_model(cls, contact: Contact | Row) -> ContactView:
        """The view of a stored contact (exposures split into their rank-ordered list): a
        Contact, or a result row with its columns."""
        return cls(
            key=contact.key,
            name=(contact.name or "").strip() or None,
            email=contact.email or None,
            phone=contact.phone or None,
            exposures=kinds_mod.split(contact.exposures),
            extra=dict(contact.extra or {}),
            country=contact.country,
            state=contact.state,
            locale=contact.locale,
            enrollment_code=getattr(contact, "enrollment_code", None),
        )


@dataclass(frozen=True, slots=True)
class Advice:
    """One exposure's advice, from ``_shared/advice/<kind>.txt.j2``: a title and steps."""

    title: str
    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """An email's content; :func:`notify.mime.build_email` makes the MIME message of it."""

    subject: str
    text: str
    html: str
    template: str  # exposure folder used, e.g. "identity"
    version: str  # the stored template version (sha256 of the whole set)


@dataclass(frozen=True, slots=True)
class RenderedSms:
    """An SMS body, checked against the segment budget."""

    text: str
    template: str
    version: str
    segments: int


_DATA_FIELDS = {
    ContactView: frozenset(f.name for f in fields(ContactView)),
    Advice: frozenset(f.name for f in fields(Advice)),
    NoticeRules: frozenset(f.name for f in fields(NoticeRules)),
}


@dataclass(slots=True)
class _Set:
    """The compiled templates of one (folder, notice, channel), or why they are unusable."""

    names: tuple[str, ...]
    templates: tuple[jinja2.Template, ...] | None
    problem: str | None


def needs_reset(contact: ContactView) -> bool:
    """True when the contact's passwords were exposed (they get a reset link)."""
    return "passwords" in contact.exposures


# --- rendering ----------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _longdate(value: Any) -> str:
    """``2026-11-20`` -> ``November 20, 2026``; anything unparseable is left as it is."""
    if not value:
        return ""
    try:
        day = value if isinstance(value, date) else date.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return f"{day:%B} {day.day}, {day.year}"


def _and_join(items: Iterable[Any]) -> str:
    """``["a", "b", "c"]`` -> ``a, b and c``."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _describe(kinds: Iterable[str]) -> str:
    """The exposed kinds in a sentence: ``identity information and password``."""
    return _and_join(SHORT_LABELS.get(k, k) for k in kinds)


_URL = re.compile(r"https?://[^\s<>\"']*[^\s<>\"'.,;:!?)\]]")


def _linkify(value: Any) -> markupsafe.Markup:
    """Escape plain text for HTML and make its http(s) addresses links. (Jinja's urlize does
    more, at ~50 times the cost, which the send budget cannot afford.)"""
    return _linkify_text(str(value))


@lru_cache(maxsize=1024)  # the same advice steps come back for contact after contact
def _linkify_text(text: str) -> markupsafe.Markup:
    if "://" not in text:
        return markupsafe.escape(text)
    escape = markupsafe.escape
    out: list[str] = []
    pos = 0
    for match in _URL.finditer(text):
        url = escape(match[0])
        out += (escape(text[pos : match.start()]), '<a href="', url, '">', url, "</a>")
        pos = match.end()
    out.append(escape(text[pos:]))
    return markupsafe.Markup("".join(out))  # every piece from the text went through escape()


def _finalize(value: Any) -> Any:
    # A missing optional value (contact.name, reset_url) prints as nothing, never "None".
    return "" if value is None else value


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with a fast answer for the data fields of notify's own
    read-only context objects (the general check costs several microseconds per lookup,
    and a notice makes dozens). Everything else, methods included, gets the full check.
    (The campaign stays a plain dict: its failed-getattr-then-key path is already cheaper
    than any attribute hook.)"""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        names = _DATA_FIELDS.get(type(obj))
        if names is not None and attr in names:
            return True
        return super().is_safe_attribute(obj, attr, value)

    def make_globals(self, d: Any = None) -> dict[str, Any]:
        # A plain dict instead of Jinja's ChainMap over the environment's globals: every
        # render copies the globals into its context, and a ChainMap copies slowly. The
        # environment's globals never change once the templates are compiled.
        return {**self.globals, **(d or {})}


def _fresh() -> bool:
    return True  # stored sources never change


class _StoredLoader(jinja2.BaseLoader):
    """Templates by name from a stored set: overrides, then defaults, then the defaults
    again under ``defaults/`` (so an override can extend the default it replaces). A name
    not in the set is not found: nothing is ever read from disk."""

    def __init__(self, tset: TemplateSet) -> None:
        origin = tset.origin or "templates"
        self.sources: dict[str, tuple[str, str]] = {}  # name -> (source, shown filename)
        for name, text in tset.defaults.items():
            self.sources[f"{DEFAULTS_PREFIX}/{name}"] = (text, f"{DEFAULTS_PREFIX}/{name}")
        for name, text in tset.defaults.items():
            self.sources[name] = (text, f"{DEFAULTS_PREFIX}/{name}")
        for name, text in tset.overrides.items():
            self.sources[name] = (text, f"{origin}/{name}")

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        found = self.sources.get(template)
        if found is None:
            raise jinja2.TemplateNotFound(template)
        return found[0], found[1], _fresh

    def list_templates(self) -> list[str]:
        return sorted(self.sources)


def _make_env(tset: TemplateSet) -> ImmutableSandboxedEnvironment:
    # Immutable sandbox: the campaign dict is shared by every render, so a template must not
    # be able to change it (or anything else) for the next contact.
    env = _Sandbox(
        loader=_StoredLoader(tset),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm", "html.j2", "htm.j2"),
            default_for_string=False,
            default=False,
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # compiled once per campaign; no stat() per render
        cache_size=-1,
        finalize=_finalize,
    )
    env.filters["longdate"] = _longdate
    env.filters["and_join"] = _and_join
    env.filters["describe"] = _describe
    env.filters["linkify"] = _linkify
    return env


_TRAILING_SPACE = re.compile(r"[ \t]+$", re.M)
_BLANK_LINES = re.compile(r"\n{3,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _tidy(text: str) -> str:
    """Plain text as a person would type it: no trailing blanks, at most one empty line."""
    # The substring tests are much cheaper than the regexes, which usually find nothing.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if " \n" in text or "\t\n" in text or text.endswith((" ", "\t")):
        text = _TRAILING_SPACE.sub("", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip("\n") + "\n"


def one_line(text: str) -> str:
    """A header value: every run of whitespace (CR, LF, tabs, U+2028...) becomes one space."""
    return _CONTROL.sub("", " ".join(text.split()))


# Context names that differ between renders; the rest are the campaign's constants.
_PER_CONTACT = frozenset({"contact", "reset_url", "advice"})
_PER_RENDER = frozenset(
    {"exposures", "notice", "template", "link_expires", "jurisdiction", "rules"}
)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class Notices:
    """The compiled notices of one campaign: a stored template set (overrides over defaults).

    ``templates`` is that set, or a folder of overrides to read now (with the checks of
    :func:`notify.template_versions.read_set`; for checks and tests), or None for the
    defaults alone.
    """

    def __init__(
        self, config: CampaignConfig, templates: TemplateSet | str | Path | None = None
    ) -> None:
        self.config = config
        if not isinstance(templates, TemplateSet):
            folder = Path(templates) if templates else None
            templates = template_versions.read_set(folder)
        self.templates = templates
        self.origin = templates.origin  # the override folder, as messages name it
        self.version = templates.sha256  # what every message rendered here records
        self.env = _make_env(templates)
        self._where = (
            f"{templates.origin} or the defaults" if templates.origin else "the default templates"
        )
        self._sources: dict[str, tuple[str, str]] = {}  # name -> (source, filename)
        self._problems: dict[str, str] = {}  # name -> why it cannot be compiled
        self._compile_all()
        campaign = config.as_dict()
        self._base: dict[str, Any] = {
            "campaign": campaign,
            "organization": config.organization,
            "labels": _labels(config.organization),
            "short_labels": SHORT_LABELS,
            "link_days": config.reset_token_ttl_days,
        }
        self._advice = {k: self._load(ADVICE.format(kind=k)) for k in kinds_mod.RANKED}
        self._advice_keys = {k: self._cache_key_names(ADVICE.format(kind=k)) for k in self._advice}
        self._advice_cache: dict[tuple, Advice] = {}
        self._sets = {
            (folder, notice, channel): self._make_set(folder, names)
            for folder in kinds_mod.RANKED
            for (notice, channel), names in FILES.items()
        }
        self._expiry: tuple[date, str] | None = None
        offer = config.credit_monitoring or {}
        self._monitoring_months = int(offer.get("months") or 0)

    # -- compiling --

    def _compile_all(self) -> None:
        """Compile every template once: syntax errors surface here, not mid-send."""
        for name in self.env.list_templates():
            if not name.startswith(DEFAULTS_PREFIX + "/") and name.endswith(".j2"):
                self._load(name)

    def _load(self, name: str) -> jinja2.Template | None:
        if name in self._problems:
            return None
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateNotFound:
            self._problems[name] = f"{name}: not found in {self._where}"
            return None
        except jinja2.TemplateSyntaxError as exc:
            self._problems[name] = self._describe_error(exc)
            return None
        return template

    def _source(self, name: str) -> tuple[str, str] | None:
        if name not in self._sources:
            try:
                loader = self.env.loader
                if loader is None:
                    return None
                source, filename, _ = loader.get_source(self.env, name)
            except jinja2.TemplateNotFound:
                return None
            self._sources[name] = (source, filename or name)
        return self._sources[name]

    def _make_set(self, folder: str, files: tuple[str, ...]) -> _Set:
        names = tuple(f"{folder}/{f}" for f in files)
        loaded = [self._load(n) for n in names]
        problem = next((self._problems[n] for n in names if n in self._problems), None)
        templates = tuple(t for t in loaded if t is not None)
        usable = None if problem or len(templates) != len(loaded) else templates
        return _Set(names, usable, problem)

    # -- errors --

    def _display(self, filename: str) -> str:
        """A template's path as the user should read it: relative to the working folder."""
        path = Path(filename)
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def path_of(self, name: str) -> str:
        """The file a template name resolves to (override first), for messages."""
        found = self._source(name)
        return self._display(found[1]) if found else name

    def _is_template_file(self, filename: str) -> bool:
        return filename.endswith(".j2")  # every stored template is a *.j2 file

    def _describe_error(self, exc: Exception) -> str:
        """``file, line N: problem`` for any failure raised while compiling or rendering."""
        filename, lineno = None, None
        if isinstance(exc, jinja2.TemplateSyntaxError):
            filename, lineno = exc.filename or exc.name, exc.lineno
            what = f"syntax error: {exc.message}"
        else:
            tb = exc.__traceback__
            while tb is not None:  # the innermost template frame is where it failed
                code_file = tb.tb_frame.f_code.co_filename
                if self._is_template_file(code_file):
                    filename, lineno = code_file, tb.tb_lineno
                tb = tb.tb_next
            if isinstance(exc, jinja2.UndefinedError):
                what = f"undefined: {exc.message}"
            elif isinstance(exc, SecurityError):
                what = f"not allowed in a template: {exc}"
            elif isinstance(exc, jinja2.TemplateNotFound):
                what = f"includes {exc.name!r}, which is not in {self._where}"
            else:
                what = f"{type(exc).__name__}: {exc}"
        if filename is None:
            return what
        where = self._display(filename)
        return f"{where}, line {lineno}: {what}" if lineno else f"{where}: {what}"

    # -- rendering --

    def _link_expires(self) -> str:
        today = datetime.now(UTC).date()  # token expiry is computed in UTC too
        if self._expiry is None or self._expiry[0] != today:
            days = timedelta(days=self.config.reset_token_ttl_days)
            self._expiry = (today, _longdate(today + days))
        return self._expiry[1]

    def _context(
        self, contact: ContactView, notice: str, reset_url: str | None
    ) -> tuple[str, dict[str, Any]]:
        if notice not in NOTICES:
            raise ValueError(f"notice must be one of {NOTICES}, not {notice!r}")
        kinds = kinds_mod.ordered(contact.exposures)
        if not kinds:
            raise TemplateError(f"contact {contact.key!r} has no exposure, so no notice applies")
        ctx = dict(self._base)
        ctx["contact"] = contact
        ctx["exposures"] = kinds
        # The link is the contact's own, and only for exposed passwords.
        ctx["reset_url"] = reset_url if "passwords" in kinds else None
        ctx["notice"] = notice
        ctx["template"] = kinds[0]
        ctx["link_expires"] = self._link_expires()
        # The law of where the contact lives shapes the notice (notify.rules.variants).
        code = residence(contact.country, contact.state)
        ctx["jurisdiction"] = code
        ctx["rules"] = notice_rules(code, tuple(kinds), self._monitoring_months)
        return kinds[0], ctx

    def _add_advice(self, ctx: dict[str, Any]) -> dict[str, Any]:
        """``advice[kind]`` for each exposed kind (rendered per contact: it may hold the link)."""
        ctx["advice"] = {kind: self._render_advice(kind, ctx) for kind in ctx["exposures"]}
        return ctx

    def _cache_key_names(self, name: str) -> tuple[str, ...] | None:
        """The per-render variables a template reads, or None when it reads the contact or
        their link (then its output is the contact's own and is never reused)."""
        found = self._source(name)
        if found is None:
            return None
        try:
            ast = self.env.parse(found[0])
        except jinja2.TemplateSyntaxError:
            return None
        used = meta.find_undeclared_variables(ast)
        # An included or parent template could read anything: only self-contained ones.
        if used & _PER_CONTACT or any(True for _ in meta.find_referenced_templates(ast)):
            return None
        return tuple(sorted(used & _PER_RENDER))

    def _render_advice(self, kind: str, ctx: dict[str, Any]) -> Advice:
        template = self._advice[kind]
        if template is None:
            raise TemplateError(self._problems[ADVICE.format(kind=kind)])
        names = self._advice_keys[kind]
        key = None
        if names is not None:  # same inputs, same advice: render it once
            key = (kind, *(_hashable(ctx[n]) for n in names))
            if key in self._advice_cache:
                return self._advice_cache[key]
        lines = [line.strip() for line in template.render(ctx).splitlines()]
        lines = [line for line in lines if line]
        advice = Advice(lines[0] if lines else "", tuple(lines[1:]))
        if key is not None:
            if len(self._advice_cache) > 4096:
                self._advice_cache.clear()
            self._advice_cache[key] = advice
        return advice

    def _templates(self, folder: str, notice: str, channel: str) -> _Set:
        chosen = self._sets[(folder, notice, channel)]
        if chosen.templates is None:
            raise TemplateError(chosen.problem or f"{folder}/{notice}/{channel}: unusable")
        return chosen

    def render_email(
        self, contact: ContactView, *, notice: str = "notice", reset_url: str | None = None
    ) -> RenderedEmail:
        """Subject, text and HTML of the email ``contact`` gets (``notice`` or ``reminder``)."""
        folder, ctx = self._context(contact, notice, reset_url)
        chosen = self._templates(folder, notice, "email")
        subject_t, text_t, html_t = chosen.templates  # type: ignore[misc]
        try:
            self._add_advice(ctx)
            subject = one_line(subject_t.render(ctx))
            text = _tidy(text_t.render(ctx))
            html = html_t.render(ctx)
        except TemplateError:
            raise
        except Exception as exc:  # anything a template raised: name its file and line
            raise TemplateError(self._describe_error(exc)) from exc
        if not subject:
            raise TemplateError(f"{self.path_of(chosen.names[0])}: the subject is empty")
        return RenderedEmail(subject, text, html, folder, self.version)

    def render_sms(
        self, contact: ContactView, *, notice: str = "notice", reset_url: str | None = None
    ) -> RenderedSms:
        """The SMS ``contact`` gets; more than MAX_SMS_SEGMENTS segments is a TemplateError."""
        folder, ctx = self._context(contact, notice, reset_url)
        chosen = self._templates(folder, notice, "sms")
        try:
            self._add_advice(ctx)
            text = _tidy(chosen.templates[0].render(ctx)).strip()  # type: ignore[index]
        except TemplateError:
            raise
        except Exception as exc:
            raise TemplateError(self._describe_error(exc)) from exc
        if not text:
            raise TemplateError(f"{self.path_of(chosen.names[0])}: the SMS is empty")
        segments = sms_segments(text)
        if segments > MAX_SMS_SEGMENTS:
            raise TemplateError(
                f"{self.path_of(chosen.names[0])}: the SMS for contact {contact.key!r} needs "
                f"{segments} segments (at most {MAX_SMS_SEGMENTS}; {sms_encoding(text)}, "
                f"{len(text)} characters)"
            )
        return RenderedSms(text, folder, self.version, segments)

    # -- checking --

    def check(self) -> list[str]:
        """Every problem sending would hit, each ``path/to/file.j2, line N: what``.

        Renders notice and reminder, email and SMS, for all 7 exposure combinations, with and
        without a name, with a reset link where passwords are exposed (and without, as when
        the contact reset already). Empty list: safe to send.
        """
        problems = list(self._problems.values()) + self._stray_files()
        config = self.config
        # A channel the campaign never uses cannot stop it (e.g. an SMS too long in UCS-2
        # for an organization name with accents, in an email-only campaign).
        email = "email" in config.channels
        sms = "sms" in config.channels or config.fallback == "sms"
        for notice, view, reset in _samples(config):
            if email:
                problems += self._check_email(view, notice, reset)
            if sms:
                problems += self._check_sms(view, notice, reset)
        return list(dict.fromkeys(problems))

    def _check_email(self, view: ContactView, notice: str, reset: str | None) -> list[str]:
        try:
            mail = self.render_email(view, notice=notice, reset_url=reset)
        except TemplateError as exc:
            return [str(exc)]
        _, text_name, html_name = self._sets[(mail.template, notice, "email")].names
        html_text = html_lib.unescape(mail.html)
        found: list[str] = []
        if notice == "notice":
            for heading in REQUIRED_HEADINGS:
                for name, body in ((text_name, mail.text), (html_name, html_text)):
                    if heading.casefold() not in body.casefold():
                        found.append(f"{self.path_of(name)}: missing the heading {heading!r}")
        if reset:
            for name, body in ((text_name, mail.text), (html_name, html_text)):
                if reset not in body:
                    found.append(
                        f"{self.path_of(name)}: does not show the reset link "
                        f"(reset_url) to a contact whose password was exposed"
                    )
        return found

    def _check_sms(self, view: ContactView, notice: str, reset: str | None) -> list[str]:
        combo = "+".join(view.exposures)
        try:
            sms = self.render_sms(view, notice=notice, reset_url=reset)
        except TemplateError as exc:
            return [str(exc).replace(f"contact {view.key!r}", f"exposures {combo}")]
        name = self.path_of(self._sets[(sms.template, notice, "sms")].names[0])
        found: list[str] = []
        if reset and reset not in sms.text:
            found.append(
                f"{name}: does not show the reset link (reset_url) to a contact whose "
                f"password was exposed"
            )
        support = self.config.support_url
        if notice == "notice" and support and support not in sms.text:
            found.append(f"{name}: does not point to the full notice (campaign.support_url)")
        return found

    def warnings(self) -> list[str]:
        """What may be a mistake without stopping a send (one part of a notice overridden,
        its counterpart not)."""
        return template_versions.counterpart_warnings(self.templates)

    def _stray_files(self) -> list[str]:
        """Override files notify would never read: usually a typo that silently sends the
        default instead of the text someone wrote."""
        found: list[str] = []
        expected = ", ".join(sorted(KNOWN_FILES))
        for name in sorted(self.templates.overrides):
            rel = Path(name)
            if rel.parts[0] == SHARED:
                continue
            shown = f"{self.origin}/{name}"
            if len(rel.parts) == 1:
                found.append(
                    f"{shown}: not used; notices live in a folder per exposure "
                    f"({', '.join(kinds_mod.RANKED)})"
                )
            elif rel.parts[0] not in kinds_mod.RANKED:
                if rel.name in KNOWN_FILES:
                    found.append(
                        f"{shown}: not used; {rel.parts[0]!r} is not an exposure "
                        f"({', '.join(kinds_mod.RANKED)})"
                    )
            elif len(rel.parts) == 2 and rel.name not in KNOWN_FILES:
                found.append(f"{shown}: not used; expected one of {expected}")
        return found


class _SampleExtra(dict):
    """``contact.extra`` in checks: any column a template names exists (the real columns
    depend on the imported file, which a check cannot know)."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"


SAMPLE_NAME = "Alexandra Wójcik-Fitzgerald"  # long, and not GSM-7: the hard case for SMS


def sample_token() -> str:
    """A stand-in token of the real length (URL-safe characters)."""
    return ("Sample-Token_" * 4)[:TOKEN_LENGTH]


def reset_link(config: CampaignConfig, token: str) -> str | None:
    """The campaign's reset URL with ``token`` in place of ``{token}`` (None without one):
    :func:`notify.resets.tokens.reset_url`, for previews, plans and dry runs."""
    from notify.resets.tokens import reset_url  # the send engine's own link, built one way

    return reset_url(config, token) if config.reset_url else None


def exposure_combinations() -> list[list[str]]:
    """All 7 non-empty sets of kinds, rank-ordered."""
    ranked = kinds_mod.RANKED
    return [list(c) for n in range(1, len(ranked) + 1) for c in combinations(ranked, n)]


def _samples(config: CampaignConfig) -> Iterator[tuple[str, ContactView, str | None]]:
    """(notice, contact, reset_url) for every case a campaign can send."""
    link = reset_link(config, sample_token())
    for kinds in exposure_combinations():
        has_passwords = "passwords" in kinds
        for name in (SAMPLE_NAME, None):
            view = ContactView(
                key="sample-0001",
                name=name,
                email="alexandra@example.com",
                phone="+14155550123",
                exposures=kinds,
                extra=_SampleExtra(),
            )
            links = [link, None] if has_passwords and link else [None]
            for reset in links:
                yield "notice", view, reset
                if has_passwords:  # reminders only go to contacts who must reset
                    yield "reminder", view, reset


def notices_for(session: Session, campaign: Campaign) -> Notices:
    """The compiled notices of a stored campaign: the template version stored at its last
    ``campaign load`` (no folder is read)."""
    return Notices(config_of(campaign), stored_templates(session, campaign))


@dataclass
class CheckResult:
    """``notify templates check --campaign``: the stored notices, what stops a send
    (``problems``) and what may be a mistake (``warnings``)."""

    notices: Notices
    problems: list[str]
    warnings: list[str]


def check_campaign(session: Session, campaign: Campaign) -> CheckResult:
    """Check the version a campaign sends from; warn when its files on disk differ.

    The folder is read with the same checks as at load (a link leaving it is an error even
    here): editing the notices without loading again changes nothing that is sent, which is
    worth saying.
    """
    notices = notices_for(session, campaign)
    warnings = notices.warnings()
    source = Path(campaign.source_path) if campaign.source_path else None
    folder = notices.config.templates
    if source is not None and folder and not (source.parent / folder).is_dir():
        warnings.append(
            f"the templates folder {source.parent / folder} is gone; checked the "
            f"stored version {notices.version[:16]}, which sending uses"
        )
    elif source is not None and source.is_file():
        on_disk = template_versions.read_for_campaign(source, folder)
        if on_disk.sha256 != notices.version:
            where = f"{on_disk.origin} or the defaults" if on_disk.origin else "the defaults"
            warnings.append(
                f"the notices on disk ({where}) differ from the stored version "
                f"{notices.version[:16]} that sending uses; to send them, load the campaign "
                f"again: notify campaign load {source}"
            )
    return CheckResult(notices, notices.check(), warnings)


def stored_templates(session: Session, campaign: Campaign) -> TemplateSet:
    """The template set stored with ``campaign``; a one-line error when it has none."""
    version = (
        session.get(TemplateVersion, campaign.template_version_id)
        if campaign.template_version_id is not None
        else None
    )
    if version is None:
        raise TemplateError(
            f"campaign {campaign.name!r} has no stored templates (it was "
            "loaded by an older notify); load it again: notify campaign load "
            f"{campaign.source_path or 'FILE'}"
        )
    return template_versions.from_row(version, _shown_origin(campaign.templates_dir))


def _shown_origin(folder: str | None) -> str | None:
    if not folder:
        return None
    try:
        return str(Path(folder).relative_to(Path.cwd()))
    except ValueError:
        return folder
