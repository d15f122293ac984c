"""Figures 1 and 2: durable appends in process, next to the least code that is as durable.

1. ``EventStore.append`` (fsync on) vs "write the line + fsync + sqlite3 INSERT in its own transaction".
2. ``append_many`` of 100 vs "write 100 lines + one fsync + sqlite3 executemany in one transaction",
   and vs the eventsourcing library's SQLite recorders inserting the same 100 events per commit.

The baselines use the same SQLite pragmas and the same table and indexes as eventsvc's index
(so the ratio measures the software path, not a schema choice) and the same fdatasync call
eventsvc uses; they validate nothing. Run alone: ``python bench/bench_append.py``.
"""
from __future__ import annotations

import itertools
import json
import os
import sqlite3
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Row, interleaved, median, per_second, rate_for, scratch  # noqa: E402

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


def _single_events():
    """Endless (session, event): run steps, 1,000 per session (one run each), then the next session.

    Sessions are kept at the size of the cached stores' so that the figure does not depend
    on how long the bench runs (a session's size should not matter; see figure 5).
    """
    for k in itertools.count():
        session_id, run_id = f"{SESSION}-{k}", f"r-append-{k}"
        yield session_id, common.input_event(run_id, 0)
        for n in range(1, SESSION_EVENTS):
            yield session_id, common.input_event(run_id, 2 + n % (common.EVENTS_PER_RUN - 3))


def _batches():
    """Endless (session, 100 events): a new run per batch, 10 batches per session."""
    for n in itertools.count():
        yield f"{SESSION}-{n // (SESSION_EVENTS // BATCH)}", common.run_events(f"r-batch-{n}")


def figure_1() -> Row:
    with scratch("append-1") as folder:
        store = EventStore(folder / "eventsvc", fsync=True)
        plain = PlainLog(folder / "plain")
        floor = PlainLog(folder / "floor")
        ours, theirs, bare = _single_events(), _single_events(), _single_events()

        def append_one() -> int:
            store.append(*next(ours))
            return 1

        append_one()
        plain.append(next(theirs)[1])
        seconds = common.LOOP_SECONDS
        try:
            rates = interleaved({
                "eventsvc": lambda: rate_for(seconds, append_one),
                "baseline": lambda: rate_for(seconds, lambda: plain.append(next(theirs)[1])),
                "floor": lambda: rate_for(seconds, lambda: floor.write_fsync_only(next(bare)[1])),
            })
        finally:
            store.close()
            plain.close()
            floor.close()
    ours, theirs, bare = (median(rates[name]) for name in ("eventsvc", "baseline", "floor"))
    return Row("1 durable single append (events/s)", per_second(ours), per_second(theirs), ours / theirs,
               "≥ 0.8", ours / theirs >= 0.8,
               f"baseline: write line + fdatasync + sqlite3 INSERT in its own transaction (same table, indexes and "
               f"pragmas as eventsvc's index); eventsvc sessions of 1,000 events; write + fdatasync "
               f"alone: {per_second(bare)}; runs: eventsvc {_list(rates['eventsvc'])}, baseline "
               f"{_list(rates['baseline'])}")


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

    def append_batch() -> int:
        return len(store.append_many(*next(batches)))

    with scratch("append-2") as folder:
        store = EventStore(folder / "eventsvc", fsync=True)
        plain = PlainLog(folder / "plain")
        contenders = {
            "eventsvc": append_batch,
            "baseline": lambda: plain.append_many(next(batches)[1]),
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
            rates = interleaved({name: lambda op=op: rate_for(seconds, op) for name, op in contenders.items()})
        finally:
            store.close()
            plain.close()
            for recorder in recorders.values():
                recorder.datastore.close()
    ours, theirs = median(rates["eventsvc"]), median(rates["baseline"])
    rows = [Row("2 durable batched append, 100/commit (events/s)", per_second(ours), per_second(theirs),
                ours / theirs, "≥ 0.5", ours / theirs >= 0.5,
                "baseline: write 100 lines + one fdatasync + sqlite3 executemany in one transaction; eventsvc: "
                "a new run per batch, sessions of 1,000 events; runs: "
                f"eventsvc {_list(rates['eventsvc'])}, baseline {_list(rates['baseline'])}")]
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
    return [figure_1(), *figure_2()]


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print("   ", row.note)
