"""Benchmark: a million contacts on PostgreSQL, end to end, with 1 and with 3 send workers.

Steps, each timed, with the peak RSS (VmHWM) and CPU time of every process it ran:

1. import: the CSV of ``bench/import_bench.py`` (generated once, reusable with ``--csv``)
   through ``notify.importer.import_contacts``, in a process of its own (import_bench's child);
2. send, 1 worker: ``notify send NAME --yes --email-rate 0`` (no rate cap) to a loopback SMTP
   sink in its own process (``python -m tests.smtp_sink --no-parse --record ...``), or with
   ``--transport outbox`` to the embedded outbox (one fsynced ``.eml`` per message);
3. send, 3 workers: the campaign's messages are deleted (with their events, tokens and reset
   records, then VACUUM ANALYZE) and three ``notify send`` processes start together;
4. status: ``notify status NAME``;
5. export: ``notify export deliveries NAME -o FILE``.

Each send is checked at the sink: every message arrived exactly once (the record's
Message-IDs), and the database holds them all ``sent``. With the outbox, whose files are named
by message row (a re-send overwrites), the check is one file per expected message and all
``sent``; the outbox costs the worker less CPU than SMTP and needs no sink process, so a
million-contact run takes about half as long on two cores. Messages/s for a send is messages
over the wall time of the whole step (interpreter start, planning the rows, sending, the
last worker's exit); ``sending`` is the rate between the first and last arrival at the sink.
The campaign is email only (the example campaign with ``channels = ["email"]``). Everything
lives in a PostgreSQL schema of its own, dropped afterwards unless ``--keep``.

    python bench/scale_bench.py                            # 1,000,000 contacts
    python bench/scale_bench.py --contacts 20000           # try it small first
    python bench/scale_bench.py --workers 3 --csv /tmp/customers.csv --keep
    python bench/scale_bench.py --transport outbox         # no SMTP sink process
    NOTIFY_BENCH_POSTGRES_URL=postgresql+psycopg://me@db/x python bench/scale_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import import_bench  # noqa: E402 - the CSV generator and the import child live there
from sqlalchemy import create_engine, text  # noqa: E402

from tests.standalone import start_process  # noqa: E402

PG_URL = import_bench.PG_URL
CAMPAIGN = "acme-2026-11"  # the name import_bench's child loads and imports into


@dataclass
class Proc:
    """One finished process: exit code, peak RSS, CPU seconds, when it ended, its output."""

    code: int
    rss_mb: float
    cpu_s: float
    ended: float
    output: str


@dataclass
class Step:
    """One line of the report."""

    name: str
    seconds: float
    items: int
    unit: str
    procs: list[Proc] = field(default_factory=list)
    note: str = ""

    def line(self) -> str:
        """The step as one printable line."""
        rate = self.items / self.seconds if self.seconds else 0.0
        rss = ", ".join(f"{p.rss_mb:,.0f}" for p in self.procs)
        cpu = ", ".join(f"{p.cpu_s:,.1f}" for p in self.procs)
        return (
            f"{self.name:18s} {self.seconds:9.1f} s  {self.items:>10,} {self.unit:8s} "
            f"{rate:>9,.0f}/s  peak RSS MB [{rss}]  CPU s [{cpu}]  {self.note}"
        )


def run_together(
    commands: list[list[str]], env: dict[str, str], cwd: Path
) -> tuple[float, list[Proc]]:
    """Start the commands at once; wall time until the last exits, and each one's figures.

    Each process's own CPU comes from ``wait4`` (getrusage of children would merge them),
    its peak RSS from polling :func:`peak_rss_mb` while it runs.
    """
    started = time.perf_counter()
    outputs = [tempfile.TemporaryFile() for _ in commands]
    popens = [
        subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        for cmd, out in zip(commands, outputs, strict=True)
    ]
    results: list[Proc | None] = [None] * len(popens)

    def reap(index: int, proc: subprocess.Popen) -> None:
        peak = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, peak_rss_mb(proc.pid))
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
        outputs[index].seek(0)
        results[index] = Proc(
            code=proc.returncode,
            rss_mb=peak,
            cpu_s=usage.ru_utime + usage.ru_stime,
            ended=time.perf_counter() - started,
            output=outputs[index].read().decode(errors="replace"),
        )

    threads = [
        threading.Thread(target=reap, args=(i, p), daemon=True) for i, p in enumerate(popens)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:  # Ctrl-C: leave no worker running behind the benchmark
        for proc in popens:
            if proc.returncode is None:
                proc.kill()
        raise
    wall = time.perf_counter() - started
    procs = [r for r in results if r is not None]
    for cmd, proc in zip(commands, procs, strict=True):
        if proc.code != 0:
            raise SystemExit(f"{' '.join(cmd[1:])} failed ({proc.code}):\n{proc.output[-3000:]}")
    return wall, procs


def peak_rss_mb(pid: int) -> float:
    """The process's peak RSS so far (VmHWM), 0 once it is gone.

    Not ``ru_maxrss`` from ``wait4``: Linux starts a child's ``ru_maxrss`` at the peak of the
    process it was forked from, so every child would show at least this benchmark's own size.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


