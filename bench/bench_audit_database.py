"""`eventsvc audit --database` at scale: time, CPU and peak memory at 100k and 1M events, beside
the file audit of the same 100k events in the same run.

    .venv/bin/python bench/bench_audit_database.py              # 100,000 and 1,000,000 events
    .venv/bin/python bench/bench_audit_database.py --events 200000

Ten sessions of 1,000 plausible events (bench_audit's generator) are appended through the
PostgreSQL store once, then multiplied in SQL under new session and run ids (each copy's
envelopes, summaries and runs renamed alike), so both databases audit clean apart from lifecycle
warnings. The 100k database is also copied to a data folder with ``eventsvc copy``'s code: the
baseline is the file audit of those very events. Each measurement runs the CLI as a child
process under GNU time (its own peak RSS and CPU), in interleaved rounds; medians are shown.
The point of the memory column: the database audit streams, so its peak does not grow with the
number of events. Throwaway databases are dropped at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_audit import session_events  # noqa: E402
from bench_postgres import ADMIN_URL, _database_url  # noqa: E402

SEED_SESSIONS, SEED_EVENTS = 10, 1000
EVENTSVC = Path(sys.executable).with_name("eventsvc")
TIME = "/usr/bin/time"  # GNU time: the child's own peak memory and CPU

# Copy k of every seed session, renamed: session "seed-N" becomes "c<k>-N", run "sNNNNN-rMMMM" "c<k>-…".
_MULTIPLY = """
INSERT INTO session (session_id, last_seq, first_seq, event_count, created_at, updated_at, run_count, active_runs,
                     closed, touched)
SELECT 'c' || k || '-' || session_id, last_seq, first_seq, event_count, created_at, updated_at, run_count,
       active_runs, closed, touched
FROM session, generate_series(1, %(copies)s) k WHERE session_id LIKE 'seed-%%';
INSERT INTO run (run_id, session_id, first_seq, status, verify, last_seq, event_count, created_at, started_at,
                 ended_at, updated_at, blocked, warned, counts, touched)
SELECT 'c' || k || '-' || run_id, 'c' || k || '-' || session_id, first_seq, status, verify, last_seq, event_count,
       created_at, started_at, ended_at, updated_at, blocked, warned, counts, touched
FROM run, generate_series(1, %(copies)s) k WHERE session_id LIKE 'seed-%%';
INSERT INTO event (session_id, seq, run_id, type, event_id, "timestamp", envelope)
SELECT 'c' || k || '-' || session_id, seq, 'c' || k || '-' || run_id, type, event_id, "timestamp",
       replace(CASE WHEN run_id IS NULL THEN envelope
                    ELSE replace(envelope, '"run_id":"' || run_id || '"', '"run_id":"c' || k || '-' || run_id || '"')
               END, '"session_id":"' || session_id || '"', '"session_id":"c' || k || '-' || session_id || '"')
FROM event, generate_series(1, %(copies)s) k WHERE session_id LIKE 'seed-%%';
"""


def _admin():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


def create(events: int, created: list[str]) -> str:
    """A database of ``events`` events; its URL goes to ``created`` first, so it is dropped whatever fails."""
    import psycopg

    from eventsvc.store import open_store
    from eventsvc.store.postgres import upgrade

    name = f"eventsvc_benchaudit_{secrets.token_hex(4)}"
    with _admin() as admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    url = _database_url(name)
    created.append(url)
    upgrade(url)
    rng = random.Random(20261203)
    store = open_store(url)
    try:
        for session in range(SEED_SESSIONS):
            planned = session_events(rng, session, SEED_EVENTS)
            for start in range(0, SEED_EVENTS, 500):
                store.append_many(f"seed-{session:05d}", planned[start:start + 500])
    finally:
        store.close()
    copies = events // (SEED_SESSIONS * SEED_EVENTS) - 1
    with psycopg.connect(url) as conn:
        for statement in filter(str.strip, _MULTIPLY.split(";")):
            conn.execute(statement, {"copies": copies})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return url


def drop(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    assert name.startswith("eventsvc_benchaudit_")
    with _admin() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def copy_to_folder(url: str, data_dir: Path) -> None:
    from eventsvc.ops.copy import copy_store
    from eventsvc.store import open_store

    source, target = open_store(url), open_store(data_dir, fsync=False)
    try:
        assert copy_store(source, target, page=1000).problems == []
    finally:
        source.close()
        target.close()


def measured(*args: str) -> tuple[float, float, float, dict]:
    """(wall s, CPU s, peak MiB, summary) of one clean `eventsvc audit ... --format json` child.

    Started through GNU time, whose own small process forks it: a child forked straight from
    this one would count this process's memory (inherited until exec) in its ru_maxrss.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as usage:
        done = subprocess.run([TIME, "-f", "%M %U %S", "-o", usage.name, str(EVENTSVC), "audit", *args,
                               "--format", "json"], stdout=out, stderr=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - started
        out.seek(0)
        document = json.loads(out.read())
        peak_kib, user, system = usage.read().split()[-3:]
    if done.returncode != 0 or document["exit_code"] != 0:
        raise SystemExit(f"audit {args} is not clean: {document['summary']}")
    return wall, float(user) + float(system), int(peak_kib) / 1024, document["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    print(f"machine: {os.getloadavg()[0]:.1f} load average (1 min) on {os.cpu_count()} cores", flush=True)
    urls: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="eventsvc-bench-audit-db-"))
    try:
        started = time.monotonic()
        small, large = create(options.small, urls), create(options.events, urls)
        copy_to_folder(small, scratch / "data")
        print(f"prepared in {time.monotonic() - started:.0f} s", flush=True)
        cases = {f"audit <folder>, {options.small:,} events (baseline)": (str(scratch / "data"),),
                 f"audit --database, {options.small:,} events": ("--database", small),
                 f"audit --database, {options.events:,} events": ("--database", large)}
        results: dict[str, list[tuple[float, float, float, dict]]] = {name: [] for name in cases}
        for _ in range(options.rounds):
            for name, args in cases.items():
                results[name].append(measured(*args))
        print(f"\n{'':<44}{'wall s':>8}{'CPU s':>8}{'µs/event':>10}  peak MiB (each round)")
        for name, runs in results.items():
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            peaks = " ".join(f"{r[2]:.2f}" for r in runs)
            events = runs[0][3]["events"]
            print(f"{name:<44}{wall:>8.1f}{cpu:>8.1f}{wall / events * 1e6:>10.1f}  {peaks}")
        print(f"\nmachine after: {os.getloadavg()[0]:.1f} load average (1 min)")
    finally:
        for url in urls:
            drop(url)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
