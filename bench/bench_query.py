"""Figure 5: a run's page costs the same whatever the store's size, and little more from a cold disk.

``get_events_by_run(limit=100)`` at random runs and offsets (every page full: 100 events) on
stores of 10,000 and 1,000,000 events (and 10,000,000 with BENCH_FULL=1). Warm: the files are
in the page cache and each read was done once before the timed pass. Cold: before each read
the index and the run's segment are evicted with ``posix_fadvise(DONTNEED)`` (after a sync),
and SQLite's own page cache is released (``PRAGMA shrink_memory``), so every page comes from disk.
Run alone: ``python bench/bench_query.py``.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Row, median, micros, percentile  # noqa: E402

from eventsvc import EventStore  # noqa: E402
from eventsvc.store.files import segments  # noqa: E402

READS = 2000
COLD_READS = 200


def _timed(store: EventStore, pairs: list[tuple[str, str, int]]) -> list[float]:
    times = []
    for session_id, run_id, since_seq in pairs:
        started = time.perf_counter()
        events = store.get_events_by_run(session_id, run_id, since_seq=since_seq, limit=100)
        times.append(time.perf_counter() - started)
        if len(events) != 100:
            raise AssertionError(f"{run_id} after {since_seq}: {len(events)} events, not 100")
    return times


def _cold(store: EventStore, data_dir: Path, pairs: list[tuple[str, str, int]]) -> list[float]:
    index_files = [p for p in data_dir.glob("index.sqlite3*") if not p.name.endswith("-shm")]
    os.sync()
    times = []
    for session_id, run_id, since_seq in pairs:
        segment = data_dir / segments.SEGMENTS_DIR / session_id
        common.evict([*index_files, *segment.glob("*.jsonl")])
        store._index.db.execute_sql("PRAGMA shrink_memory")  # SQLite's own cache, not only the OS's
        started = time.perf_counter()
        store.get_events_by_run(session_id, run_id, since_seq=since_seq, limit=100)
        times.append(time.perf_counter() - started)
    return times


def main() -> list[Row]:
    scales = ["10k", "1M", *(["10M"] if common.FULL else [])]
    stores, pairs = {}, {}
    for scale in scales:
        path = common.ensure_store(scale)
        common.warm(common.store_files(path))
        stores[scale] = EventStore(path)
        pairs[scale] = common.read_pairs(scale, READS)
        _timed(stores[scale], pairs[scale])  # the warm-up pass: each page has been read once
    try:
        samples: dict[str, list[list[float]]] = {scale: [] for scale in scales}
        for _ in range(common.REPEATS):
            for scale in scales:
                samples[scale].append(_timed(stores[scale], pairs[scale]))
        p50 = {scale: median(percentile(run, 0.5) for run in runs) for scale, runs in samples.items()}
        p99 = {scale: percentile([t for run in runs for t in run], 0.99) for scale, runs in samples.items()}
        first = pairs["1M"][0]
        plan = stores["1M"].query_plan(first[0], first[1])
        cold = _cold(stores["1M"], common.store_path("1M"), common.read_pairs("1M", COLD_READS, seed=7))
    finally:
        for store in stores.values():
            store.close()

    def cell(scale: str) -> str:
        return f"p50 {micros(p50[scale])}, p99 {micros(p99[scale])} ({scale})"

    rows = []
    for scale in scales[1:]:
        ratio = p50[scale] / p50["10k"]
        rows.append(Row(f"5 get_events_by_run(limit=100), {scale} vs 10k events", cell(scale), cell("10k"), ratio,
                        "p50 ratio ≤ 1.3", ratio <= 1.3,
                        f"{READS} random full pages x {common.REPEATS} passes, warm; plan: {plan}"))
    cold_p50 = percentile(cold, 0.5)
    ratio = cold_p50 / p50["1M"]
    rows.append(Row("5 cold-cache page (1M events)", f"p50 {micros(cold_p50)}, p99 {micros(percentile(cold, 0.99))}",
                    f"warm p50 {micros(p50['1M'])}", ratio, "≤ 3.0", ratio <= 3.0,
                    f"{COLD_READS} reads, each after posix_fadvise(DONTNEED) on index.sqlite3 and the run's "
                    "segment and PRAGMA shrink_memory"))
    return rows


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print("   ", row.note)
