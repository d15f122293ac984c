"""Figure 6: opening a store after a crash costs what the crash left behind, not the store's size.

A copy of the cached store (segments hard-linked, except the damaged sessions' and the index,
which are copied) gets what a crash mid-traffic leaves: 1,000 complete lines appended to 10
sessions' segments that the index never saw (100 each, a new run in each), and a torn half line
at the end of the last one. After a sync and eviction of its files from the page cache (as
after a reboot), we time ``EventStore(path)`` until the first read, of a repaired run, is
answered. The same on a store of as many sessions, the damaged ones as large, the others of
10 events (about 20,000 events in all), is the baseline: the ratio shows whether the store's
size matters. Opening also checks every session's log end (two stats each), so the note gives
a 10-session store's time as well.
Run alone: ``python bench/bench_recovery.py``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Row, median  # noqa: E402

from eventsvc import EventStore  # noqa: E402
from eventsvc.store.files import segments  # noqa: E402

DAMAGED_SESSIONS = common.WIDE_FULL_SESSIONS  # the wide store's last sessions are as large as the 1M store's
LINES_PER_SESSION = 100
CRASH_RUN = common.RUNS_PER_SESSION + 1
TORN = b'{"type":"tool_call","timestamp":"2026-11-30T10:00:00.1Z","session_id":"s-0'
SIZE_INDEPENDENT = 1.5  # "independent of size": at most this ratio, for noise


def _copy(source: Path, target: Path, damaged: set[str]) -> None:
    shutil.rmtree(target, ignore_errors=True)
    (target / segments.SEGMENTS_DIR).mkdir(parents=True)
    for name in ("index.sqlite3", "index.sqlite3-wal"):
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)
    for entry in os.scandir(source / segments.SEGMENTS_DIR):
        session_dir = target / segments.SEGMENTS_DIR / entry.name
        session_dir.mkdir()
        for file in os.scandir(entry.path):
            if entry.name in damaged:
                shutil.copyfile(file.path, session_dir / file.name)
            else:
                os.link(file.path, session_dir / file.name)


def _last_seq(path: Path) -> int:
    with open(path, "rb") as file:
        file.seek(max(0, os.path.getsize(path) - 8192))
        return json.loads(file.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])["seq"]


def _crash(data_dir: Path, damaged: list[str]) -> None:
    """Write what a crash leaves: complete lines past the index's checkpoint, then a torn one."""
    for position, session_id in enumerate(damaged):
        session_dir = data_dir / segments.SEGMENTS_DIR / session_id
        path = session_dir / segments.segment_name(segments.list_bases(session_dir)[-1])
        seq = _last_seq(path)
        run_id = common.run_name(int(session_id[2:]), CRASH_RUN)
        lines = [common.line_of(common.stored_envelope(common.input_event(run_id, n), session_id, seq + 1 + n))
                 for n in range(LINES_PER_SESSION)]
        with open(path, "ab") as file:
            file.write(b"".join(lines))
            if position == len(damaged) - 1:
                file.write(TORN)


def _recover_once(scale: str) -> float:
    sessions = common.SCALES["1M"] if scale == common.WIDE_SCALE else common.SCALES[scale]
    damaged = [common.session_name(n) for n in range(sessions - DAMAGED_SESSIONS + 1, sessions + 1)]
    target = common.WORK / f"recovery-{scale}"
    _copy(common.ensure_store(scale), target, set(damaged))
    _crash(target, damaged)
    os.sync()
    common.evict(common.store_files(target))
    try:
        started = time.perf_counter()
        store = EventStore(target)
        events = store.get_events_by_run(damaged[0], common.run_name(int(damaged[0][2:]), CRASH_RUN), limit=100)
        elapsed = time.perf_counter() - started
        store.close()
        if len(events) != LINES_PER_SESSION:
            raise AssertionError(f"the repaired run has {len(events)} events, not {LINES_PER_SESSION}")
        last_dir = target / segments.SEGMENTS_DIR / damaged[-1]
        if not any(segments.TORN_SUFFIX in name for name in os.listdir(last_dir)):
            raise AssertionError("the torn tail was not cut and kept aside")
        return elapsed
    finally:
        shutil.rmtree(target, ignore_errors=True)


def main() -> list[Row]:
    logging.getLogger("eventsvc").setLevel(logging.ERROR)  # the repairs' warnings are expected here
    wide = common.WIDE_SCALE
    times: dict[str, list[float]] = {"1M": [], wide: [], "10k": []}
    for _ in range(common.REPEATS):
        for scale in times:
            times[scale].append(_recover_once(scale))
    big, small, few = median(times["1M"]), median(times[wide]), median(times["10k"])
    ratio = big / small
    wide_events = (common.SCALES["1M"] - DAMAGED_SESSIONS) * common.WIDE_EVENTS_PER_SESSION \
        + DAMAGED_SESSIONS * common.EVENTS_PER_SESSION
    runs = "; ".join(f"{scale} " + "/".join(f"{t * 1000:.0f}" for t in measured) for scale, measured in times.items())
    return [Row("6 recovery: open after a crash to first read", f"{big * 1000:,.0f} ms (1M events)",
                f"{small * 1000:,.0f} ms ({wide_events:,} events)", ratio, f"≤ 1 s; ratio ≤ {SIZE_INDEPENDENT}",
                big <= 1.0 and ratio <= SIZE_INDEPENDENT,
                f"{DAMAGED_SESSIONS} sessions x {LINES_PER_SESSION} unindexed lines + a torn tail, cold page cache; "
                f"both stores hold {common.SCALES['1M']:,} sessions and the damaged ones hold "
                f"{common.EVENTS_PER_SESSION:,} events in both (the other sessions {common.EVENTS_PER_SESSION:,} or "
                f"{common.WIDE_EVENTS_PER_SESSION}), so the ratio shows what the store's size costs; a repair reads "
                f"its session's index cold, and opening stats two files per session (a 10k store of 10 sessions "
                f"opens in {few * 1000:.0f} ms); runs (ms): {runs}")]


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print("   ", row.note)
