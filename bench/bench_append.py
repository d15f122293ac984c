"""Figures 1 and 2: durable appends in process, next to the least code that is as durable.

1. ``EventStore.append`` (fsync on) vs "write the line + fsync + sqlite3 INSERT in its own transaction".
2. ``append_many`` of 100 vs "write 100 lines + one fsync + sqlite3 executemany in one transaction",
   and vs the eventsourcing library's SQLite recorders inserting the same 100 events per commit.

Each figure also weighs what keeping the run and session summaries current costs (issue 14: at
most 10%): a second store, its index commit doing only what it did before summaries
(``Index.keeps_summaries = False``: claim the new runs, write the checkpoint), runs in the same
interleaved loop. Three measures are compared: time per event (fsync on: the figure itself, which
the disk dominates and a shared disk blurs), this thread's CPU per event in a loop with fsync off
(the software path, but still swayed by a loaded machine) and, where valgrind is installed,
instructions per event counted by callgrind (the same count on a busy machine as on a quiet one;
about two minutes; BENCH_CALLGRIND=0 skips it).

The baselines use the same SQLite pragmas and the same table and indexes as eventsvc's index
(so the ratio measures the software path, not a schema choice) and the same fdatasync call
eventsvc uses; they validate nothing. Run alone: ``python bench/bench_append.py``.
"""
from __future__ import annotations

import functools
import itertools
import json
import os
import sqlite3
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Row, interleaved, median, micros, per_second, rate_for, scratch  # noqa: E402

from eventsvc import EventStore  # noqa: E402

SESSION = "s-append"
BATCH = 100
SESSION_EVENTS = common.EVENTS_PER_SESSION  # eventsvc moves to a new session every 1,000 events, as in the stores

TABLE = [
    'CREATE TABLE event (session_id TEXT NOT NULL, seq INTEGER NOT NULL, run_id TEXT, type TEXT NOT NULL,'
    ' event_id TEXT NOT NULL, timestamp TEXT NOT NULL, segment INTEGER NOT NULL, "offset" INTEGER NOT NULL,'
    ' length INTEGER NOT NULL, PRIMARY KEY (session_id, seq)) WITHOUT ROWID',
    'CREATE INDEX idx_run ON event (session_id, run_id, seq, segment, "offset", length)',
    "CREATE UNIQUE INDEX idx_event_id ON event (session_id, event_id)",
]
INSERT = 'INSERT INTO event VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'


class PlainLog:
    """The baseline: a JSON-lines file and a plain SQLite table, written by hand."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(folder / "log.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.offset = 0
        self.seq = 0
        self.db = sqlite3.connect(folder / "index.sqlite3", isolation_level=None)
        for pragma in ("journal_mode=wal", "synchronous=normal", "cache_size=-16000"):
            self.db.execute(f"PRAGMA {pragma}")
        for statement in TABLE:
            self.db.execute(statement)

    def _rows(self, events: list[dict]) -> tuple[bytes, list[tuple]]:
        lines, rows = [], []
        for event in events:
            self.seq += 1
            envelope = common.stored_envelope(event, SESSION, self.seq)
            line = (json.dumps(envelope, separators=(",", ":")) + "\n").encode()
            rows.append((SESSION, self.seq, envelope["run_id"], envelope["type"], envelope["event_id"],
                         envelope["timestamp"], 1, self.offset, len(line)))
            self.offset += len(line)
            lines.append(line)
        return b"".join(lines), rows

    def append(self, event: dict) -> int:
        data, rows = self._rows([event])
        os.write(self.fd, data)
        os.fdatasync(self.fd)
        self.db.execute("BEGIN")
        self.db.execute(INSERT, rows[0])
        self.db.execute("COMMIT")
        return 1

    def append_many(self, events: list[dict]) -> int:
        data, rows = self._rows(events)
        os.write(self.fd, data)
        os.fdatasync(self.fd)
        self.db.execute("BEGIN")
        self.db.executemany(INSERT, rows)
        self.db.execute("COMMIT")
        return len(events)

    def write_fsync_only(self, event: dict) -> int:
        """The machine's floor for a durable line: no index at all."""
        os.write(self.fd, (json.dumps(event, separators=(",", ":")) + "\n").encode())
        os.fdatasync(self.fd)
        return 1

    def close(self) -> None:
        os.close(self.fd)
        self.db.close()


