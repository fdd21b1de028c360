"""A real `notify serve` with the sample campaign and one user per role, for the browser
tests (headless Debian chromium through playwright; no browser is ever downloaded)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from notify import db
from tests.test_status import seed_sample

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"
ROLES = ("support", "compliance", "admin")


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``notify ARGS`` in a child process; fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "notify", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def add_user(env: dict[str, str], name: str, role: str, password: str = PASSWORD) -> None:
    """Create an account the way an operator does: `notify users add --password-stdin`."""
    cli(env, "users", "add", name, "--role", role, "--password-stdin", stdin=password + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running `notify serve`: its base URL and the environment its commands use."""

    url: str
    env: dict[str, str]
    folder: Path

    def audit(self, command: str) -> list[dict]:
        """Audit records whose command starts with ``command`` (via `notify audit`)."""
        engine = db.make_engine(self.env["NOTIFY_DATABASE_URL"])
        try:
            from sqlalchemy import select

            from notify.models import AuditRecord

            with db.session_scope(engine) as session:
                return [
                    {
                        "actor": r.actor,
                        "command": r.command,
                        "campaign": r.campaign,
                        "arguments": r.arguments,
                        "counts": r.counts,
                        "outcome": r.outcome,
                    }
                    for r in session.scalars(
                        select(AuditRecord)
                        .where(AuditRecord.command.startswith(command))
                        .order_by(AuditRecord.id)
                    )
                ]
        finally:
            engine.dispose()

    def status_json(self, campaign: str = "acme-2026-11") -> dict:
        """What `notify status NAME --json` prints."""
        return json.loads(cli(self.env, "status", campaign, "--json").stdout.splitlines()[-1])


@contextmanager
def running_server(db_url: str, folder: Path, campaign_file: Path) -> Iterator[Server]:
    """Seed the sample campaign, add support/compliance/admin users, start `notify serve`."""
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    ids = seed_sample(engine, campaign_file)
    from sqlalchemy import update

    from notify.models import Message
    from notify.web import users

    with db.session_scope(engine) as session:  # where c1's email was handed over
        session.execute(
            update(Message)
            .where(Message.contact_id == ids["c1"], Message.channel == "email")
            .values(transport="smtp:relay.acme.example")
        )

    with db.session_scope(engine) as session:  # `notify users add` is tested on its own
        for role in ROLES:
            users.add_user(session, role, role, PASSWORD)
    engine.dispose()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFY_", "TWILIO_")) or k == "NOTIFY_TEST_POSTGRES_URL"
    }
    env.update(NOTIFY_DATABASE_URL=db_url, NOTIFY_OUTBOX=str(folder / "outbox"))
    port = free_port()
    log = open(folder / "serve.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "notify", "serve", "--port", str(port)],
        env=env,
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"notify serve did not start: {(folder / 'serve.log').read_text()}")
                time.sleep(0.1)
        yield Server(url, env, folder)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def sign_in(page, server: Server, name: str, password: str = PASSWORD) -> None:
    """Fill and send the sign-in form (from whatever page asked for it)."""
    if page.locator("form[action='/login']").count() == 0:
        page.goto(server.url + "/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
