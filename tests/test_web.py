"""The web view, end to end in a real browser: headless Debian chromium driven by
playwright against a real `notify serve` process (see tests/web_helpers.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.web_helpers import CHROMIUM, PASSWORD, cli, running_server, sign_in

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

C1_VERDICT = "Reached by email on 27 Nov 2026 10:02, SMS failed (21610 opted out)"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def server(tmp_path, sqlite_url, campaign_file):
    with running_server(sqlite_url, tmp_path, campaign_file) as running:
        yield running


@pytest.fixture
def page(browser):
    context = browser.new_context(timezone_id="UTC", locale="en-GB", accept_downloads=True)
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


# --- accounts, sessions, CSRF ---------------------------------------------------------------


def test_sign_in_and_out_and_a_copied_cookie_dies_with_the_session(server, page, browser):
    page.goto(server.url + "/search?q=c1")
    assert "/login" in page.url  # no session: the sign-in page, remembering where to go
    sign_in(page, server, "support")
    assert page.url == server.url + "/search?q=c1"
    expect(page.get_by_test_id("verdict")).to_have_text(C1_VERDICT)
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "notify_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] > 0

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto(server.url + "/search?q=c1")
    assert "/login" in page.url

    thief = browser.new_context()  # the cookie replayed after sign-out: refused
    thief.add_cookies([session])
    other = thief.new_page()
    other.goto(server.url + "/search?q=c1")
    assert "/login" in other.url
    thief.close()
    assert [r["outcome"] for r in server.audit("web sign-in")] == ["ok"]
    assert [r["actor"] for r in server.audit("web sign-out")] == ["support"]


def test_wrong_passwords_lock_the_account(server, page):
    page.goto(server.url + "/login")
    for _ in range(4):
        page.goto(server.url + "/login")
        sign_in(page, server, "support", "not the password at all")
        expect(page.locator("#login-message")).to_have_text("Wrong user name or password.")
    page.goto(server.url + "/login")
    sign_in(page, server, "support", "not the password at all")
    expect(page.locator("#login-message")).to_contain_text("locked until")
    page.goto(server.url + "/login")
    sign_in(page, server, "support", PASSWORD)  # the right password, but locked
    expect(page.locator("#login-message")).to_contain_text("locked until")
    assert "/login" in page.url
    page.goto(server.url + "/search")
    assert "/login" in page.url
    listed = json.loads(cli(server.env, "users", "list", "--format", "json").stdout)
    assert next(u for u in listed if u["name"] == "support")["locked_until"]
    assert [r["outcome"] for r in server.audit("web sign-in")] == ["refused"] * 4 + [
        "locked",
        "locked",
    ]
    sign_in(page, server, "admin")  # other accounts are not affected
    assert page.url.endswith("/search")


def test_a_form_without_the_right_csrf_token_changes_nothing(server, page):
    page.goto(server.url + "/login")
    page.locator("input[name=csrf]").evaluate("e => e.value = 'forged'")
    sign_in(page, server, "admin")
    expect(page.get_by_role("heading", name="This form has expired")).to_be_visible()
    assert server.audit("web sign-in") == []

    sign_in(page, server, "admin")
    page.goto(server.url + "/users")
    form = page.locator("form.stack")
    form.get_by_label("User name").fill("mallory")
    form.get_by_label("Password (12 characters or more)").fill(PASSWORD)
    form.get_by_label("Password again").fill(PASSWORD)
    form.locator("input[name=csrf]").evaluate("e => e.value = e.value.slice(0, -2) + 'xx'")
    response_status = []
    page.on("response", lambda r: response_status.append(r.status))
    form.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("heading", name="This form has expired")).to_be_visible()
    assert 403 in response_status
    names = [
        u["name"] for u in json.loads(cli(server.env, "users", "list", "--format", "json").stdout)
    ]
    assert "mallory" not in names

    # A request from another site carries no token either (and no cookie: SameSite).
    answer = page.request.post(server.url + "/users", form={"name": "mallory", "role": "admin"})
    assert answer.status == 403


def test_admin_adds_and_removes_a_user(server, page):
    sign_in(page, server, "admin")
    page.goto(server.url + "/users")
    form = page.locator("form.stack")
    form.get_by_label("User name").fill("dana")
    form.get_by_label("Role").select_option("compliance")
    form.get_by_label("Password (12 characters or more)").fill(PASSWORD)
    form.get_by_label("Password again").fill(PASSWORD)
    form.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("status")).to_have_text("Added user dana (compliance).")
    page.get_by_role("button", name="Remove dana").click()
    expect(page.get_by_role("status")).to_have_text("Removed user dana.")
    assert [r["arguments"]["name"] for r in server.audit("users ")] == ["dana", "dana"]
    assert server.audit("users remove")[0]["actor"] == "admin"


# --- roles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role, allowed, forbidden",
    [
        (
            "support",
            ["/search"],
            [
                "/campaigns",
                "/campaigns/acme-2026-11",
                "/campaigns/acme-2026-11/deliveries.csv",
                "/audit",
                "/users",
            ],
        ),
        ("compliance", ["/search", "/campaigns", "/campaigns/acme-2026-11", "/audit"], ["/users"]),
        ("admin", ["/search", "/campaigns", "/audit", "/users"], []),
    ],
)
def test_each_role_sees_its_pages_and_gets_403_elsewhere(server, page, role, allowed, forbidden):
    sign_in(page, server, role)
    for path in allowed:
        assert page.goto(server.url + path).status == 200, path
    for path in forbidden:
        response = page.goto(server.url + path)
        assert response.status == 403, path
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main").inner_text()
    assert ("Audit log" in nav) == (role != "support")
    assert ("Users" in nav) == (role == "admin")
    assert server.audit("web export") == []  # a refused download leaves nothing to audit


# --- support search ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "c1",
        "ANN.EXAMPLE@example.com",
        "(415) 555-0101",
        "+1 415 555 0101",
        "ann example",
        "Ann  Example",
    ],
)
def test_search_by_key_email_phone_or_name_answers_with_the_verdict(server, page, query):
    sign_in(page, server, "support")
    page.get_by_label("Name, email, phone number or customer key").fill(query)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("verdict")).to_have_text(C1_VERDICT)
    expect(page.get_by_role("heading", name="Ann Example")).to_be_visible()
    assert "identity, passwords" in page.locator(".facts").first.inner_text()
    reset = page.get_by_test_id("reset").inner_text()
    assert reset == "Completed on 27 Nov 2026 13:02 (via webhook)."
    assert page.locator(".message").count() == 2
    expect(page.locator(".message").first).to_contain_text("smtp:relay.acme.example")
    viewed = server.audit("web view contact")
    assert [(r["actor"], r["arguments"]["contact_key"]) for r in viewed] == [("support", "c1")]


@pytest.mark.parametrize("query", ["EXAMPLE", "ann ex"])
def test_part_of_a_name_is_one_click_away_and_never_called_not_in_this_breach(server, page, query):
    """Exact spellings answer at once; part of a name is a scan of every name, offered, and
    a name that matched nothing exactly is not "Not in this breach" before it has run."""
    sign_in(page, server, "support")
    page.get_by_label("Name, email, phone number or customer key").fill(query)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", name="No exact match")).to_be_visible()
    expect(page.get_by_role("heading", name="Not in this breach")).to_have_count(0)
    page.get_by_role("link", name=f"Search for names containing “{query}”").click()
    expect(page.get_by_test_id("verdict")).to_have_text(C1_VERDICT)
    expect(page.get_by_role("heading", name="Ann Example")).to_be_visible()
    expect(page.locator(".count")).to_have_text(f"1 match (names containing “{query}”)")
    searches = server.audit("web search")
    assert [(r["arguments"].get("part_of_name"), r["counts"]["matches"]) for r in searches] == [
        (None, 0),
        (True, 1),
    ]


def test_unreached_verdict_link_expiry_and_not_in_this_breach(server, page):
    sign_in(page, server, "support")
    page.goto(server.url + "/search?q=bob@b%C3%BCcher.example")
    expect(page.get_by_test_id("verdict")).to_have_text(
        "Not reached: email bounced (5.1.1 =cmd|' /C calc'!A0), "
        "SMS undelivered (30003 unreachable handset)"
    )
    assert re.fullmatch(
        r"(Pending|Expired); 2 links sent, (expires|expired) \d+ \w+ \d{4} "
        r"\d\d:\d\d\.",
        page.get_by_test_id("reset").inner_text(),
    )
    page.goto(server.url + "/search?q=nobody%40example.com")
    expect(page.get_by_role("heading", name="Not in this breach")).to_be_visible()
    assert page.locator(".verdict").count() == 0
    searches = server.audit("web search")
    assert [r["counts"]["matches"] for r in searches] == [1, 0]


def test_times_in_the_viewers_zone_with_utc_on_hover(server, browser):
    context = browser.new_context(timezone_id="America/New_York")
    page = context.new_page()
    sign_in(page, server, "support")
    page.goto(server.url + "/search?q=c1")
    first = page.get_by_test_id("verdict").locator("time")
    assert first.inner_text() == "27 Nov 2026 05:02"
    assert first.get_attribute("title") == "2026-11-27 10:02 UTC"
    page.goto(server.url + "/search?q=c5")  # a second time on the same day: the hour only
    expect(page.get_by_test_id("verdict")).to_have_text(
        "Reached by email on 27 Nov 2026 05:02, SMS delivered 05:02"
    )
    assert "America/New_York" in page.locator("footer").inner_text()
    context.close()


def test_search_and_downloads_work_without_javascript(server, browser, tmp_path):
    context = browser.new_context(java_script_enabled=False, accept_downloads=True)
    page = context.new_page()
    sign_in(page, server, "compliance")
    page.get_by_label("Name, email, phone number or customer key").fill("4155550101")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("verdict")).to_have_text(
        "Reached by email on 2026-11-27 10:02 UTC, SMS failed (21610 opted out)"
    )
    page.goto(server.url + "/campaigns/acme-2026-11")
    with page.expect_download() as info:
        page.get_by_role("link", name="Events: the raw event log").click()
    saved = tmp_path / "events-web.csv"
    info.value.save_as(saved)
    cli(server.env, "export", "events", "acme-2026-11", "-o", str(tmp_path / "events.csv"))
    assert saved.read_bytes() == (tmp_path / "events.csv").read_bytes()
    context.close()


# --- campaign and compliance ------------------------------------------------------------------


def _table_counts(page) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for row in page.get_by_test_id("counts").locator("tbody tr").all():
        channel = row.get_attribute("data-channel")
        counts[channel] = {
            cell.get_attribute("data-status"): int(cell.inner_text().replace(",", ""))
            for cell in row.locator("td").all()
        }
    return counts


def test_campaign_page_counts_equal_notify_status_json(server, page):
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    sign_in(page, server, "compliance")
    page.goto(server.url + "/campaigns/acme-2026-11")
    # Stylesheet, script and charts come from the server itself: nothing from the internet.
    assert requested and all(url.startswith(server.url + "/") for url in requested)
    assert any(url.endswith("/static/app.css") for url in requested)
    status = server.status_json()
    shown = _table_counts(page)
    assert {
        ch: {s: n for s, n in by.items() if s != "total"} for ch, by in shown.items()
    } == status["messages"]
    assert {ch: by["total"] for ch, by in shown.items()} == status["totals"]
    assert page.get_by_test_id("reached").inner_text() == f"{status['reach']['reached_pct']}%"
    funnel = page.locator(".funnel").inner_text()
    assert f"Completed the reset\n{status['resets']['completed']}" in funnel
    # Status bars, sends, reset completions (each drawn for a laptop and a phone; one shows).
    assert page.locator("svg.chart:visible").count() == 3
    # One email is still pending: the page refreshes itself while the send is unfinished.
    assert page.locator("meta[http-equiv=refresh]").count() == 1
    page.get_by_role("link", name="Stop refreshing").click()
    assert page.locator("meta[http-equiv=refresh]").count() == 0


@pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_downloaded_csvs_are_byte_equal_to_notify_export(browser, db_url, tmp_path, campaign_file):
    with running_server(db_url, tmp_path, campaign_file) as server:
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        sign_in(page, server, "compliance")
        page.goto(server.url + "/campaigns/acme-2026-11")
        commands = {
            "deliveries": ["export", "deliveries"],
            "unreached": ["export", "unreached"],
            "events": ["export", "events"],
            "resets": ["resets", "export"],
        }
        for what, label in [
            ("deliveries", "Deliveries"),
            ("unreached", "Unreached"),
            ("resets", "Resets"),
            ("events", "Events"),
        ]:
            with page.expect_download() as info:
                page.get_by_role("link", name=re.compile(f"^{label}:")).click()
            assert info.value.suggested_filename == f"{what}-acme-2026-11.csv"
            web_file = tmp_path / f"{what}-web.csv"
            info.value.save_as(web_file)
            cli_file = tmp_path / f"{what}.csv"
            cli(server.env, *commands[what], "acme-2026-11", "-o", str(cli_file))
            assert web_file.read_bytes() == cli_file.read_bytes(), what
            assert len(web_file.read_bytes().splitlines()) > 1
        # Streamed: sent in chunks as the rows are read, no length announced in advance.
        answer = page.request.get(server.url + "/campaigns/acme-2026-11/deliveries.csv")
        assert answer.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in answer.headers
        assert answer.headers["content-type"] == "text/csv; charset=utf-8"
        context.close()
        downloads = server.audit("web export")
        assert [(r["command"], r["actor"], r["campaign"]) for r in downloads] == [
            (f"web export {w}", "compliance", "acme-2026-11")
            for w in ("deliveries", "unreached", "resets", "events", "deliveries")
        ]
        assert downloads[0]["counts"] == {"rows": 8}


def test_audit_log_filters(server, page):
    sign_in(page, server, "compliance")
    page.goto(server.url + "/search?q=c5")
    page.goto(server.url + "/audit")
    page.get_by_label("User").fill("compliance")
    page.get_by_label("Command starts with").fill("web view")
    page.get_by_role("button", name="Filter").click()
    rows = page.get_by_test_id("audit").locator("tbody tr").all()
    assert len(rows) == 1
    assert "web view contact" in rows[0].inner_text() and "c5" in rows[0].inner_text()
    page.goto(server.url + "/audit?command=web+sign-in&campaign=")
    assert page.get_by_test_id("audit").locator("tbody tr").count() == 1
    page.goto(server.url + "/audit?since=2999-01-01")
    assert "No record matches" in page.get_by_test_id("audit").inner_text()
    page.goto(server.url + "/audit?since=yesterday")
    assert "is not a date" in page.get_by_role("alert").inner_text()


# --- made for people --------------------------------------------------------------------------


def test_phone_width_has_no_sideways_scrolling(server, browser):
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    sign_in(page, server, "admin")
    for path in ("/search?q=c1", "/campaigns/acme-2026-11?refresh=off", "/audit", "/users"):
        page.goto(server.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, (path, width)
    context.close()


def test_keyboard_reaches_the_search_with_a_visible_focus(server, page):
    sign_in(page, server, "support")
    expect(page.locator("#q")).to_be_focused()  # the empty search page: type at once
    page.goto(server.url + "/search?q=c5")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")  # skip the navigation
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.press("Control+A")
    page.keyboard.type("c1")
    page.keyboard.press("Enter")
    page.wait_for_url("**/search?q=c1")
    expect(page.get_by_test_id("verdict")).to_have_text(C1_VERDICT)


def test_rules_check_page_matches_notify_rules_check(server, page):
    done = subprocess.run(
        [sys.executable, "-m", "notify", "rules", "check", "acme-2026-11", "--json"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    expected = json.loads(done.stdout.splitlines()[-1])
    sign_in(page, server, "support")
    assert page.goto(server.url + "/campaigns/acme-2026-11/rules").status == 403
    page.context.clear_cookies()
    sign_in(page, server, "compliance")
    page.goto(server.url + "/campaigns/acme-2026-11")
    page.get_by_role("link", name="Rules check").click()
    rows = page.get_by_test_id("rules").locator("tbody tr").all()
    shown = [(r.locator("th").inner_text(), int(r.locator("td").first.inner_text())) for r in rows]
    assert shown == [(j["code"], j["residents"]) for j in expected["jurisdictions"]]
    assert shown  # the sample's contacts live in US-CA


# Every visible text node's colour against the first opaque background behind it, as WCAG
# 2.x computes contrast; 4.5:1 for normal text, 3:1 for large (24px, or bold from 18.66px).
CONTRAST_JS = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || el.closest("svg, .sr, .skip")) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || !el.getClientRects().length) continue;
    const fg = lum(rgb(style.color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) failures.push(node.textContent.trim().slice(0, 30) + ": " + ratio);
  }
  const unlabelled = [...document.querySelectorAll("input, select, textarea")]
    .filter(e => e.type !== "hidden" && !e.labels.length).map(e => e.name);
  return {failures, unlabelled};
}"""


def test_every_page_has_aa_contrast_and_labelled_fields(server, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/login?next=/search")
    pages = ["/login"]
    assert page.evaluate(CONTRAST_JS) == {"failures": [], "unlabelled": []}, "/login"
    sign_in(page, server, "admin")
    for path in (
        "/search?q=c1",
        "/search?q=c2",
        "/search?q=c3",
        "/search?q=nobody",
        "/campaigns",
        "/campaigns/acme-2026-11",
        "/audit",
        "/users",
        "/campaigns/acme-2026-11/rules",
    ):
        page.goto(server.url + path)
        pages.append(path)
        assert page.evaluate(CONTRAST_JS) == {"failures": [], "unlabelled": []}, path
    assert len(pages) == 10
    context.close()
