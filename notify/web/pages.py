"""The pages of the web view and the access rules around them.

Roles are cumulative: support < compliance < admin. Every page names the lowest role that
may see it; a signed-in user below it gets a 403 page (not only a hidden link), a visitor
without a session is sent to the sign-in page. Every view of a customer's record and every
download is written to the audit log under the user's name.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from markupsafe import Markup
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from notify import audit, db, lookup
from notify.campaigns import get_campaign, list_campaigns
from notify.errors import NotFound, NotifyError
from notify.models import WEB_ROLES, AuditRecord, utcnow
from notify.status import CHANNEL_LABEL, campaign_status
from notify.times import iso_utc
from notify.web import auth, charts, downloads, progress, search, users

HERE = Path(__file__).parent
ROLE_RANK = users.ROLE_RANK
STATE: web.AppKey[WebState] = web.AppKey("notify_web")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The pages load nothing from anywhere else; no inline script or style either.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
EXPORT_LABELS = {
    "deliveries": "Deliveries: one row per message",
    "unreached": "Unreached: contacts no channel reached",
    "resets": "Resets: who must reset, and who did",
    "events": "Events: the raw event log",
}
AUDIT_PAGE = 100


@dataclass
class WebState:
    """What the pages share: the database, a thread pool for it, templates, the key."""

    engine: Engine
    secure_cookies: bool
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="web")
    )
    key: bytes | None = None
    clock: Callable[[], datetime] = utcnow  # the sign-in lockout's time (tests inject it)
    templates: jinja2.Environment = field(default_factory=lambda: _environment())


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a request."""

    name: str
    role: str
    csrf: str

    def can(self, role: str) -> bool:
        """True when this user's role includes ``role`` (roles are cumulative)."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


# --- templates --------------------------------------------------------------------------------


def time_tag(value: str | datetime | None, fallback: str = "-") -> Markup:
    """A <time> element: UTC text (what readers without JavaScript see), the ISO value for
    the script that shows it in the viewer's zone, and UTC on hover."""
    if not value:
        return Markup(fallback)
    if isinstance(value, datetime):
        value = iso_utc(value)
    utc = lookup._human_iso(value)
    return Markup('<time datetime="{0}" title="{1}">{1}</time>').format(value, utc)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["t"] = time_tag
    env.filters["num"] = lambda n: f"{n:,}"
    env.filters["pretty_json"] = lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True)
    env.globals["channel_label"] = lambda c: CHANNEL_LABEL.get(c, c)
    env.globals["quote"] = lambda s: quote(s, safe="")
    return env


def render(
    request: web.Request,
    template: str,
    status: int = 200,
    viewer: Viewer | None = None,
    **context: Any,
) -> web.Response:
    """An HTML page with the security headers."""
    state = request.app[STATE]
    html = state.templates.get_template(template).render(
        viewer=viewer,
        path=request.path,
        refresh=context.pop("refresh", None),
        section=context.pop("section", None),
        has_rules=_has_rules(),
        **context,
    )
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


def _has_rules() -> bool:
    """The rules check is linked once the compliance rules module is installed."""
    return importlib.util.find_spec("notify.rules") is not None


# --- plumbing ---------------------------------------------------------------------------------


