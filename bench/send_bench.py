"""Send-engine benchmark: throughput against the raw ceiling, CPU per message, rate accuracy,
memory, and SMS against a rate-limited Twilio double. Prints figures and ratios.

    python bench/send_bench.py                 # all parts, default sizes
    python bench/send_bench.py --only a,b      # some parts
    python bench/send_bench.py --contacts 20000 --rss-contacts 200000 --rate-seconds 15

Parts (one run, one loopback sink process that does not parse messages):
  a  ceiling: raw aiosmtplib re-sending one notice exactly as notify rendered it, over the
     same number of connections
  b  `notify send` of N contacts with no rate cap: throughput / ceiling (goal >= 0.4) and the
     notify process's CPU time per message (goal <= 0.6 ms)
  c  `--email-rate 200` for >= 15 s: measured rate (goal within 3% of 200) and the busiest
     one-second window (goal <= 202)
  d  peak RSS of `notify send` for 200,000 contacts (goal <= 400 MB)
  s  SMS: `--sms-rate 50` against the Twilio double limited to 50/s: rate held, no 429 lost
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from notify import campaigns, db, mime, templates  # noqa: E402
from notify.models import Contact  # noqa: E402
from tests.smtp_sink import window_max  # noqa: E402
from tests.standalone import start_process  # noqa: E402

CONCURRENCY = 10
# Enough messages in flight to cover one message's round trip at 200/s on a busy machine.
RATE_CONCURRENCY = 20


def make_db(folder: Path, contacts: int, channels: str) -> tuple[str, str]:
    """A fresh SQLite database with the example campaign and ``contacts`` contacts."""
    url = f"sqlite:///{folder / 'bench.db'}"
    engine = db.connect(url)
    toml = (ROOT / "campaigns" / "example.toml").read_text()
    toml = toml.replace('channels = ["email", "sms"]', f"channels = {channels}")
    path = folder / "campaign.toml"
    path.write_text(toml)
    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, path)
        campaign_id = campaign.id
    rows = []
    with engine.begin() as conn:
        for i in range(contacts):
            rows.append(
                {
                    "campaign_id": campaign_id,
                    "key": f"K{i:07d}",
                    "name": f"Customer {i}",
                    "email": f"user{i}@example.com",
                    "phone": f"+1415{5550000 + i % 10000:07d}" if channels != '["email"]' else None,
                    "exposures": ("card", "identity;card", "passwords")[i % 3],
                    "extra": {},
                }
            )
            if len(rows) == 20000:
                conn.execute(insert(Contact.__table__), rows)
                rows = []
        if rows:
            conn.execute(insert(Contact.__table__), rows)
    engine.dispose()
    db._engine_for.cache_clear()
    return url, "acme-2026-11"


def run_notify(env: dict, args: list[str]) -> dict:
    """Run `notify` as a child; returns wall time, CPU seconds and peak RSS (sampled)."""
    start = time.monotonic()
    proc = psutil.Popen(
        [sys.executable, "-m", "notify", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    peak = 0
    cpu = 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
            times = proc.cpu_times()
            cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"notify {' '.join(args)} failed: {err.decode()[-2000:]}")
    # Exact CPU of the finished child, from the kernel's accounting of reaped children.
    return {"wall": time.monotonic() - start, "cpu": cpu, "peak_rss": peak, "out": out.decode()}


def child_cpu(before: os.times_result) -> float:
    """CPU seconds used by children reaped since ``before``."""
    now = os.times()
    return (now.children_user - before.children_user) + (
        now.children_system - before.children_system
    )


def import_only_cpu(env: dict) -> float:
    """CPU seconds of a notify process that starts, imports everything and exits."""
    before = os.times()
    subprocess.run(
        [sys.executable, "-c", "import notify.cli, notify.send.runner, notify.transports.smtp"],
        env=env,
        cwd=ROOT,
        check=True,
    )
    return child_cpu(before)


def render_one(url: str) -> bytes:
    """One notice exactly as notify renders it (for the raw ceiling)."""
    engine = db.connect(url)
    with db.session_scope(engine) as session:
        campaign = campaigns.get_campaign(session, "acme-2026-11")
        contact = session.query(Contact).first()
        notices = templates.notices_for(session, campaign)
        view = templates.ContactView.from_model(contact)
        config = campaigns.config_of(campaign)
        rendered = notices.render_email(view, reset_url=None)
        return mime.build_email(
            config, rendered, contact.email, mime.message_id_for(config, campaign.id, 1)
        )


async def raw_ceiling(port: int, data: bytes, count: int, connections: int) -> tuple[float, float]:
    """Messages per second of bare aiosmtplib over ``connections`` reused connections, and
    the CPU seconds per message it took (the floor under notify's own figure)."""
    import aiosmtplib

    per = count // connections

    async def one_connection() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False)
        await client.connect()
        for i in range(per):
            await client.sendmail("security@acme.example", [f"user{i}@example.com"], data)
        await client.quit()

    start, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    sent = per * connections
    return sent / (time.monotonic() - start), (time.process_time() - cpu) / sent


def read_times(record: Path, skip: int = 0) -> list[float]:
    """Arrival times (monotonic, sink process) of recorded messages after the first ``skip``."""
    lines = record.read_text().splitlines()[skip:]
    out = []
    for line in lines:
        data = json.loads(line)
        out.append(data.get("monotonic", data.get("time")))
    return out


