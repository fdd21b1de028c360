"""Web accounts (`notify users`), password checks with the lockout, signed session cookies,
and the support search's name matching; the browser tests are in tests/test_web.py."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from notify import db
from notify.cli import main
from notify.models import WebUser
from notify.web import auth, search, users
from tests.test_status import NOW, T0, seed_sample

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _database(request):
    """CLI tests run on a database set up before: only init, campaign load and demo create
    one (`notify users` refuses a missing SQLite file)."""
    if "env" in request.fixturenames:
        db.connect(request.getfixturevalue("env")["NOTIFY_DATABASE_URL"])


def run(*args, stdin=None):
    return CliRunner().invoke(main, list(args), input=stdin)


def test_users_add_list_remove(env):
    added = run(
        "users", "add", "alice", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert added.exit_code == 0, added.output
    assert (
        run(
            "users", "add", "bob", "--role", "support", "--password-stdin", stdin=PASSWORD + "\n"
        ).exit_code
        == 0
    )
    listed = json.loads(run("users", "list", "--format", "json").output)
    assert [(u["name"], u["role"], u["locked_until"]) for u in listed] == [
        ("alice", "admin", None),
        ("bob", "support", None),
    ]
    assert run("users", "list", "--format", "csv").output.splitlines() == [
        "name,role,locked_until,last_login_at,created_at",
        f"alice,admin,,,{listed[0]['created_at']}",
        f"bob,support,,,{listed[1]['created_at']}",
    ]
    assert run("users", "list", "--csv").output == run("users", "list", "--format", "csv").output
    table = run("users", "list").output.splitlines()
    assert table[0].split() == ["name", "role", "locked_until", "last_login_at", "created_at"]
    assert table[1].split()[:4] == ["alice", "admin", "-", "-"]
    assert table[1].endswith(" UTC")  # times on screen in the screen zone (UTC here)
    removed = run("users", "remove", "bob")
    assert removed.exit_code == 0 and "Removed user 'bob'" in removed.output
    assert [u["name"] for u in json.loads(run("users", "list", "--format", "json").output)] == [
        "alice"
    ]
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        stored = session.query(WebUser).one()
        assert stored.password_hash.startswith("$argon2id$")
        assert PASSWORD not in stored.password_hash
        from notify.audit import records

        trail = [
            (r.command, r.arguments) for r in records(session) if r.command.startswith("users")
        ]
    assert trail == [
        ("users add", {"name": "alice", "role": "admin"}),
        ("users add", {"name": "bob", "role": "support"}),
        ("users remove", {"name": "bob", "role": "support"}),
    ]


def test_users_add_prompts_for_the_password_twice(env):
    result = run("users", "add", "carol", "--role", "compliance", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (
            ["users", "add", "al ice", "--role", "admin", "--password-stdin"],
            PASSWORD,
            "user name 'al ice': use 1 to 128 characters without spaces",
        ),
        (
            ["users", "add", "al", "--role", "admin", "--password-stdin"],
            "short",
            "the password must be at least 12 characters long",
        ),
        (["users", "remove", "nobody"], None, "no user named 'nobody' (see: notify users list)"),
    ],
)
def test_bad_input_is_one_line(env, args, stdin, message):
    result = run(*args, stdin=stdin and stdin + "\n")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"Error: {message}"


def test_a_name_cannot_be_added_twice(env):
    for expected in (0, 1):
        result = run(
            "users", "add", "al", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
        )
        assert result.exit_code == expected
    assert "already exists" in result.output


def test_unknown_role_is_refused(env):
    result = run("users", "add", "al", "--role", "root", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.exit_code == 2 and "'root' is not one of" in result.output


def test_lockout_after_repeated_failures_then_it_lapses(engine):
    with db.session_scope(engine) as session:
        users.add_user(session, "al", "support", PASSWORD)
    for attempt in range(1, users.MAX_FAILED + 1):
        with db.session_scope(engine) as session:
            result = users.authenticate(session, "al", "wrong password!", now=T0)
        assert result.reason == ("locked" if attempt == users.MAX_FAILED else "wrong")
    with db.session_scope(engine) as session:  # locked: even the right password
        assert users.authenticate(session, "al", PASSWORD, now=T0).reason == "locked"
    later = T0 + users.LOCKOUT + timedelta(seconds=1)
    with db.session_scope(engine) as session:
        result = users.authenticate(session, "al", PASSWORD, now=later)
        assert result.reason == "ok" and result.user.last_login_at == later
    with db.session_scope(engine) as session:
        assert users.authenticate(session, "nobody", PASSWORD, now=T0).reason == "wrong"


def test_session_cookie_is_signed_and_expires():
    key, other = b"k" * 32, b"o" * 32
    cookie, lifetime = auth.new_session(key, "al", 3, now=1000)
    assert lifetime == auth.SESSION_LIFETIME.total_seconds()
    read = auth.read_session(key, cookie, now=1001)
    assert (read.name, read.epoch) == ("al", 3)
    assert auth.read_session(key, cookie, now=1000 + lifetime) is None  # expired
    assert auth.read_session(other, cookie, now=1001) is None  # another key
    body, _, signature = cookie.partition(".")
    forged = auth._pack(b"x", ["admin", "3", "99999999999", "n"]).split(".")[0]
    assert auth.read_session(key, f"{forged}.{signature}", now=1001) is None
    token = auth.csrf_token(key, read.nonce)
    assert auth.csrf_ok(key, read.nonce, token)
    assert not auth.csrf_ok(key, read.nonce + "x", token)
    assert not auth.csrf_ok(key, read.nonce, "")


def test_signing_key_is_created_once_and_kept(engine, monkeypatch):
    monkeypatch.delenv(auth.SECRET_ENV, raising=False)
    first = auth.signing_key(engine)
    assert len(first) == 32 and auth.signing_key(engine) == first
    monkeypatch.setenv(auth.SECRET_ENV, "shared by the servers behind the proxy")
    assert auth.signing_key(engine) != first


@pytest.mark.parametrize("query", ["Ann Example", "ann example", "ANN EXAMPLE", "  Ann   Example "])
def test_name_search_on_the_index(engine, campaign_file, query):
    seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        found = search.search(session, query, now=NOW)
    assert [c["key"] for c in found] == ["c1"]
    assert found[0]["web_verdict"].text == (
        "Reached by email on 2026-11-27 10:02 UTC, SMS failed (21610 opted out)"
    )


def test_name_search_uses_the_name_index(engine):
    from sqlalchemy import inspect

    assert "ix_contacts_name" in {i["name"] for i in inspect(engine).get_indexes("contacts")}


@pytest.mark.parametrize(
    "key, kind, text",
    [
        (
            "c2",
            "unreached",
            "Not reached: email bounced (5.1.1 =cmd|' /C calc'!A0), "
            "SMS undelivered (30003 unreachable handset)",
        ),
        ("c3", "waiting", "Not reached yet: email pending (not sent yet), SMS skipped (no phone)"),
        ("c4", "waiting", "Not contacted yet: no message has been planned for this customer."),
        (
            "c5",
            "reached",
            "Reached by email on 2026-11-27 10:02 UTC, SMS delivered 2026-11-27 10:02 UTC",
        ),
    ],
)
def test_verdicts(engine, campaign_file, key, kind, text):
    seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        verdict = search.search(session, key, now=NOW)[0]["web_verdict"]
    assert (verdict.kind, verdict.text) == (kind, text)


def test_nobody_is_an_empty_answer(engine, campaign_file):
    seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        assert search.search(session, "Zed Nobody", now=NOW) == []
        assert search.search(session, "   ", now=NOW) == []


def test_users_add_without_a_terminal_names_the_flag(env, tmp_path):
    """A script that forgets --password-stdin: one line naming the flag, not getpass's warning
    that the password may be echoed followed by "Aborted!"."""
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "notify", "users", "add", "dave", "--role", "support"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: no terminal to ask for the password on: pipe it in with --password-stdin\n"
    )
    assert run("users", "list", "--format", "json").output.strip() == "[]"


# --- an unknown name cannot be told from an account ------------------------------------------


@pytest.fixture
def fresh_unknown_names():
    """Each test starts with no failures counted for unknown names (the table is global)."""
    users.UNKNOWN_NAMES.clear()
    yield users.UNKNOWN_NAMES
    users.UNKNOWN_NAMES.clear()


def _attempts(engine, name: str, passwords: list[str], now) -> list[tuple]:
    answers = []
    for password in passwords:
        with db.session_scope(engine) as session:
            result = users.authenticate(session, name, password, now=now)
            answers.append((result.reason, result.locked_until))
    return answers


def test_an_unknown_name_locks_like_an_account(engine, fresh_unknown_names):
    """The same answers, in the same order, lock included, for a name with no account."""
    with db.session_scope(engine) as session:
        users.add_user(session, "al", "support", PASSWORD)
    tries = ["wrong password!"] * users.MAX_FAILED + [PASSWORD]
    real = _attempts(engine, "al", tries, T0)
    made_up = _attempts(engine, "zed", tries, T0)
    assert made_up == real
    assert [reason for reason, _ in made_up] == ["wrong"] * (users.MAX_FAILED - 1) + [
        "locked",
        "locked",
    ]
    later = T0 + users.LOCKOUT + timedelta(seconds=1)  # the lock lapses for both alike
    assert _attempts(engine, "zed", ["x" * 12], later) == [("wrong", None)]
    assert _attempts(engine, "al", ["x" * 12], later) == [("wrong", None)]


def test_every_attempt_costs_one_argon2_check(engine, fresh_unknown_names, monkeypatch):
    """Wrong, unknown and locked all verify one hash with the same parameters, so the time a
    refusal takes does not tell whether the name exists."""
    with db.session_scope(engine) as session:
        users.add_user(session, "al", "support", PASSWORD)
    checked: list[str] = []
    real_verify = users._verify
    monkeypatch.setattr(
        users,
        "_verify",
        lambda hashed, password: checked.append(hashed) or real_verify(hashed, password),
    )
    tries = ["wrong password!"] * (users.MAX_FAILED + 2)
    for name in ("al", "zed"):
        checked.clear()
        _attempts(engine, name, tries, T0)
        assert len(checked) == len(tries), name  # locked answers check a hash too
    assert not users._HASHER.check_needs_rehash(users._DUMMY_HASH)  # same cost as a real one


def test_unknown_names_are_bounded_and_hashed(engine, fresh_unknown_names, monkeypatch):
    monkeypatch.setattr(fresh_unknown_names, "limit", 3)
    for name in ("n1", "n2", "n3", "n4", "n5"):
        fresh_unknown_names.get(name)
    assert len(fresh_unknown_names) == 3  # the least recently tried are forgotten
    assert all(isinstance(key, bytes) for key in fresh_unknown_names._rows)
    assert b"n5" not in b"".join(fresh_unknown_names._rows)


async def _login(client, name: str, password: str) -> tuple[int, str]:
    import re

    page = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
    resp = await client.post(
        "/login",
        data={"csrf": csrf, "next": "/search", "name": name, "password": password},
        allow_redirects=False,
    )
    text = await resp.text()
    found = re.search(r'id="login-message"[^>]*>(.*?)<', text, re.S)
    return resp.status, " ".join(found.group(1).split()) if found else ""


async def test_sign_in_page_answers_alike_for_real_and_made_up_names(engine, fresh_unknown_names):
    """Through the web view: the same status codes and messages, word for word, and the
    typed password is in no audit record."""
    from aiohttp.test_utils import TestClient, TestServer

    from notify.audit import records
    from notify.server import make_app
    from notify.web import pages
    from tests.test_webhooks import settings

    with db.session_scope(engine) as session:
        users.add_user(session, "al", "support", PASSWORD)
    app = make_app(engine, settings())
    app[pages.STATE].clock = lambda: T0
    app[pages.STATE].secure_cookies = False  # the test client speaks plain HTTP
    tries = [f"guess number {i}!" for i in range(users.MAX_FAILED)] + [PASSWORD]
    answers: dict[str, list[tuple[int, str]]] = {}
    async with TestClient(TestServer(app)) as client:
        for name in ("al", "zed"):
            answers[name] = [await _login(client, name, password) for password in tries]
    assert answers["zed"] == answers["al"]
    wrong = (401, "Wrong user name or password.")
    locked = (
        429,
        "Too many failed sign-ins: this account is locked until 2026-11-27 10:17 UTC. "
        "Wait, or ask an admin.",
    )
    assert answers["al"] == [wrong] * (users.MAX_FAILED - 1) + [locked, locked]
    with db.session_scope(engine) as session:
        trail = [r for r in records(session) if r.command == "web sign-in"]
        stored = json.dumps([(r.arguments, r.actor, r.outcome) for r in trail], default=str)
    assert len(trail) == 2 * len(tries)
    assert not any(password in stored for password in tries)


# --- notify users unlock ----------------------------------------------------------------------


def test_users_unlock_clears_the_lock_and_the_count(env):
    assert (
        run(
            "users", "add", "bob", "--role", "support", "--password-stdin", stdin=PASSWORD + "\n"
        ).exit_code
        == 0
    )
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    _attempts(engine, "bob", ["wrong password!"] * users.MAX_FAILED, T0)
    with db.session_scope(engine) as session:
        assert users.authenticate(session, "bob", PASSWORD, now=T0).reason == "locked"
    unlocked = run("users", "unlock", "bob")
    assert unlocked.exit_code == 0, unlocked.output
    assert unlocked.output == "Unlocked user 'bob': they can sign in again.\n"
    listed = json.loads(run("users", "list", "--format", "json").output)
    assert listed[0]["locked_until"] is None
    # The count starts from zero again: four more wrong passwords do not lock.
    assert _attempts(engine, "bob", ["wrong password!"] * (users.MAX_FAILED - 1), T0) == [
        ("wrong", None)
    ] * (users.MAX_FAILED - 1)
    with db.session_scope(engine) as session:
        assert users.authenticate(session, "bob", PASSWORD, now=T0).reason == "ok"
        from notify.audit import records

        trail = [(r.command, r.arguments) for r in records(session) if r.command == "users unlock"]
    assert trail == [("users unlock", {"name": "bob", "role": "support"})]


def test_users_unlock_of_an_unknown_user_is_one_line(env):
    result = run("users", "unlock", "nobody")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: no user named 'nobody' (see: notify users list)"
    ]


# --- the support search finds part of a name ---------------------------------------------------

MORE_NAMES = {
    "n1": "Anna Schmidt",
    "n2": "Hans SCHMIDT-Weber",
    "n3": "Schmidt Anna",
    "n4": "100% Real_Name",
    "n5": "Carl Nash",
}


def seed_names(engine, campaign_file) -> None:
    """The sample campaign plus the names above (keys n1..n5)."""
    from notify.models import Contact

    seed_sample(engine, campaign_file)
    with db.session_scope(engine) as session:
        campaign_id = session.query(Contact.campaign_id).first()[0]
        for key, name in MORE_NAMES.items():
            session.add(Contact(campaign_id=campaign_id, key=key, name=name, exposures="card"))


@pytest.mark.parametrize(
    "query, keys",
    [
        ("Schmidt", ["n1", "n2", "n3"]),  # any case, anywhere in the name
        ("schmidt", ["n1", "n2", "n3"]),
        ("anna schm", ["n1"]),  # every word, in the order typed
        ("schm  ANNA", ["n3"]),
        ("dt-we", ["n2"]),
        ("Ann Example", ["c1"]),  # the whole name still finds it
        ("ann", ["c1", "n1", "n3"]),
        ("0% real", ["n4"]),  # % and _ are literal, not wildcards
        ("l_n", ["n4"]),  # not "Carl Nash"
        ("%", []),
        ("a%", []),
        ("_", []),
        ("Zed", []),
    ],
)
def test_name_search_matches_part_of_a_name(engine, campaign_file, query, keys):
    seed_names(engine, campaign_file)
    with db.session_scope(engine) as session:
        found = search.search(session, query, now=NOW, parts=True)
    assert [c["key"] for c in found] == keys


def test_exact_names_come_first_and_more_says_narrow_it(engine, campaign_file, monkeypatch):
    seed_names(engine, campaign_file)
    with db.session_scope(engine) as session:
        assert search.answer(session, "schmidt anna", now=NOW, parts=True).note is None
        monkeypatch.setattr(search, "MAX_RESULTS", 2)
        # exact spelling: n3 first
        shown = search.answer(session, "schmidt anna", now=NOW, parts=True)
        assert [c["key"] for c in shown.contacts] == ["n3"]
        many = search.answer(session, "schmidt", now=NOW, parts=True)
    assert ([c["key"] for c in many.contacts], many.note) == (["n1", "n2"], search.MORE)


def test_a_key_email_or_phone_is_not_scanned_for_as_a_name(engine, campaign_file, monkeypatch):
    seed_names(engine, campaign_file)

    def no_scan(*args):
        raise AssertionError("scanned names for a key, an email or a phone")

    monkeypatch.setattr(search, "_name_part_rows", no_scan)
    with db.session_scope(engine) as session:
        for query in ("c1", "ann.example@EXAMPLE.com", "(415) 555-0101", "4155550101"):
            found = search.search(session, query, now=NOW, parts=True)
            assert [c["key"] for c in found] == ["c1"]


def test_a_name_is_not_scanned_for_unless_asked_and_then_offered(
    engine, campaign_file, monkeypatch
):
    """The default search stays on the index (well under 100 ms at a million contacts): no
    scan, and a name-like query says the part match is still to be asked for."""
    seed_names(engine, campaign_file)

    def no_scan(*args):
        raise AssertionError("scanned names without being asked to")

    monkeypatch.setattr(search, "_name_part_rows", no_scan)
    with db.session_scope(engine) as session:
        exact = search.answer(session, "anna schmidt", now=NOW)
        missed = search.answer(session, "schm", now=NOW)
        address = search.answer(session, "nobody@example.com", now=NOW)
    assert ([c["key"] for c in exact.contacts], exact.part_unsearched) == (["n1"], True)
    assert (missed.contacts, missed.part_unsearched) == ([], True)
    assert (address.contacts, address.part_unsearched) == ([], False)


def test_a_scan_over_its_time_stops_and_the_transaction_goes_on(engine):
    """The bound on the part-of-a-name scan: a statement running longer is stopped (SQLite's
    progress handler, PostgreSQL's statement_timeout), and the search's transaction still
    commits its audit records."""
    from sqlalchemy import text

    from notify.audit import record, records

    slow = (
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100000000) "
        "SELECT count(*) FROM s"
        if engine.dialect.name == "sqlite"
        else "SELECT pg_sleep(5)"
    )
    with db.session_scope(engine) as session:
        with pytest.raises(search._TooSlow), search._time_limit(session, 0.05):
            session.execute(text(slow))
        with search._time_limit(session, 5):  # a quick one is untouched
            assert session.scalar(text("SELECT 1")) == 1
        record(session, "web search", arguments={"query": "x"}, actor="al")
    if engine.dialect.name != "sqlite":
        with db.session_scope(engine) as session:  # the limit did not outlive the scan
            assert session.scalar(text("SHOW statement_timeout")) == "0"
    with db.session_scope(engine) as session:
        assert [r.command for r in records(session)] == ["web search"]


async def test_search_page_says_when_it_stopped_or_shows_only_some(
    engine, campaign_file, monkeypatch, fresh_unknown_names
):
    """A cut-short scan never says "Not in this breach"; too many matches say to narrow it;
    the audit counts the note."""
    from aiohttp.test_utils import TestClient, TestServer

    from notify.audit import records
    from notify.server import make_app
    from notify.web import pages
    from tests.test_webhooks import settings

    seed_names(engine, campaign_file)
    with db.session_scope(engine) as session:
        users.add_user(session, "al", "support", PASSWORD)
    app = make_app(engine, settings())
    app[pages.STATE].secure_cookies = False
    async with TestClient(TestServer(app)) as client:
        assert (await _login(client, "al", PASSWORD))[0] == 303
        monkeypatch.setattr(search, "MAX_RESULTS", 2)
        many = await (await client.get("/search", params={"q": "schmidt", "part": "1"})).text()
        assert "only the first 2 are shown. Type more of the name" in many

        def too_slow(*args):
            raise search._TooSlow()

        monkeypatch.setattr(search, "_name_part_rows", too_slow)
        stopped = await (
            await client.get("/search", params={"q": "Nobody Atall", "part": "1"})
        ).text()
    assert "Search stopped early" in stopped and "Not in this breach" not in stopped
    with db.session_scope(engine) as session:
        counts = [r.counts for r in records(session) if r.command == "web search"]
    assert counts == [{"matches": 2, "more": 1}, {"matches": 0, "stopped": 1}]


async def test_admin_unlocks_a_locked_account_on_the_users_page(engine, fresh_unknown_names):
    import re

    from aiohttp.test_utils import TestClient, TestServer

    from notify.audit import records
    from notify.server import make_app
    from notify.web import pages
    from tests.test_webhooks import settings

    with db.session_scope(engine) as session:
        users.add_user(session, "al", "admin", PASSWORD)
        users.add_user(session, "bob", "support", PASSWORD)
    _attempts(engine, "bob", ["wrong password!"] * users.MAX_FAILED, T0)
    app = make_app(engine, settings())
    app[pages.STATE].clock = lambda: T0
    app[pages.STATE].secure_cookies = False
    async with TestClient(TestServer(app)) as client:
        assert (await _login(client, "al", PASSWORD))[0] == 303
        listing = await (await client.get("/users")).text()
        assert "Unlock bob" in listing and "Unlock al" not in listing  # only the locked one
        csrf = re.search(r'name="csrf" value="([^"]+)"', listing).group(1)
        done = await client.post("/users", data={"csrf": csrf, "unlock": "bob"})
        after = await done.text()
    assert done.status == 200 and "Unlocked user bob." in after and "Unlock bob" not in after
    with db.session_scope(engine) as session:
        assert users.authenticate(session, "bob", PASSWORD, now=T0).reason == "ok"
        trail = [(r.actor, r.arguments) for r in records(session) if r.command == "users unlock"]
    assert trail == [("al", {"name": "bob", "role": "support"})]
