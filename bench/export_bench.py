"""Benchmark: exports, status and lookup on a campaign of 1,000,000 messages.

Builds a database with ``--contacts`` contacts (default 500,000) x 2 channels = 1,000,000
messages, bulk-inserted with SQLAlchemy Core, plus one password reset per contact with
exposed passwords and one event per message. Then measures:

* ``notify export deliveries`` as a subprocess: wall time and the subprocess's peak RSS
  (from ``wait4``), against the targets 30 s and 300 MB;
* ``notify status`` and ``notify lookup`` (key, email, phone): the library call alone
  (query time) and the whole command in-process (click, connect, format, print), against
  200 ms, plus the subprocess wall time including interpreter start, for information.

Usage::

    python bench/export_bench.py                       # SQLite in a temporary folder
    python bench/export_bench.py --url postgresql+psycopg://postgres@127.0.0.1/bench
    python bench/export_bench.py --contacts 20000 --keep --workdir /tmp/nb

``--reuse`` skips the build when the database already holds the campaign.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notify import campaigns, db, lookup  # noqa: E402
from notify import status as status_mod  # noqa: E402
from notify.models import Contact, Event, Message, PasswordReset  # noqa: E402

CAMPAIGN = "acme-2026-11"
# Not in the schema (yet): makes the per-contact reach of `notify status` an index-only scan.
CHUNK = 10_000
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
EMAIL_STATUSES = [
    ("sent", 80),
    ("delivered", 5),
    ("bounced", 5),
    ("failed", 2),
    ("pending", 3),
    ("skipped", 5),
]
SMS_STATUSES = [
    ("delivered", 60),
    ("sent", 10),
    ("undelivered", 5),
    ("failed", 5),
    ("pending", 10),
    ("skipped", 10),
]
EXPOSURES = ["passwords", "card;passwords", "identity", "card", "identity;passwords"]


def pick(rng: random.Random, table: list[tuple[str, int]]) -> str:
    roll = rng.randrange(100)
    for status, weight in table:
        if roll < weight:
            return status
        roll -= weight
    return table[-1][0]


def email_of(i: int) -> str:
    # Every 7th address has a capitalized local part, as imported from a spreadsheet.
    local = f"User{i}" if i % 7 == 0 else f"user{i}"
    return f"{local}@example{i % 100}.com"


def phone_of(i: int) -> str:
    # Valid numbers (exchanges 321-420 of area code 202): lookup finds by phone only what
    # import could have stored, and import stores valid numbers only.
    return f"+1{2023210000 + i}"


def national(e164: str) -> str:
    """``+12025550100`` -> ``(202) 555-0100``: how a support person types it."""
    d = e164[2:]
    return f"({d[:3]}) {d[3:6]}-{d[6:]}"


def message_row(rng, mid, cid, channel, address, contact_no) -> dict:
    status = pick(rng, EMAIL_STATUSES if channel == "email" else SMS_STATUSES)
    at = T0 + timedelta(seconds=contact_no // 20)
    started = status not in ("pending", "skipped")
    return {
        "id": mid,
        "campaign_id": 1,
        "contact_id": cid,
        "channel": channel,
        "notice": "notice",
        "sequence": 0,
        "is_fallback": False,
        "status": status,
        "skip_reason": f"no {'email' if channel == 'email' else 'phone'}"
        if status == "skipped"
        else None,
        "address": None if status == "skipped" else address,
        "template": f"passwords/{channel}",
        "template_version": "v1" * 8,
        "content_sha256": f"{mid:064x}" if started else None,
        "attempts": 1 if started else 0,
        "provider_message_id": (
            f"<{mid}.1@acme.example>" if channel == "email" else f"SM{mid:032x}"
        )
        if started
        else None,
        "error_code": {
            "bounced": "5.1.1",
            "failed": "550" if channel == "email" else "21610",
            "undelivered": "30003",
        }.get(status),
        "error_message": {
            "bounced": "550 5.1.1 User unknown",
            "failed": "rejected",
            "undelivered": "unreachable handset",
        }.get(status),
        "first_attempt_at": at if started else None,
        "sent_at": at + timedelta(seconds=1) if status in ("sent", "delivered") else None,
        "delivered_at": at + timedelta(seconds=9) if status == "delivered" else None,
        "last_event_at": at + timedelta(seconds=9) if started else None,
        "created_at": T0,
    }


def build(engine, contacts: int) -> None:
    """Insert the campaign and its rows in chunks (bounded memory, Core executemany)."""
    rng = random.Random(20261127)
    with db.session_scope(engine) as session:
        campaigns.load_campaign(session, ROOT / "campaigns" / "example.toml")
    started = time.perf_counter()
    for first in range(0, contacts, CHUNK):
        rows_c, rows_m, rows_r, rows_e = [], [], [], []
        for i in range(first, min(first + CHUNK, contacts)):
            cid = i + 1
            exposure = EXPOSURES[i % len(EXPOSURES)]
            rows_c.append(
                {
                    "id": cid,
                    "campaign_id": 1,
                    "key": f"C-{i:07d}",
                    "name": f"Customer {i}",
                    "email": email_of(i),
                    "phone": phone_of(i),
                    "exposures": exposure,
                    "country": "US",
                    "state": "CA",
                    "locale": "en",
                    "extra": None,
                    "created_at": T0,
                    "updated_at": T0,
                }
            )
            for offset, channel, address in ((1, "email", email_of(i)), (2, "sms", phone_of(i))):
                row = message_row(rng, 2 * i + offset, cid, channel, address, i)
                rows_m.append(row)
                rows_e.append(
                    {
                        "campaign_id": 1,
                        "message_id": row["id"],
                        "contact_id": cid,
                        "provider_message_id": None,
                        "at": row["last_event_at"] or T0,
                        "source": "send",
                        "kind": row["status"],
                        "applied": True,
                        "detail": None,
                    }
                )
            if "passwords" in exposure:
                done = rng.random() < 0.3
                rows_r.append(
                    {
                        "campaign_id": 1,
                        "contact_id": cid,
                        "status": "completed" if done else "pending",
                        "completed_at": T0 + timedelta(days=1) if done else None,
                        "completed_via": "webhook" if done else None,
                        "links_sent": 1,
                        "link_expires_at": T0 + timedelta(days=14 if i % 4 else -1),
                        "created_at": T0,
                    }
                )
        with engine.begin() as conn:
            conn.execute(insert(Contact.__table__), rows_c)
            conn.execute(insert(Message.__table__), rows_m)
            conn.execute(insert(PasswordReset.__table__), rows_r)
            conn.execute(insert(Event.__table__), rows_e)
        done_n = min(first + CHUNK, contacts)
        if done_n % 100_000 == 0 or done_n == contacts:
            print(
                f"  built {done_n:,} contacts ({time.perf_counter() - started:.0f} s)", flush=True
            )
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    if not db.is_sqlite(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")  # visibility map for index-only scans


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str, float]:
    """Run ``notify ARGS`` as a subprocess: (wall s, peak RSS bytes, stdout, CPU s)."""
    started = time.perf_counter()
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "notify", *args],
        env=env,
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    output = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"notify {' '.join(args)} failed ({proc.returncode}):\n{output}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss * 1024, output, cpu  # Linux reports ru_maxrss in kB


def timed(fn, repeat: int = 5) -> tuple[float, float]:
    """(first call ms, median of the following calls ms)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times[0], statistics.median(times[1:]) if len(times) > 1 else times[0]