def base_env(url: str, folder: Path, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "TWILIO_"))}
    env.update(
        {
            "NOTIFY_DATABASE_URL": url,
            "NOTIFY_OUTBOX": str(folder / "outbox"),
            "NOTIFY_SMTP_HOST": "127.0.0.1",
            "NOTIFY_SMTP_PORT": str(port),
            "NOTIFY_SMTP_TLS": "none",
        }
    )
    return env


def part_ab(port: int, record: Path, contacts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, name = make_db(folder, contacts, '["email"]')
        data = render_one(url)
        ceiling, raw_cpu = asyncio.run(raw_ceiling(port, data, contacts, CONCURRENCY))
        print(
            f"(a) ceiling: raw aiosmtplib, {CONCURRENCY} connections, {len(data)} B notice: "
            f"{ceiling:,.0f} msg/s, its CPU {raw_cpu * 1000:.3f} ms per message"
        )
        env = base_env(url, folder, port)
        startup = import_only_cpu(env)
        before = os.times()
        res = run_notify(
            env, ["send", name, "--yes", "--email-rate", "0", "--concurrency", str(CONCURRENCY)]
        )
        cpu = child_cpu(before)
        rate = contacts / res["wall"]
        per_msg = (cpu - startup) / contacts * 1000
        print(
            f"(b) notify send {contacts:,} contacts, no rate cap: {res['wall']:.1f} s, "
            f"{rate:,.0f} msg/s = {rate / ceiling:.2f} of the ceiling (goal >= 0.40)"
        )
        print(
            f"    CPU of the notify process: {cpu:.1f} s in all, {startup:.2f} s of it "
            f"start-up; {per_msg:.3f} ms per message (goal <= 0.6 ms); "
            f"peak RSS {res['peak_rss'] / 2**20:.0f} MB"
        )


def part_c(port: int, record: Path, seconds: float) -> None:
    rate = 200
    contacts = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, name = make_db(folder, contacts, '["email"]')
        skip = len(record.read_text().splitlines()) if record.exists() else 0
        res = run_notify(
            base_env(url, folder, port),
            [
                "send",
                name,
                "--yes",
                "--email-rate",
                str(rate),
                "--concurrency",
                str(RATE_CONCURRENCY),
            ],
        )
        times = sorted(read_times(record, skip))
        measured = (len(times) - 1) / (times[-1] - times[0])
        busiest = window_max(times, 1.0)
        print(
            f"(c) --email-rate {rate} --concurrency {RATE_CONCURRENCY} for {contacts:,} "
            f"messages ({res['wall']:.1f} s): "
            f"measured {measured:.1f}/s ({(measured / rate - 1) * 100:+.2f}%, goal within "
            f"3%), busiest one-second window {busiest} (goal <= {rate + 2})"
        )


def part_d(port: int, contacts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, name = make_db(folder, contacts, '["email"]')
        res = run_notify(
            base_env(url, folder, port),
            ["send", name, "--yes", "--email-rate", "0", "--concurrency", str(CONCURRENCY)],
        )
        print(
            f"(d) notify send {contacts:,} contacts: {res['wall']:.1f} s "
            f"({contacts / res['wall']:,.0f} msg/s), peak RSS "
            f"{res['peak_rss'] / 2**20:.0f} MB (goal <= 400 MB)"
        )


def part_sms(seconds: float) -> None:
    rate = 50
    contacts = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        record = folder / "sms.jsonl"
        proc, port = start_process(
            "tests.twilio_double",
            "--rate",
            str(rate),
            "--record",
            str(record),
            port_file=folder / "tw.port",
        )
        try:
            url, name = make_db(folder, contacts, '["sms"]')
            from tests.twilio_double import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

            env = base_env(url, folder, 1)
            env.update(
                {
                    "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
                    "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
                    "NOTIFY_TWILIO_API_URL": f"http://127.0.0.1:{port}",
                }
            )
            res = run_notify(
                env,
                [
                    "send",
                    name,
                    "--yes",
                    "--sms-rate",
                    str(rate),
                    "--concurrency",
                    str(CONCURRENCY),
                    "--json",
                ],
            )
            import urllib.request

            stats = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_double/stats").read()
            )
            times = sorted(read_times(record))
            measured = (len(times) - 1) / (times[-1] - times[0])
            summary = json.loads(res["out"].strip().splitlines()[-1])
            print(
                f"(s) --sms-rate {rate} against a double limited to {rate}/s: "
                f"{len(times):,} of {contacts:,} accepted, measured {measured:.1f}/s, "
                f"busiest window {window_max(times, 1.0)}, 429s answered "
                f"{stats.get('rejected_429')}, lost {contacts - len(times)}; "
                f"run: {summary['run']}"
            )
        finally:
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="a,b,c,d,s")
    parser.add_argument("--contacts", type=int, default=20000)
    parser.add_argument("--rss-contacts", type=int, default=200000)
    parser.add_argument("--rate-seconds", type=float, default=15)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "sink.jsonl"
        sink, port = start_process(
            "tests.smtp_sink",
            "--no-parse",
            "--record",
            str(record),
            port_file=Path(tmp) / "sink.port",
        )
        try:
            if parts & {"a", "b"}:
                part_ab(port, record, args.contacts)
            if "c" in parts:
                part_c(port, record, args.rate_seconds)
            if "d" in parts:
                part_d(port, args.rss_contacts)
        finally:
            sink.terminate()
            sink.wait()
    if "s" in parts:
        part_sms(args.rate_seconds)


if __name__ == "__main__":
    main()
