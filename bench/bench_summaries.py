"""Figure 8: run and session summaries, kept in the index, read and listed as fast as a page's index rows.

a. ``get_run`` / ``get_session`` at 1M events (primary-key reads of the summary rows) vs reading the
   index rows of one 100-event run page (``Index.run_page``, the first half of every run read).
b. ``GET /api/runs?status=running`` (first page, limit 100) on gunicorn at 1M events / 10,000 runs
   (1,000 of them running) vs the same on a store of 10,000 events (100 runs, all running): p50
   latency of sequential requests on one keep-alive connection.
c. What keeping summaries current costs the appends of figures 1 and 2: the same loops with
   and without the summary step of the index commit (the checkpoint row is written either way).
Run alone: ``python bench/bench_summaries.py``.
"""
from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import loadgen  # noqa: E402
from common import Row, interleaved, median, micros, per_second, percentile, scratch  # noqa: E402

from eventsvc import EventStore  # noqa: E402

READS = 3000
HTTP_READS = 400
BATCH = 100


# -- a: summary reads ---------------------------------------------------------------------------

def _timed(operation, arguments: list) -> list[float]:
    times = []
    for argument in arguments:
        started = time.perf_counter()
        operation(argument)
        times.append(time.perf_counter() - started)
    return times


def summary_reads() -> list[Row]:
    path = common.ensure_store("1M")
    pairs = common.read_pairs("1M", READS, seed=11)
    store = EventStore(path)
    try:
        index = store._index
        contenders = {
            "run summary": (store.get_run, [run for _, run, _ in pairs]),
            "session summary": (store.get_session, [session for session, _, _ in pairs]),
            "run page index rows": (lambda run: index.run_page(run, since_seq=0, limit=100),
                                    [run for _, run, _ in pairs]),
        }
        for operation, arguments in contenders.values():
            _timed(operation, arguments)  # warm: every row has been read once
        samples = interleaved({name: (lambda op=op, args=args: percentile(_timed(op, args), 0.5))
                               for name, (op, args) in contenders.items()}, repeats=common.REPEATS)
    finally:
        store.close()
    baseline = median(samples["run page index rows"])
    rows = []
    for name in ("run summary", "session summary"):
        ours = median(samples[name])
        rows.append(Row(f"8 {name} read, 1M events (p50)", micros(ours),
                        f"{micros(baseline)} (one 100-event run page's index rows)", ours / baseline, "≤ 1.2",
                        ours / baseline <= 1.2,
                        f"{READS} random runs/sessions x {common.REPEATS} passes, warm; baseline "
                        "Index.run_page(run, since_seq=0, limit=100)"))
    return rows


# -- b: the running-runs listing over HTTP ---------------------------------------------------------

def _small_running_store(folder: Path) -> Path:
    """10,000 events: 10 sessions of 10 runs of 100 events, every run still running."""
    store = EventStore(folder / "data", fsync=False)
    try:
        for number in range(1, 11):
            store.append_many(common.session_name(number), [
                event for run in range(1, common.RUNS_PER_SESSION + 1)
                for event in common.run_events(common.run_name(number, run), running=True)], default_source="bench")
    finally:
        store.close()
    return folder / "data"


def _latencies(url: str, count: int) -> list[float]:
    times = []
    with requests.Session() as session:
        for _ in range(count):
            started = time.perf_counter()
            response = session.get(url, timeout=30)
            times.append(time.perf_counter() - started)
            if response.status_code != 200 or len(response.json()["runs"]) != 100:
                raise AssertionError(f"{url}: {response.status_code}, not a full page of 100 runs")
    return times


def running_listing() -> Row:
    big = common.ensure_store("1M")
    with scratch("summaries-http") as folder:
        small = _small_running_store(folder)
        with loadgen.serve("wsgi:app", big, folder / "big.log") as ours, \
                loadgen.serve("wsgi:app", small, folder / "small.log") as theirs:
            query = "/api/runs?status=running"
            for server in (ours, theirs):
                _latencies(server.url + query, 50)  # warm both workers
            samples = interleaved({"1M": lambda: percentile(_latencies(ours.url + query, HTTP_READS), 0.5),
                                   "10k": lambda: percentile(_latencies(theirs.url + query, HTTP_READS), 0.5)},
                                  repeats=common.REPEATS)
    ours_p50, theirs_p50 = median(samples["1M"]), median(samples["10k"])
    ratio = ours_p50 / theirs_p50
    return Row("8 GET /api/runs?status=running, 1M events / 10,000 runs vs 10k events (p50)", micros(ours_p50),
               f"{micros(theirs_p50)} (10k events, 100 runs)", ratio, "≤ 2.0", ratio <= 2.0,
               f"first page, limit 100, {HTTP_READS} sequential requests on one keep-alive connection x "
               f"{common.REPEATS}; 1,000 of the 10,000 runs are running")