def in_process_cli(url: str, args: list[str], expect: int = 0) -> float:
    """Milliseconds for the whole command run in-process (click, connect, query, print)."""
    from click.testing import CliRunner

    from notify.cli import main

    runner = CliRunner()
    started = time.perf_counter()
    result = runner.invoke(main, args, env={"NOTIFY_DATABASE_URL": url}, catch_exceptions=False)
    elapsed = (time.perf_counter() - started) * 1000
    if result.exit_code != expect:
        raise SystemExit(f"notify {' '.join(args)} exited {result.exit_code}: {result.output}")
    return elapsed


def not_found(session, query: str) -> None:
    """A lookup that must find nothing (support's most common miss), timed like the others.
    A miss is an answer with ``matches`` 0 (lookup raises NotFound only for a campaign)."""
    if lookup.lookup(session, query)["matches"]:
        raise SystemExit(f"lookup {query!r} unexpectedly found someone")


def measure_queries(engine, url: str, contacts: int) -> dict:
    figures: dict = {}
    i = contacts // 2 + 7 - (contacts // 2) % 7  # a contact with a capitalized local part
    queries = {
        "status": lambda s: status_mod.campaign_status(s, CAMPAIGN),
        "lookup key": lambda s: lookup.lookup(s, f"C-{i:07d}"),
        "lookup email (other case)": lambda s: lookup.lookup(s, email_of(i).upper()),
        "lookup email (as stored)": lambda s: lookup.lookup(s, email_of(i)),
        "lookup phone": lambda s: lookup.lookup(s, national(phone_of(i))),
        "lookup unknown email": lambda s: not_found(s, "nobody@nowhere.example"),
    }
    cli_args = {
        "status": ["status", CAMPAIGN],
        "lookup key": ["lookup", f"C-{i:07d}"],
        "lookup email (other case)": ["lookup", email_of(i).upper()],
        "lookup email (as stored)": ["lookup", email_of(i)],
        "lookup phone": ["lookup", national(phone_of(i))],
        "lookup unknown email": ["lookup", "nobody@nowhere.example"],
    }
    for name, query in queries.items():

        def once(query=query):
            with db.session_scope(engine) as session:
                query(session)

        first, median = timed(once)
        expect = 1 if "unknown" in name else 0
        in_proc = [in_process_cli(url, cli_args[name], expect) for _ in range(3)]
        figures[name] = {
            "query_first_ms": round(first, 1),
            "query_ms": round(median, 1),
            "command_ms": round(statistics.median(in_proc), 1),
        }
    return figures


