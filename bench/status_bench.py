"""Benchmark: `notify status` (first notices and reminder rounds apart) at a million contacts.

Fills a campaign straight in SQL (PostgreSQL: generate_series, so the tally triggers run as
statement triggers, as for a real plan; SQLite: a recursive CTE, row triggers) with one
first-notice email per contact and two reminder rounds for a tenth of them, then times
``notify.status.campaign_status`` (what `notify status` runs) a few times and prints the figures.
The report must not depend on the number of contacts: it reads the tallies only.

    python bench/status_bench.py                        # 1,000,000 contacts on PostgreSQL
    python bench/status_bench.py --contacts 100000 --sqlite
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench_db import add_sent_emails, example_database, series
from sqlalchemy import text

from notify import db
from notify.status import campaign_status


def fill(engine, campaign_id: int, contacts: int, sqlite: bool) -> float:
    """Contacts, their first notices (sent) and two reminder rounds for every tenth."""
    started = time.perf_counter()
    now = "CURRENT_TIMESTAMP"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contacts "
                "(campaign_id, key, email, exposures, created_at, updated_at) "
                f"SELECT :c, 'K' || i, 'u' || i || '@example.com', 'passwords', {now}, {now} "
                f"FROM ({series(sqlite)}) AS g"
            ),
            {"c": campaign_id, "n": contacts},
        )
    for notice, sequence, every in (("notice", 0, 1), ("reminder", 1, 10), ("reminder", 2, 10)):
        with engine.begin() as conn:
            add_sent_emails(conn, campaign_id, notice, sequence, every)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with example_database(args.sqlite, "status-bench-") as (engine, campaign_id, name):
        filled = fill(engine, campaign_id, args.contacts, args.sqlite)
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            with db.session_scope(engine) as session:
                report = campaign_status(session, name)
            timings.append(time.perf_counter() - started)
        rounds = {r["label"]: r["totals"].get("email", 0) for r in report["rounds"]}
        print(f"database:        {'SQLite' if args.sqlite else 'PostgreSQL'}")
        print(f"contacts:        {report['contacts']:,}")
        print(f"rounds:          {rounds}")
        print(f"fill (SQL):      {filled:.1f} s")
        print(
            f"status, median:  {statistics.median(timings) * 1000:.1f} ms "
            f"(min {min(timings) * 1000:.1f}, max {max(timings) * 1000:.1f}, "
            f"{args.repeat} runs)"
        )


if __name__ == "__main__":
    main()
