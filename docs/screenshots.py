"""Write a screenshot of each page of the web view to docs/screenshots/ (the README shows them).

Builds a sample campaign in a temporary SQLite database (400 customers notified over forty
minutes by email and SMS, some bounced or failed, password resets completed over a day),
adds one user per role, starts `notify serve` on it and drives Debian's chromium through
playwright (never a downloaded browser):

    python docs/screenshots.py
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notify import campaigns, db  # noqa: E402
from notify.models import Contact, Event, Message, PasswordReset  # noqa: E402
from notify.web import users  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
T0 = datetime(2026, 12, 2, 14, 5, tzinfo=UTC)
PASSWORD = "screenshots only, never a real one"
FIRST = [
    "Ann",
    "Ben",
    "Chloé",
    "Dev",
    "Eva",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jon",
    "Kofi",
    "Lena",
    "Mia",
    "Noor",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
]
LAST = [
    "Evans",
    "Okafor",
    "Martin",
    "Novak",
    "Silva",
    "Kim",
    "Haddad",
    "Jensen",
    "Rossi",
    "Nguyen",
    "Meyer",
    "Patel",
    "Costa",
    "Berg",
    "Dubois",
    "Ito",
    "Moreau",
    "Fischer",
]


def build(url: str) -> None:
    """The sample campaign: contacts, messages with their events, resets."""
    engine = db.make_engine(url)
    db.upgrade(engine)
    rng = random.Random(7)
    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, ROOT / "campaigns" / "example.toml")
        for i in range(400):
            name = "Ann Example" if i == 0 else f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            email = f"{name.lower().replace(' ', '.').replace('é', 'e')}{i}@example.com"
            kinds = rng.choice(["identity;passwords", "card", "passwords", "identity"])
            contact = Contact(
                campaign_id=campaign.id,
                key=f"C-{1000 + i}",
                name=name,
                email=email,
                phone=f"+1415555{i:04d}",
                exposures=kinds,
                country="US",
                state=rng.choice(["CA", "NY", "TX", "WA"]),
            )
            session.add(contact)
            session.flush()
            sent = T0 + timedelta(seconds=i * 6 + rng.randint(0, 5))
            outcomes = [
                (
                    "email",
                    rng.choices(["delivered", "sent", "bounced", "pending"], [70, 18, 8, 4])[0],
                ),
                (
                    "sms",
                    rng.choices(["delivered", "undelivered", "failed", "sending"], [80, 8, 6, 6])[
                        0
                    ],
                ),
            ]
            if i == 0:
                outcomes = [("email", "delivered"), ("sms", "delivered")]
            for channel, status in outcomes:
                address = contact.email if channel == "email" else contact.phone
                at = sent + (timedelta(seconds=40) if channel == "sms" else timedelta())
                handed = status not in ("pending",)
                message = Message(
                    campaign_id=campaign.id,
                    contact_id=contact.id,
                    channel=channel,
                    status=status,
                    address=address,
                    template=f"identity/{channel}",
                    transport=(
                        ("smtp:relay.acme.example" if channel == "email" else "twilio")
                        if handed
                        else None
                    ),
                    attempts=1 if handed else 0,
                    first_attempt_at=at if handed else None,
                    sent_at=at
                    if status in ("sent", "delivered", "bounced", "undelivered")
                    else None,
                    delivered_at=at + timedelta(seconds=5) if status == "delivered" else None,
                    provider_message_id=(
                        f"<{i}.{channel}@acme.example>" if channel == "email" else f"SM{i:032x}"
                    )
                    if handed
                    else None,
                    error_code={"bounced": "5.1.1", "undelivered": "30003", "failed": "21610"}.get(
                        status
                    ),
                    error_message={
                        "bounced": "user unknown",
                        "undelivered": "unreachable handset",
                        "failed": "opted out",
                    }.get(status),
                )
                session.add(message)
                session.flush()
                if handed:
                    for kind, when in (("sending", at), ("sent", at + timedelta(seconds=1))):
                        session.add(
                            Event(
                                campaign_id=campaign.id,
                                message_id=message.id,
                                contact_id=contact.id,
                                at=when,
                                source="send",
                                kind=kind,
                            )
                        )
                    if status in ("delivered", "bounced", "undelivered", "failed"):
                        session.add(
                            Event(
                                campaign_id=campaign.id,
                                message_id=message.id,
                                contact_id=contact.id,
                                at=at + timedelta(seconds=5),
                                source="bounce" if status == "bounced" else "webhook",
                                kind=status,
                            )
                        )
            if "passwords" in kinds:
                done = rng.random() < 0.6 or i == 0
                session.add(
                    PasswordReset(
                        campaign_id=campaign.id,
                        contact_id=contact.id,
                        status="completed" if done else "pending",
                        completed_at=(
                            sent + timedelta(minutes=rng.randint(3, 1400)) if done else None
                        ),
                        completed_via="webhook" if done else None,
                        links_sent=1,
                        link_expires_at=T0 + timedelta(days=14),
                    )
                )
        for role in users.ROLE_RANK:
            users.add_user(session, role, role, PASSWORD)
    engine.dispose()


def main() -> None:
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="notify-screenshots-"))
    url = f"sqlite:///{folder / 'notify.db'}"
    build(url)
    env = {**os.environ, "NOTIFY_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    port = "8791"
    server = subprocess.Popen(
        [sys.executable, "-m", "notify", "serve", "--port", port],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            shots = [
                ("login", "support", None, "/login"),
                ("search", "support", None, "/search?q=Ann+Example"),
                ("search-not-in-breach", "support", None, "/search?q=zoe%40example.org"),
                ("search-phone", "support", (390, 844), "/search?q=(415)+555-0000"),
                ("forbidden", "support", None, "/campaigns/acme-2026-11/deliveries.csv"),
                ("campaign", "compliance", None, "/campaigns/acme-2026-11?refresh=off"),
                ("campaign-phone", "compliance", (390, 844), "/campaigns/acme-2026-11?refresh=off"),
                ("campaigns", "compliance", None, "/campaigns"),
                ("rules", "compliance", None, "/campaigns/acme-2026-11/rules"),
                ("audit", "compliance", None, "/audit"),
                ("users", "admin", None, "/users"),
            ]
            for name, role, size, path in shots:
                width, height = size or (1280, 900)
                context = browser.new_context(
                    viewport={"width": width, "height": height},
                    timezone_id="Europe/London",
                    locale="en-GB",
                )
                page = context.new_page()
                if name != "login":
                    page.goto(base + "/login")
                    page.get_by_label("User name").fill(role)
                    page.get_by_label("Password").fill(PASSWORD)
                    page.get_by_role("button", name="Sign in").click()
                    page.wait_for_url("**/search")
                page.goto(base + path)
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
                print(f"wrote {OUT / f'{name}.png'}")
                context.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