def _single_events(prefix: str = SESSION):
    """Endless (session, event): run steps, 1,000 per session (one run each), then the next session.

    Sessions are kept at the size of the cached stores' so that the figure does not depend
    on how long the bench runs (a session's size should not matter; see figure 5).
    """
    for k in itertools.count():
        session_id, run_id = f"{prefix}-{k}", f"r-{prefix}-{k}"
        yield session_id, common.input_event(run_id, 0)
        for n in range(1, SESSION_EVENTS):
            yield session_id, common.input_event(run_id, 2 + n % (common.EVENTS_PER_RUN - 3))


def _batches(prefix: str = SESSION):
    """Endless (session, 100 events): a new run per batch, 10 batches per session."""
    for n in itertools.count():
        yield f"{prefix}-{n // (SESSION_EVENTS // BATCH)}", common.run_events(f"r-{prefix}-batch-{n}")


class Upkeep:
    """Two stores side by side, with and without the summaries' upkeep, each timed and CPU-counted."""

    def __init__(self, folder: Path, *, fsync: bool = True) -> None:
        self.stores = {"with": EventStore(folder / "eventsvc", fsync=fsync),
                       "without": EventStore(folder / "eventsvc-no-summaries", fsync=fsync)}
        self.stores["without"]._index.keeps_summaries = False
        self.cpu: dict[str, list[float]] = {name: [] for name in self.stores}  # thread CPU seconds per event

    def measure(self, name: str, seconds: float, operation) -> float:
        """``rate_for`` that also notes this thread's CPU per event (the watcher thread's is not counted)."""
        events = 0

        def counted() -> int:
            nonlocal events
            handled = operation()
            events += handled
            return handled

        cpu_started = time.thread_time()
        rate = rate_for(seconds, counted)
        self.cpu[name].append((time.thread_time() - cpu_started) / events)
        return rate

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


def upkeep_rows(figure: str, rates: dict[str, list[float]], cpu: dict[str, list[float]],
                instructions: dict[str, float] | None) -> list[Row]:
    """'summary upkeep cost' rows: time, CPU and instructions per event, with over without (target ≤ 1.10)."""
    how = ("the same store with its index commit doing only what it did before summaries (claim the new runs, "
           "write the checkpoint), interleaved in one run, medians; ")
    with_rate, without_rate = median(rates["with"]), median(rates["without"])
    cpu_with, cpu_without = median(cpu["with"]), median(cpu["without"])
    rows = [
        Row(f"{figure}, time per event", micros(1 / with_rate), f"{micros(1 / without_rate)} (no summaries)",
            without_rate / with_rate, "≤ 1.10", without_rate / with_rate <= 1.10,
            how + f"fsync on (the figure's own loop, which the disk dominates); events/s with "
            f"{_list(rates['with'])}, without {_list(rates['without'])}"),
        Row(f"{figure}, CPU per event", micros(cpu_with), f"{micros(cpu_without)} (no summaries)",
            cpu_with / cpu_without, "≤ 1.10", cpu_with / cpu_without <= 1.10,
            how + "fsync off, this thread's CPU (time.thread_time); per round with "
            + "/".join(f"{value * 1e6:,.0f}" for value in cpu["with"]) + " µs, without "
            + "/".join(f"{value * 1e6:,.0f}" for value in cpu["without"]) + " µs"),
    ]
    if instructions is None:
        rows.append(common.skipped(f"{figure}, instructions per event", "≤ 1.10",
                                   "valgrind is not installed (apt-get install valgrind), or BENCH_CALLGRIND=0"))
    else:
        ratio = instructions["with"] / instructions["without"]
        rows.append(Row(f"{figure}, instructions per event", f"{instructions['with']:,.0f}",
                        f"{instructions['without']:,.0f} (no summaries)", ratio, "≤ 1.10", ratio <= 1.10,
                        "callgrind's count of the append loop alone (python's functools.reduce drives it, "
                        "callgrind counts only inside that call), fsync on, after a warm-up; repeatable "
                        "however loaded the machine is; user-space instructions only (the kernel's "
                        "part of fsync and write is not counted)"))
    return rows