def notify_cmd(*args: str) -> list[str]:
    """``python -m notify ARGS``."""
    return [sys.executable, "-m", "notify", *args]


class Sink:
    """The standalone loopback SMTP sink (its own process), recording one line per message."""

    def __init__(self, workdir: Path, label: str) -> None:
        self.record = workdir / f"sink-{label}.jsonl"
        self.record.unlink(missing_ok=True)
        self.proc, self.port = start_process(
            "tests.smtp_sink",
            "--record",
            str(self.record),
            "--no-parse",
            port_file=workdir / f"sink-{label}.port",
            timeout=30,
        )

    def stop(self) -> tuple[float, float]:
        """Stop it; returns its (CPU seconds, peak RSS MB)."""
        peak = peak_rss_mb(self.proc.pid)
        self.proc.terminate()
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = 0
        return usage.ru_utime + usage.ru_stime, peak


def campaign_file(workdir: Path) -> Path:
    """The example campaign, email only, under the name import_bench's child imports into."""
    source = (import_bench.CAMPAIGN).read_text()
    lines = []
    for line in source.splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "channels":
            line = 'channels = ["email"]'
        elif key == "fallback":
            line = 'fallback = "none"'
        lines.append(line)
    path = workdir / "campaign.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def import_step(url: str, csv_path: Path, rows: int) -> Step:
    """import_bench's child: the example campaign loaded, the CSV imported, in one process."""
    wall, procs = run_together(
        [[sys.executable, str(ROOT / "bench" / "import_bench.py"), "--child", url, str(csv_path)]],
        os.environ.copy(),
        ROOT,
    )
    figures = json.loads(procs[0].output.strip().splitlines()[-1])
    return Step(
        "import",
        figures["elapsed"],
        rows,
        "rows",
        procs,
        f"(process {wall:.1f} s) {figures['counts']}",
    )