# -- c: what summaries cost the appends ------------------------------------------------------------

def _checkpoint_only(conn: sqlite3.Connection, session_id: str, checkpoint: tuple[int, int, int],
                     rows: list[tuple]) -> None:
    """The commit without summaries, as before them: claim new runs, write the session's checkpoint."""
    for run_id in dict.fromkeys(row[2] for row in rows if row[2] is not None):
        conn.execute("INSERT OR IGNORE INTO run VALUES (?, ?, ?, 'unknown', NULL, 0, 0, NULL, NULL, NULL, NULL,"
                     " 0, 0, '{}', 0)", (run_id, session_id, rows[0][1]))
        conn.execute("SELECT session_id FROM run WHERE run_id = ?", (run_id,)).fetchone()
    conn.execute("INSERT INTO session VALUES (?, ?, ?, ?, 1, 0, NULL, NULL, 0, 0, 0, 0) ON CONFLICT (session_id)"
                 " DO UPDATE SET last_seq = excluded.last_seq, segment = excluded.segment,"
                 " end_offset = excluded.end_offset", (session_id, *checkpoint))


def _single_events(prefix: str):
    n = 0
    while True:
        session_id, run_id = f"{prefix}-{n // common.EVENTS_PER_SESSION}", f"{prefix}-r{n // common.EVENTS_PER_RUN}"
        yield session_id, common.input_event(run_id, n % common.EVENTS_PER_RUN)
        n += 1


def _batches(prefix: str):
    n = 0
    while True:
        yield f"{prefix}-{n // (common.EVENTS_PER_SESSION // BATCH)}", common.run_events(f"{prefix}-r{n}")
        n += 1


def append_cost() -> list[Row]:
    rows = []
    for figure, make, append, unit in (("1 single", _single_events, "append", 1),
                                       ("2 batched (100)", _batches, "append_many", BATCH)):
        with scratch("summaries-append") as folder:
            stores = {"with": EventStore(folder / "with", fsync=True), "without": EventStore(folder / "without",
                                                                                          fsync=True)}
            stores["without"]._index.record_summaries = _checkpoint_only
            feeds = {name: make(f"b-{name}") for name in stores}

            def step(name: str) -> int:
                getattr(stores[name], append)(*next(feeds[name]))
                return unit

            for name in stores:
                step(name)
            cpu: dict[str, list[float]] = {name: [] for name in stores}  # this process's CPU seconds per event

            def measure(name: str) -> float:
                events, cpu_started, started = 0, time.process_time(), time.perf_counter()
                while time.perf_counter() - started < common.LOOP_SECONDS:
                    events += step(name)
                cpu[name].append((time.process_time() - cpu_started) / events)
                return events / (time.perf_counter() - started)

            try:
                rates = interleaved({name: (lambda name=name: measure(name)) for name in stores})
            finally:
                for store in stores.values():
                    store.close()
        ours, theirs = median(rates["with"]), median(rates["without"])
        cost = 1 - ours / theirs
        cpu_with, cpu_without = median(cpu["with"]), median(cpu["without"])
        rows.append(Row(f"8 summaries' cost on figure {figure} append (events/s)", per_second(ours),
                        f"{per_second(theirs)} (no summaries)", ours / theirs, "cost ≤ 10% (ratio ≥ 0.9)",
                        ours / theirs >= 0.9,
                        f"cost {cost:.1%}; CPU per event {micros(cpu_with)} with, {micros(cpu_without)} without "
                        f"(+{micros(cpu_with - cpu_without)}: the part a faster disk would not hide); the same store with the index commit's summary step replaced by what "
                        "the commit did before summaries (claim the runs, write the checkpoint); fsync on; runs: with "
                        + "/".join(f"{r:,.0f}" for r in rates["with"]) + ", without "
                        + "/".join(f"{r:,.0f}" for r in rates["without"])))
    return rows


def main() -> list[Row]:
    return [*summary_reads(), *append_cost(), running_listing()]


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print("   ", row.note)