async def run_db(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """Blocking database work on the web pool; retried briefly when SQLite is busy."""
    state = request.app[STATE]
    loop = asyncio.get_running_loop()
    for attempt in range(3):
        try:
            return await loop.run_in_executor(state.executor, fn, *args)
        except OperationalError as exc:
            reason = str(exc.orig).lower()
            if attempt == 2 or not ("locked" in reason or "busy" in reason):
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def signing_key(request: web.Request) -> bytes:
    """The session key, loaded (or created) once per process."""
    state = request.app[STATE]
    if state.key is None:
        state.key = await run_db(request, auth.signing_key, state.engine)
    return state.key


def _load_user(engine: Engine, name: str) -> tuple[str, str, int] | None:
    with db.session_scope(engine) as session:
        user = users.get_user(session, name)
        return (user.name, user.role, user.session_epoch) if user else None


async def viewer_of(request: web.Request) -> Viewer | None:
    """The signed-in user, if the session cookie is valid, current and its user exists."""
    key = await signing_key(request)
    cookie = auth.read_session(key, request.cookies.get(auth.SESSION_COOKIE))
    if cookie is None:
        return None
    found = await run_db(request, _load_user, request.app[STATE].engine, cookie.name)
    if found is None or found[2] != cookie.epoch or found[1] not in WEB_ROLES:
        return None
    return Viewer(found[0], found[1], auth.csrf_token(key, cookie.nonce))


def _nonce(request: web.Request, key: bytes) -> str | None:
    cookie = auth.read_session(key, request.cookies.get(auth.SESSION_COOKIE))
    return cookie.nonce if cookie else None


def forbidden(request: web.Request, viewer: Viewer, needed: str) -> web.Response:
    """The 403 page: says which role the page needs, so the user knows whom to ask."""
    return render(
        request, "forbidden.html", status=403, viewer=viewer, needed=needed, title="Not allowed"
    )


def requires(role: str) -> Callable[[Callable[..., Awaitable[web.StreamResponse]]], Handler]:
    """Decorate a handler(request, viewer): sign-in first, then at least ``role``; POSTs
    must carry the session's CSRF token."""

    def wrap(handler: Callable[..., Awaitable[web.StreamResponse]]) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            viewer = await viewer_of(request)
            if viewer is None:
                target = request.path_qs if request.method == "GET" else "/"
                raise web.HTTPSeeOther("/login?" + urlencode({"next": target}))
            if not viewer.can(role):
                return forbidden(request, viewer, role)
            if request.method == "POST":
                form = await request.post()
                if not auth.csrf_ok(
                    await signing_key(request),
                    _nonce(request, await signing_key(request)),
                    _text(form.get("csrf")),
                ):
                    return csrf_refused(request, viewer)
            return await handler(request, viewer)

        guarded.__doc__ = handler.__doc__
        return guarded

    return wrap


def csrf_refused(request: web.Request, viewer: Viewer | None) -> web.Response:
    """403 for a form without the right token (a forged or stale form): nothing changed."""
    return render(request, "csrf.html", status=403, viewer=viewer, title="Form expired")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _record(
    engine: Engine,
    command: str,
    actor: str,
    campaign: str | None = None,
    arguments: dict[str, Any] | None = None,
    counts: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> None:
    with db.session_scope(db.writer(engine)) as session:
        audit.record(
            session,
            command,
            campaign=campaign,
            arguments=arguments,
            counts=counts,
            actor=actor,
            outcome=outcome,
        )


# --- sign in and out --------------------------------------------------------------------------


def _set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: float
) -> None:
    """Set one of the view's cookies (login form, session) the one way they are all set:
    out of scripts' reach, never sent by another site, Secure when the public URL is
    https, for the whole site, for ``max_age`` seconds."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="Strict",
        secure=request.app[STATE].secure_cookies,
        path="/",
        max_age=int(max_age),
    )


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//evil.example``) is followed after sign-in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/search"


async def login_page(
    request: web.Request, message: str | None = None, status: int = 200, kind: str = "error"
) -> web.Response:
    """GET /login: the sign-in form, with a fresh pre-session CSRF cookie."""
    key = await signing_key(request)
    cookie = auth.new_login_nonce(key)
    nonce = auth.read_login_nonce(key, cookie)
    assert nonce is not None
    response = render(
        request,
        "login.html",
        status=status,
        title="Sign in",
        csrf=auth.csrf_token(key, nonce),
        message=message,
        kind=kind,
        next=_safe_next(request.query.get("next")),
        signed_out=request.query.get("signed_out") == "1",
    )
    _set_cookie(request, response, auth.LOGIN_COOKIE, cookie, auth.LOGIN_LIFETIME.total_seconds())
    return response


def _sign_in(
    engine: Engine, name: str, password: str, now: datetime
) -> tuple[users.LoginResult, int]:
    with db.session_scope(db.writer(engine)) as session:
        result = users.authenticate(session, name, password, now)
        outcome = {"ok": "ok", "wrong": "refused", "locked": "locked"}[result.reason]
        audit.record(
            session,
            "web sign-in",
            arguments={"name": name[:128]},
            actor=(result.user.name if result.user else name[:128] or "-"),
            outcome=outcome,
        )
        return result, (result.user.session_epoch if result.user else 0)


async def login_submit(request: web.Request) -> web.StreamResponse:
    """POST /login: check the CSRF token, then the password (with the lockout)."""
    key = await signing_key(request)
    form = await request.post()
    nonce = auth.read_login_nonce(key, request.cookies.get(auth.LOGIN_COOKIE))
    if not auth.csrf_ok(key, nonce, _text(form.get("csrf"))):
        return csrf_refused(request, None)
    name, password = _text(form.get("name")).strip(), _text(form.get("password"))
    if not name or not password:
        return await login_page(request, "Enter your user name and password.", 400)
    state = request.app[STATE]
    result, epoch = await run_db(request, _sign_in, state.engine, name, password, state.clock())
    if result.reason == "locked":
        until = lookup._human_iso(iso_utc(result.locked_until))
        return await login_page(
            request,
            f"Too many failed sign-ins: this account is locked until {until}. "
            "Wait, or ask an admin.",
            429,
        )
    if result.user is None:
        return await login_page(request, "Wrong user name or password.", 401)
    cookie, lifetime = auth.new_session(key, result.user.name, epoch)
    response = web.HTTPSeeOther(_safe_next(_text(form.get("next"))))
    _set_cookie(request, response, auth.SESSION_COOKIE, cookie, lifetime)
    response.del_cookie(auth.LOGIN_COOKIE, path="/")
    raise response  # a redirect is raised: aiohttp deprecates returning one


def _sign_out(engine: Engine, name: str) -> None:
    with db.session_scope(db.writer(engine)) as session:
        user = users.get_user(session, name)
        if user is not None:
            user.session_epoch += 1  # every cookie issued before now stops working
        audit.record(session, "web sign-out", actor=name)


@requires("support")
async def logout(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """POST /logout: end the session everywhere (the epoch moves on)."""
    await run_db(request, _sign_out, request.app[STATE].engine, viewer.name)
    response = web.HTTPSeeOther("/login?signed_out=1")
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    raise response


async def index(request: web.Request) -> web.StreamResponse:
    """GET /: the search for everyone signed in."""
    raise web.HTTPSeeOther("/search")


# --- support search ---------------------------------------------------------------------------


def run_search(
    engine: Engine, query: str, actor: str, now: datetime | None = None, parts: bool = False
) -> search.Answer:
    """The search and its audit records: one per customer record shown, one per search."""
    # One transaction for the search and its audit records: one connection, one commit.
    with db.session_scope(db.writer(engine)) as session:
        answer = search.answer(session, query, now, parts=parts)
        counts = {"matches": len(answer.contacts)}
        if answer.note:  # "more": 1 (more matched than shown) or "stopped": 1 (scan cut short)
            counts[answer.note] = 1
        arguments: dict[str, Any] = {"query": query[:200]}
        if parts:
            arguments["part_of_name"] = True
        audit.record(
            session,
            "web search",
            arguments=arguments,
            counts=counts,
            actor=actor,
        )
        for contact in answer.contacts:
            audit.record(
                session,
                "web view contact",
                campaign=contact["campaign"],
                arguments={"contact_key": contact["key"], "query": query[:200]},
                actor=actor,
            )
    return answer


@requires("support")
async def search_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """GET /search?q=: the verdict first, then exposures, messages and the reset."""
    query = request.query.get("q", "").strip()[:320]
    parts = request.query.get("part") == "1"  # the part-of-a-name search, asked for
    answer = None
    if query:
        answer = await run_db(
            request, run_search, request.app[STATE].engine, query, viewer.name, None, parts
        )
    return render(
        request,
        "search.html",
        viewer=viewer,
        title="Search",
        query=query,
        contacts=answer.contacts if answer else None,
        note=answer.note if answer else None,
        parts=parts,
        part_unsearched=bool(answer and answer.part_unsearched),
        section="search",
    )


# --- campaigns --------------------------------------------------------------------------------


def _campaign_rows(engine: Engine) -> list[dict[str, Any]]:
    with db.session_scope(engine) as session:
        return [
            campaign_status(session, c.name) | {"organization": c.settings.get("organization")}
            for c in list_campaigns(session)
        ]


@requires("compliance")
async def campaigns_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """GET /campaigns: every campaign with its reach, and its downloads."""
    rows = await run_db(request, _campaign_rows, request.app[STATE].engine)
    return render(
        request,
        "campaigns.html",
        viewer=viewer,
        title="Campaigns",
        rows=rows,
        section="campaigns",
        exports=EXPORT_LABELS,
    )


def _campaign_data(engine: Engine, name: str) -> dict[str, Any] | None:
    with db.session_scope(engine) as session:
        try:
            return progress.campaign_page(session, name)
        except NotFound:
            return None


def _no_such_campaign(request: web.Request, viewer: Viewer, name: str) -> web.StreamResponse:
    """The 404 page for a campaign name the database does not know."""
    return render(
        request,
        "not_found.html",
        status=404,
        viewer=viewer,
        title="No such campaign",
        what=f"campaign {name!r}",
    )


@requires("compliance")
async def campaign_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """GET /campaigns/{name}: live counts, reach, resets funnel, charts, downloads."""
    name = request.match_info["name"]
    data = await run_db(request, _campaign_data, request.app[STATE].engine, name)
    if data is None:
        return _no_such_campaign(request, viewer, name)
    sent, bucket = charts.minute_series(data["series"]["sent_per_minute"])
    done, done_bucket = charts.minute_series(data["series"]["completions_per_minute"])
    per = "minute" if bucket == 1 else f"minute (average over {bucket} minutes)"

    def drawn(width: int) -> dict[str, Markup]:
        return {
            "sent": charts.line_chart(
                sent,
                "Messages sent per minute",
                f"Messages handed to a provider per {per}, over the campaign.",
                "per minute",
                width=width,
            ),
            "status": charts.status_bars(data["status"]["messages"], CHANNEL_LABEL, width=width),
            "resets": charts.line_chart(
                charts.cumulative(done, done_bucket),
                "Reset completions over time",
                "Password resets completed so far, over the campaign.",
                "completed",
                width=width,
            ),
        }

    # Drawn twice: a laptop and a phone size (CSS shows one), so the labels stay legible.
    wide, narrow = drawn(640), drawn(340)
    figures = {
        key: Markup('<div class="fig-wide">{}</div><div class="fig-narrow">{}</div>').format(
            wide[key], narrow[key]
        )
        for key in wide
    }
    live = data["in_flight"] > 0 and request.query.get("refresh") != "off"
    return render(
        request,
        "campaign.html",
        viewer=viewer,
        title=f"Campaign {name}",
        data=data,
        figures=figures,
        report=data["status"],
        section="campaigns",
        refresh=progress.REFRESH if live else None,
        live=live,
        statuses=charts.STATUS_COLOURS,
        exports=EXPORT_LABELS,
    )


def _campaign_exists(engine: Engine, name: str) -> bool:
    with db.session_scope(engine) as session:
        try:
            get_campaign(session, name)
            return True
        except NotFound:
            return False


@requires("compliance")
async def download(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """GET /campaigns/{name}/{what}.csv: the export, streamed, audited with the user."""
    name, what = request.match_info["name"], request.match_info["what"]
    state = request.app[STATE]
    if what not in EXPORT_LABELS or not await run_db(request, _campaign_exists, state.engine, name):
        return render(
            request,
            "not_found.html",
            status=404,
            viewer=viewer,
            title="Not found",
            what=f"export {what!r} of campaign {name!r}",
        )
    from notify import export

    def produce(writer: Any) -> int:
        with db.session_scope(state.engine) as session:
            return export.write_export(session, what, get_campaign(session, name), writer)

    async def record(counts: dict[str, Any] | None, outcome: str = "ok") -> None:
        await run_db(
            request,
            _record,
            state.engine,
            f"web export {what}",
            viewer.name,
            name,
            {"campaign": name},
            counts,
            outcome,
        )

    # Recorded however the download ends: one that did not finish is `interrupted`.
    try:
        response, rows = await downloads.stream_csv(
            request, state.executor, f"{what}-{name}.csv", produce
        )
    except BaseException:
        await record(None, "interrupted")
        raise
    await record({"rows": rows})
    return response


# --- rules check ------------------------------------------------------------------------------


def _rules(engine: Engine, name: str) -> dict[str, Any] | None:
    from notify.rules.check import check_campaign

    with db.session_scope(engine) as session:
        try:
            report = check_campaign(session, name, utcnow().date())
        except NotFound:
            return None
        return report.as_json() | {"failed": report.failed}


@requires("compliance")
async def rules_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """GET /campaigns/{name}/rules: `notify rules check` as a page (deadlines, regulators)."""
    name = request.match_info["name"]
    if not _has_rules():
        raise web.HTTPNotFound()
    report = await run_db(request, _rules, request.app[STATE].engine, name)
    if report is None:
        return _no_such_campaign(request, viewer, name)
    return render(
        request,
        "rules.html",
        viewer=viewer,
        title=f"Rules check {name}",
        report=report,
        section="campaigns",
    )


# --- audit log --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    """The audit page's filters, from the query string; ``problems`` lists bad values."""

    actor: str = ""
    command: str = ""
    campaign: str = ""
    since: str = ""
    until: str = ""
    before: int | None = None
    problems: tuple[str, ...] = ()

    @classmethod
    def parse(cls, query: Any) -> AuditFilters:
        """Read the filters; a date that is not YYYY-MM-DD is reported, not guessed."""
        values = {
            k: query.get(k, "").strip()[:200]
            for k in ("actor", "command", "campaign", "since", "until")
        }
        problems = []
        for k in ("since", "until"):
            if values[k]:
                try:
                    datetime.strptime(values[k], "%Y-%m-%d")
                except ValueError:
                    problems.append(f"{k}: {values[k]!r} is not a date like 2026-12-02")
                    values[k] = ""
        before = query.get("before", "")
        return cls(
            **values, before=int(before) if before.isdigit() else None, problems=tuple(problems)
        )

    def query_string(self, **changes: Any) -> str:
        """These filters as a query string, with ``changes`` applied."""
        values = {
            "actor": self.actor,
            "command": self.command,
            "campaign": self.campaign,
            "since": self.since,
            "until": self.until,
        } | changes
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def audit_rows(engine: Engine, filters: AuditFilters) -> list[AuditRecord]:
    """Audit records matching the filters, newest first, one page."""
    query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(AUDIT_PAGE)
    if filters.actor:
        query = query.where(AuditRecord.actor == filters.actor)
    if filters.command:
        query = query.where(AuditRecord.command.startswith(filters.command, autoescape=True))
    if filters.campaign:
        query = query.where(AuditRecord.campaign == filters.campaign)
    if filters.since:
        query = query.where(AuditRecord.at >= datetime.fromisoformat(filters.since + "T00:00Z"))
    if filters.until:
        end = datetime.fromisoformat(filters.until + "T00:00Z") + timedelta(days=1)
        query = query.where(AuditRecord.at < end)
    if filters.before:
        query = query.where(AuditRecord.id < filters.before)
    with db.session_scope(engine) as session:
        return list(session.scalars(query))


@requires("compliance")
async def audit_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """GET /audit: the audit log, newest first, filtered by user, command, campaign, dates."""
    filters = AuditFilters.parse(request.query)
    rows = await run_db(request, audit_rows, request.app[STATE].engine, filters)
    older = filters.query_string(before=rows[-1].id) if len(rows) == AUDIT_PAGE else None
    return render(
        request,
        "audit.html",
        viewer=viewer,
        title="Audit log",
        rows=rows,
        filters=filters,
        older=older,
        section="audit",
    )


# --- users ------------------------------------------------------------------------------------


def _users(engine: Engine, now: datetime) -> list[dict[str, object]]:
    with db.session_scope(engine) as session:
        return [users.user_row(u, now) for u in users.list_users(session)]


async def _users_page(
    request: web.Request,
    viewer: Viewer,
    message: str | None = None,
    kind: str = "ok",
    status: int = 200,
) -> web.Response:
    state = request.app[STATE]
    rows = await run_db(request, _users, state.engine, state.clock())
    return render(
        request,
        "users.html",
        status=status,
        viewer=viewer,
        title="Users",
        rows=rows,
        roles=WEB_ROLES,
        message=message,
        kind=kind,
        section="users",
    )


@requires("admin")
async def users_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """GET /users: the accounts, a form to add one, and a button to remove each."""
    return await _users_page(request, viewer)


def _add_user(engine: Engine, actor: str, name: str, role: str, password: str) -> None:
    with db.session_scope(db.writer(engine)) as session:
        users.add_user(session, name, role, password)
        audit.record(session, "users add", arguments={"name": name, "role": role}, actor=actor)


def _unlock_user(engine: Engine, actor: str, name: str) -> None:
    with db.session_scope(db.writer(engine)) as session:
        user = users.unlock_user(session, name)
        audit.record(
            session, "users unlock", arguments={"name": name, "role": user.role}, actor=actor
        )


def _remove_user(engine: Engine, actor: str, name: str) -> None:
    with db.session_scope(db.writer(engine)) as session:
        user = users.remove_user(session, name)
        audit.record(
            session, "users remove", arguments={"name": name, "role": user.role}, actor=actor
        )


@requires("admin")
async def users_submit(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """POST /users: add (name, role, password twice), remove (``remove=NAME``) or lift a
    lockout (``unlock=NAME``)."""
    form = await request.post()
    engine = request.app[STATE].engine
    try:
        if form.get("unlock"):
            name = _text(form.get("unlock"))
            await run_db(request, _unlock_user, engine, viewer.name, name)
            return await _users_page(request, viewer, f"Unlocked user {name}.")
        if form.get("remove"):
            name = _text(form.get("remove"))
            if name == viewer.name:
                raise NotifyError("you cannot remove your own account while signed in")
            await run_db(request, _remove_user, engine, viewer.name, name)
            return await _users_page(request, viewer, f"Removed user {name}.")
        name, role = _text(form.get("name")), _text(form.get("role"))
        password = _text(form.get("password"))
        if password != _text(form.get("confirm")):
            raise NotifyError("the two passwords differ")
        await run_db(request, _add_user, engine, viewer.name, name, role, password)
        return await _users_page(request, viewer, f"Added user {name.strip()} ({role}).")
    except NotifyError as exc:
        return await _users_page(request, viewer, str(exc), "error", 400)


# --- static files and mounting ----------------------------------------------------------------


STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}


async def static(request: web.Request) -> web.StreamResponse:
    """GET /static/{file}: the stylesheet and the small script (shipped in the package)."""
    name = request.match_info["file"]
    path = HERE / "static" / name
    if "/" in name or path.suffix not in STATIC_TYPES or not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(
        body=path.read_bytes(),
        content_type=STATIC_TYPES[path.suffix],
        charset="utf-8",
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


async def not_found(request: web.Request) -> web.StreamResponse:
    """Unknown page under the web view."""
    raise web.HTTPNotFound()


async def _executor(app: web.Application) -> AsyncIterator[None]:
    """The web view's database threads stop (after the work under way) with the server."""
    with app[STATE].executor:
        yield


def mount(app: web.Application, engine: Engine, public_url: str | None = None) -> None:
    """Add the web view's routes to the `notify serve` application.

    Cookies are marked Secure when the public URL is HTTPS (the TLS proxy in front)."""
    app[STATE] = WebState(
        engine=engine, secure_cookies=bool(public_url and public_url.startswith("https:"))
    )
    app.router.add_get("/", index)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/search", search_page)
    app.router.add_get("/campaigns", campaigns_page)
    app.router.add_get("/campaigns/{name}", campaign_page)
    app.router.add_get(r"/campaigns/{name}/{what}.csv", download)
    app.router.add_get("/campaigns/{name}/rules", rules_page)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/users", users_page)
    app.router.add_post("/users", users_submit)
    app.router.add_get("/static/{file}", static)
    app.cleanup_ctx.append(_executor)
