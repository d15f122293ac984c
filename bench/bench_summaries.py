"""Figure 8: run and session summaries, kept in the index, read and listed as fast as a page's index rows.

a. ``get_run`` / ``get_session`` at 1M events (primary-key reads of the summary rows) vs reading the
   index rows of one 100-event run page (``Index.run_page``, the first half of every run read).
b. ``GET /api/runs?status=running`` (first page, limit 100) on gunicorn at 1M events / 10,000 runs
   (1,000 of them running) vs the same on a store of 10,000 events (100 runs, all running): p50
   latency of sequential requests on one keep-alive connection.
What keeping summaries current costs the appends is weighed beside figures 1 and 2 (bench_append.py).
Run alone: ``python bench/bench_summaries.py``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import loadgen  # noqa: E402
from common import Row, interleaved, median, micros, percentile, scratch  # noqa: E402

from eventsvc import EventStore  # noqa: E402

READS = 3000
HTTP_READS = 400


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


def main() -> list[Row]:
    return [*summary_reads(), running_listing()]


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print("   ", row.note)