def expected_emails(engine) -> int:
    """Contacts of the campaign with an email address: the messages a send must deliver."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM contacts c JOIN campaigns k ON k.id = c.campaign_id "
                "WHERE k.name = :n AND c.email IS NOT NULL AND c.email <> ''"
            ),
            {"n": CAMPAIGN},
        ).scalar_one()


def reset_sends(engine) -> None:
    """Forget every send of the campaign (messages, events, tokens, reset records).

    The rows that reference messages go first and are vacuumed before the messages are
    deleted: each deleted message has its foreign keys checked against them, and a million
    dead reset-token rows (no index on message_id) would make that check scan them all,
    a million times.
    """
    with engine.begin() as conn:
        cid = conn.execute(
            text("SELECT id FROM campaigns WHERE name = :n"), {"n": CAMPAIGN}
        ).scalar_one()
        for sql in (
            "DELETE FROM events WHERE campaign_id = :c",
            "DELETE FROM reset_tokens WHERE reset_id IN "
            "(SELECT id FROM password_resets WHERE campaign_id = :c)",
            "DELETE FROM password_resets WHERE campaign_id = :c",
        ):
            conn.execute(text(sql), {"c": cid})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM events, reset_tokens, password_resets"))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM messages WHERE campaign_id = :c"), {"c": cid})
        conn.execute(text("DELETE FROM throttles WHERE campaign_id = :c"), {"c": cid})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE messages, events, reset_tokens, password_resets"))


def check_send(engine, sink: Sink, expected: int) -> tuple[int, float]:
    """Everyone exactly once at the sink and ``sent`` in the database; (arrivals, sending s)."""
    arrived, ids, first, last = 0, set(), float("inf"), float("-inf")
    with open(sink.record) as record:  # streamed: a million lines would weigh on this process
        for line in record:
            row = json.loads(line)
            arrived += 1
            ids.add(row["message_id"])
            first, last = min(first, row["monotonic"]), max(last, row["monotonic"])
    if arrived != expected or len(ids) != expected:
        raise SystemExit(
            f"sink got {arrived} messages, {len(ids)} distinct; expected {expected} once each"
        )
    with engine.connect() as conn:
        sent = conn.execute(
            text("SELECT count(*) FROM messages WHERE status = 'sent'")
        ).scalar_one()
    if sent != expected:
        raise SystemExit(f"{sent} messages sent in the database, expected {expected}")
    return arrived, max(0.0, last - first)


def check_outbox(engine, outbox: Path, expected: int) -> tuple[int, float]:
    """One ``.eml`` per expected message and all ``sent``; (files, seconds first..last sent)."""
    files = sum(1 for entry in os.scandir(outbox / "email") if entry.name.endswith(".eml"))
    with engine.connect() as conn:
        sent, first, last = conn.execute(
            text("SELECT count(*), min(sent_at), max(sent_at) FROM messages WHERE status = 'sent'")
        ).one()
    if files != expected or sent != expected:
        raise SystemExit(
            f"outbox holds {files} emails and the database {sent} sent; expected {expected}"
        )
    return files, (last - first).total_seconds() if first and last else 0.0


def send_step(
    engine,
    env: dict[str, str],
    workdir: Path,
    workers: int,
    concurrency: int,
    expected: int,
    transport: str = "sink",
) -> Step:
    """``workers`` send processes started together against a fresh sink (or outbox)."""
    cmd = notify_cmd(
        "send", CAMPAIGN, "--yes", "--json", "--email-rate", "0", "--concurrency", str(concurrency)
    )
    if transport == "outbox":
        outbox = workdir / f"outbox-{workers}w"
        wall, procs = run_together([cmd] * workers, {**env, "NOTIFY_OUTBOX": str(outbox)}, workdir)
        arrived, span = check_outbox(engine, outbox, expected)
        shutil.rmtree(outbox, ignore_errors=True)  # a million files: free the disk now
        sink_note = "outbox"
    else:
        sink = Sink(workdir, f"{workers}w")
        try:
            worker_env = {
                **env,
                "NOTIFY_SMTP_HOST": "127.0.0.1",
                "NOTIFY_SMTP_PORT": str(sink.port),
                "NOTIFY_SMTP_TLS": "none",
            }
            wall, procs = run_together([cmd] * workers, worker_env, workdir)
        finally:
            sink_cpu, sink_rss = sink.stop()
        arrived, span = check_send(engine, sink, expected)
        sink_note = f"sink CPU {sink_cpu:.1f} s, RSS {sink_rss:.0f} MB"
    shares = [
        sum(
            n
            for key, n in json.loads(p.output.strip().splitlines()[-1])["run"].items()
            if key.endswith(".sent")
        )
        for p in procs
    ]
    note = (
        f"sending {arrived / span if span else 0:,.0f}/s over {span:.1f} s; "
        f"sent per worker {shares}; exits at {[round(p.ended, 1) for p in procs]} s; "
        f"{sink_note}"
    )
    return Step(
        f"send, {workers} worker{'s' if workers > 1 else ''}",
        wall,
        arrived,
        "messages",
        procs,
        note,
    )


def status_step(env: dict[str, str], workdir: Path) -> Step:
    """``notify status`` once."""
    wall, procs = run_together([notify_cmd("status", CAMPAIGN)], env, workdir)
    return Step("status", wall, 1, "report", procs)


def export_step(engine, env: dict[str, str], workdir: Path) -> Step:
    """``notify export deliveries`` to a file; one row per message."""
    target = workdir / "deliveries.csv"
    wall, procs = run_together(
        [notify_cmd("export", "deliveries", CAMPAIGN, "-o", str(target))], env, workdir
    )
    with open(target, "rb") as handle:
        rows = sum(1 for _ in handle) - 1  # header; no field holds a newline here
    return Step(
        "export deliveries", wall, rows, "rows", procs, f"{target.stat().st_size / 1e6:,.0f} MB"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--contacts",
        type=int,
        default=1_000_000,
        help="rows of the generated CSV (default 1,000,000)",
    )
    parser.add_argument(
        "--workers",
        default="1,3",
        help="comma-separated worker counts, one send each (default 1,3)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=20, help="--concurrency of each worker (default 20)"
    )
    parser.add_argument(
        "--transport",
        choices=["sink", "outbox"],
        default="sink",
        help="send to the loopback SMTP sink (default) or the outbox",
    )
    parser.add_argument("--csv", type=Path, help="reuse or write the generated CSV here")
    parser.add_argument("--url", default=PG_URL, help="PostgreSQL URL (a schema is made in it)")
    parser.add_argument("--keep", action="store_true", help="keep the schema and the workdir")
    return parser.parse_args()


def main() -> None:
    """Generate (or reuse) the CSV, then import, send with each worker count, status, export."""
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="notify-scale-"))
    csv_path = args.csv or workdir / f"customers-{args.contacts}.csv"
    if not csv_path.exists():
        started = time.perf_counter()
        import_bench.generate(csv_path, args.contacts)
        print(
            f"generated {csv_path} ({csv_path.stat().st_size / 1e6:,.0f} MB) in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
    schema = "scale_" + uuid.uuid4().hex[:10]
    admin = create_engine(args.url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in args.url else "?"
    url = f"{args.url}{sep}options=-csearch_path%3D{schema}"
    engine = create_engine(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "TWILIO_"))}
    env.update(NOTIFY_DATABASE_URL=url, NOTIFY_OUTBOX=str(workdir / "outbox"))
    print(
        f"PostgreSQL schema {schema}; workdir {workdir}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    try:
        step = import_step(url, csv_path, args.contacts)
        print(step.line(), flush=True)
        run_together([notify_cmd("campaign", "load", str(campaign_file(workdir)))], env, workdir)
        expected = expected_emails(engine)
        for i, workers in enumerate(int(w) for w in args.workers.split(",")):
            if i:
                reset_sends(engine)
            step = send_step(
                engine, env, workdir, workers, args.concurrency, expected, args.transport
            )
            print(step.line(), flush=True)
        print(status_step(env, workdir).line(), flush=True)
        print(export_step(engine, env, workdir).line(), flush=True)
        print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        engine.dispose()
        if not args.keep:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            shutil.rmtree(workdir, ignore_errors=True)  # a --csv given elsewhere stays
        admin.dispose()


if __name__ == "__main__":
    main()