def status_parts(engine) -> dict[str, float]:
    """Milliseconds of each query of `notify status` (median of 3), to see what costs."""
    from notify.models import utcnow

    parts = {
        "tallies": status_mod.read_tallies,
        "resets (expired links)": lambda s, cid: status_mod._reset_counts(
            s, status_mod.read_tallies(s, cid), cid, utcnow()
        ),
    }
    out = {}
    with db.session_scope(engine) as session:
        campaign_id = campaigns.get_campaign(session, CAMPAIGN).id
        for name, fn in parts.items():
            out[name] = round(timed(lambda fn=fn: fn(session, campaign_id), 3)[1], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="database URL (default: SQLite in --workdir)")
    parser.add_argument("--contacts", type=int, default=500_000)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--reuse", action="store_true", help="reuse an existing database")
    parser.add_argument("--json", action="store_true", help="also print figures as JSON")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="notify-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url = args.url or f"sqlite:///{workdir / 'bench.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    with engine.connect() as conn:
        existing = conn.execute(select(func.count()).select_from(Message)).scalar()
    if existing and not args.reuse:
        raise SystemExit(f"{db.mask_url(url)} already has messages; use --reuse or a new DB")
    if not existing:
        print(
            f"Building {args.contacts:,} contacts x 2 channels in {db.mask_url(url)} ...",
            flush=True,
        )
        started = time.perf_counter()
        build(engine, args.contacts)
        print(f"Built in {time.perf_counter() - started:.0f} s", flush=True)
    with engine.connect() as conn:
        messages = conn.execute(select(func.count()).select_from(Message)).scalar()
        contacts = conn.execute(select(func.count()).select_from(Contact)).scalar()
    env = {**os.environ, "NOTIFY_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    out_csv = workdir / "deliveries.csv"
    load = os.getloadavg()[0]
    wall, rss, _, cpu = run_cli(
        ["export", "deliveries", CAMPAIGN, "-o", str(out_csv)], env, workdir
    )
    with open(out_csv, "rb") as handle:
        rows = sum(1 for _ in handle) - 1
    figures = {
        "database": engine.dialect.name,
        "messages": messages,
        "contacts": contacts,
        "load_average": round(load, 1),
        "cpus": os.cpu_count(),
        "export_deliveries": {
            "seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2),
            "peak_rss_mb": round(rss / 2**20, 1),
            "rows": rows,
            "csv_mb": round(out_csv.stat().st_size / 2**20, 1),
            "ok": wall <= 30 and rss <= 300 * 2**20,
        },
    }
    queries = measure_queries(engine, url, contacts)
    for name, argv in (("status", ["status", CAMPAIGN]), ("lookup key", ["lookup", "C-0000007"])):
        queries[name]["subprocess_ms"] = round(run_cli(argv, env, workdir)[0] * 1000, 1)
    queries["status"]["parts_ms"] = status_parts(engine)
    figures["queries"] = queries
    print_figures(figures)
    if args.json:
        print(json.dumps(figures))
    engine.dispose()
    if not args.keep and not args.workdir and not args.url:
        shutil.rmtree(workdir, ignore_errors=True)


def print_figures(figures: dict) -> None:
    export = figures["export_deliveries"]
    print(
        f"\n{figures['database']}: {figures['messages']:,} messages, "
        f"{figures['contacts']:,} contacts (load average {figures['load_average']} on "
        f"{figures['cpus']} CPUs)"
    )
    verdict = "OK" if export["ok"] else "OVER TARGET"
    print(
        f"export deliveries: {export['seconds']} s ({export['cpu_seconds']} s CPU), "
        f"peak RSS {export['peak_rss_mb']} MB, "
        f"{export['rows']:,} rows, {export['csv_mb']} MB CSV  [{verdict}: <= 30 s, "
        "<= 300 MB]"
    )
    for name, data in figures["queries"].items():
        ok = "OK" if data["query_ms"] < 200 and data["command_ms"] < 200 else "OVER 200 ms"
        extra = f", subprocess {data['subprocess_ms']} ms" if "subprocess_ms" in data else ""
        print(
            f"{name:<28} query {data['query_ms']} ms (first {data['query_first_ms']} ms), "
            f"whole command in-process {data['command_ms']} ms{extra}  [{ok}]"
        )
        if "parts_ms" in data:
            print(" " * 29 + ", ".join(f"{k} {v} ms" for k, v in data["parts_ms"].items()))


if __name__ == "__main__":
    main()