def cpu_per_event(folder: Path, feed, operation: str, unit: int) -> dict[str, list[float]]:
    """This thread's CPU per event with and without the upkeep, fsync off, interleaved."""
    upkeep = Upkeep(folder, fsync=False)
    feeds = {name: feed(f"cpu-{name}") for name in upkeep.stores}

    def step(name: str) -> int:
        getattr(upkeep.stores[name], operation)(*next(feeds[name]))
        return unit

    try:
        for name in upkeep.stores:
            step(name)
        interleaved({name: (lambda name=name: upkeep.measure(name, common.LOOP_SECONDS, lambda: step(name)))
                     for name in upkeep.stores})
    finally:
        upkeep.close()
    return upkeep.cpu


# -- instructions, counted by callgrind --------------------------------------------------------------

INSTRUCTION_LOOPS = {"1": ("append", 300, 1), "2": ("append_many", 6, BATCH)}  # figure -> (operation, calls, unit)


def instructions_per_event(figure: str) -> dict[str, float] | None:
    """Instructions per event with and without the upkeep, each store in its own process under callgrind."""
    if common.callgrind_available() is None:
        return None
    _, calls, unit = INSTRUCTION_LOOPS[figure]
    return common.callgrind_counts(__file__, {name: [figure, name] for name in ("with", "without")}, calls * unit)


def _counted_loop(figure: str, name: str, folder: str) -> None:
    """The child under callgrind: warm up, then the loop inside functools.reduce, the only part counted."""
    operation, calls, _ = INSTRUCTION_LOOPS[figure]
    store = EventStore(folder, fsync=True)
    store._index.keeps_summaries = name == "with"
    feed = _single_events() if figure == "1" else _batches()
    append = getattr(store, operation)
    try:
        for _ in range(calls):
            append(*next(feed))
        functools.reduce(lambda _, event: append(*event), itertools.islice(feed, calls), None)
    finally:
        store.close()


def figure_1() -> list[Row]:
    with scratch("append-1") as folder:
        upkeep = Upkeep(folder)
        plain = PlainLog(folder / "plain")
        floor = PlainLog(folder / "floor")
        feeds = {name: _single_events() for name in upkeep.stores}
        theirs, bare = _single_events(), _single_events()

        def append_one(name: str) -> int:
            upkeep.stores[name].append(*next(feeds[name]))
            return 1

        for name in upkeep.stores:
            append_one(name)
        plain.append(next(theirs)[1])
        seconds = common.LOOP_SECONDS
        try:
            rates = interleaved({
                "with": lambda: upkeep.measure("with", seconds, lambda: append_one("with")),
                "baseline": lambda: rate_for(seconds, lambda: plain.append(next(theirs)[1])),
                "without": lambda: upkeep.measure("without", seconds, lambda: append_one("without")),
                "floor": lambda: rate_for(seconds, lambda: floor.write_fsync_only(next(bare)[1])),
            })
        finally:
            upkeep.close()
            plain.close()
            floor.close()
        cpu = cpu_per_event(folder / "cpu", _single_events, "append", 1)
    ours, theirs, bare = (median(rates[name]) for name in ("with", "baseline", "floor"))
    return [Row("1 durable single append (events/s)", per_second(ours), per_second(theirs), ours / theirs,
                "≥ 0.8", ours / theirs >= 0.8,
                f"baseline: write line + fdatasync + sqlite3 INSERT in its own transaction (same table, indexes and "
                f"pragmas as eventsvc's index); eventsvc sessions of 1,000 events; write + fdatasync "
                f"alone: {per_second(bare)}; runs: eventsvc {_list(rates['with'])}, baseline "
                f"{_list(rates['baseline'])}"),
            *upkeep_rows("1 summary upkeep cost, single append", rates, cpu, instructions_per_event("1"))]


def _es_recorders(folder: Path):
    from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteApplicationRecorder, SQLiteDatastore

    recorders = {}
    for name, kind in (("application", SQLiteApplicationRecorder), ("aggregate", SQLiteAggregateRecorder)):
        datastore = SQLiteDatastore(str(folder / f"es-{name}.sqlite3"))
        recorder = kind(datastore)
        recorder.create_table()
        recorders[name] = recorder
    return recorders


def _es_insert(recorder, events: list[dict]) -> int:
    """The peer's path from the same dicts: the same envelope serialised as state, 100 per commit."""
    from eventsourcing.persistence import StoredEvent

    originator = uuid.uuid4()
    recorder.insert_events([
        StoredEvent(originator_id=originator, originator_version=version, topic="bench:AgentEvent",
                    state=json.dumps(common.stored_envelope(event, SESSION, version), separators=(",", ":")).encode())
        for version, event in enumerate(events, 1)])
    return len(events)


def figure_2() -> list[Row]:
    batches = _batches()

    with scratch("append-2") as folder:
        upkeep = Upkeep(folder)

        def append_batch(name: str) -> int:
            return len(upkeep.stores[name].append_many(*next(batches)))

        plain = PlainLog(folder / "plain")
        contenders = {
            "with": lambda: append_batch("with"),
            "baseline": lambda: plain.append_many(next(batches)[1]),
            "without": lambda: append_batch("without"),
        }
        try:
            recorders = _es_recorders(folder)
        except ImportError:
            recorders = {}
        for name, recorder in recorders.items():
            contenders[f"eventsourcing {name}"] = lambda recorder=recorder: _es_insert(recorder, next(batches)[1])
        for operation in contenders.values():
            operation()  # create the files outside the timed runs
        seconds = common.LOOP_SECONDS
        try:
            rates = interleaved({
                name: (lambda name=name, op=op: upkeep.measure(name, seconds, op)) if name in upkeep.stores
                else (lambda op=op: rate_for(seconds, op)) for name, op in contenders.items()})
        finally:
            upkeep.close()
            plain.close()
            for recorder in recorders.values():
                recorder.datastore.close()
        cpu = cpu_per_event(folder / "cpu", _batches, "append_many", BATCH)
    ours, theirs = median(rates["with"]), median(rates["baseline"])
    rows = [Row("2 durable batched append, 100/commit (events/s)", per_second(ours), per_second(theirs),
                ours / theirs, "≥ 0.5", ours / theirs >= 0.5,
                "baseline: write 100 lines + one fdatasync + sqlite3 executemany in one transaction; eventsvc: "
                "a new run per batch, sessions of 1,000 events; runs: "
                f"eventsvc {_list(rates['with'])}, baseline {_list(rates['baseline'])}"),
            *upkeep_rows("2 summary upkeep cost, batched append (100)", rates, cpu,
                         instructions_per_event("2"))]
    if not recorders:
        rows.append(common.skipped("2 batched append vs eventsourcing", "≥ 1.0",
                                   "eventsourcing is not installed (pip install -e '.[bench]')"))
        return rows
    peers = {name: median(values) for name, values in rates.items() if name.startswith("eventsourcing")}
    best = max(peers, key=peers.get)
    rows.append(Row("2 batched append vs eventsourcing SQLite (events/s)", per_second(ours),
                    f"{per_second(peers[best])} ({best.split()[1]} recorder)", ours / peers[best], "≥ 1.0",
                    ours / peers[best] >= 1.0,
                    "peer: eventsourcing.sqlite recorders on a file DB (WAL, its default synchronous=FULL), "
                    "100 StoredEvents per insert_events; baseline is the faster of "
                    + ", ".join(f"{name.split()[1]} {per_second(rate)}" for name, rate in peers.items())))
    return rows


def _list(values: list[float]) -> str:
    return "/".join(f"{value:,.0f}" for value in values)


def main() -> list[Row]:
    return [*figure_1(), *figure_2()]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--count"]:
        _counted_loop(*sys.argv[2:5])
        sys.exit(0)
    for row in main():
        print(" | ".join(row.cells()))
        print("   ", row.note)
