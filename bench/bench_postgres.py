"""Figure 10: the PostgreSQL backend against hand-written psycopg, in the same run on the same server.

- single durable append: PostgresStore.append against one INSERT + commit per event (same table
  shape, keys and indexes as eventsvc's ``event`` table, seqs counted in Python: no concurrency
  control, no idempotency, no NOTIFY);
- batch of 100: PostgresStore.append_many against one multi-row INSERT + commit per 100 events,
  and against eventsourcing's PostgreSQL recorder (when installed: pip install -e '.[bench]').

The server is BENCH_DATABASE_URL, else EVENTSVC_TEST_DATABASE_URL, else the local one; a
throwaway database is created and dropped. Skipped (one row saying why) when none answers.
"""
from __future__ import annotations

import itertools
import json
import os
import secrets
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Row, interleaved, median, per_second, rate_for  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
    "EVENTSVC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 100
BASELINE_TABLE = """
CREATE TABLE plain_event (session_id text COLLATE "C" NOT NULL, seq bigint NOT NULL, run_id text COLLATE "C",
    type text COLLATE "C" NOT NULL, event_id text COLLATE "C" NOT NULL, "timestamp" text NOT NULL,
    envelope text NOT NULL, PRIMARY KEY (session_id, seq), UNIQUE (session_id, event_id));
CREATE INDEX plain_run ON plain_event (session_id, run_id, seq);
"""
INSERT = ('INSERT INTO plain_event (session_id, seq, run_id, type, event_id, "timestamp", envelope) '
          "VALUES (%s, %s, %s, %s, %s, %s, %s)")


def _database_url(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class HandWritten:
    """What one would write by hand with psycopg: INSERT, commit."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url)
        self.conn.execute(BASELINE_TABLE)
        self.conn.commit()
        self.seqs: dict[str, int] = {}

    def _rows(self, session_id: str, events: list[dict]) -> list[tuple]:
        rows = []
        for event in events:
            seq = self.seqs[session_id] = self.seqs.get(session_id, 0) + 1
            envelope = common.stored_envelope(event, session_id, seq)
            rows.append((session_id, seq, envelope["run_id"], envelope["type"], envelope["event_id"],
                         envelope["timestamp"], json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)))
        return rows

    def append(self, session_id: str, event: dict) -> int:
        self.conn.execute(INSERT, self._rows(session_id, [event])[0])
        self.conn.commit()
        return 1

    def append_many(self, session_id: str, events: list[dict]) -> int:
        rows = self._rows(session_id, events)
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        self.conn.execute(INSERT.split(" VALUES ")[0] + " VALUES " + values, [v for row in rows for v in row])
        self.conn.commit()
        return len(rows)


def _events(prefix: str, size: int):
    """Endless (session, events): a run per batch, sessions of 1,000 events."""
    for n in itertools.count():
        run_id = f"{prefix}-r{n}"
        yield f"{prefix}-s{n * size // 1000}", [common.input_event(run_id, 2 + k % (common.EVENTS_PER_RUN - 3))
                                                for k in range(size)]


def _eventsourcing(url: str):
    try:
        from eventsourcing.persistence import StoredEvent
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
    except ImportError:
        return None
    parts = urlsplit(url)
    datastore = PostgresDatastore(dbname=parts.path.lstrip("/"), host=parts.hostname or "127.0.0.1",
                                  port=str(parts.port or 5432), user=parts.username or "postgres",
                                  password=parts.password or "")
    recorder = PostgresApplicationRecorder(datastore)
    recorder.create_table()

    def insert(events: list[dict]) -> int:
        originator = uuid.uuid4()
        recorder.insert_events([
            StoredEvent(originator_id=originator, originator_version=version, topic="bench:AgentEvent",
                        state=json.dumps(common.stored_envelope(event, "es", version), separators=(",", ":")).encode())
            for version, event in enumerate(events, 1)])
        return len(events)

    return insert, datastore


def main() -> list[Row]:
    try:
        import psycopg

        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - no server: one row says so
        why = f"PostgreSQL not reachable at {ADMIN_URL.split('@')[-1]} ({type(exc).__name__})"
        return [common.skipped("10 PostgreSQL single append", "≥ 0.7", why),
                common.skipped("10 PostgreSQL batch of 100", "≥ 1.0", why)]
    from eventsvc.store.postgres import PostgresStore, upgrade

    name = f"eventsvc_bench_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    url = _database_url(name)
    try:
        upgrade(url)
        store = PostgresStore(url, pool_size=2)
        plain = HandWritten(url)
        peer = _eventsourcing(url)
        try:
            return _figures(store, plain, peer)
        finally:
            store.close()
            plain.conn.close()
            if peer:
                peer[1].close()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _figures(store, plain: HandWritten, peer) -> list[Row]:
    seconds = common.LOOP_SECONDS
    ours_single, theirs_single = _events("one", 1), _events("plain-one", 1)

    def one(events) -> int:
        session_id, [event] = next(events)
        return 1 if store.append(session_id, event) else 0

    singles = interleaved({
        "eventsvc": lambda: rate_for(seconds, lambda: one(ours_single)),
        "baseline": lambda: rate_for(seconds, lambda: plain.append(*_single(theirs_single))),
    })
    ours_batch, theirs_batch, peer_batch = _events("many", BATCH), _events("plain-many", BATCH), _events("es", BATCH)
    contenders = {
        "eventsvc": lambda: rate_for(seconds, lambda: len(store.append_many(*next(ours_batch)))),
        "baseline": lambda: rate_for(seconds, lambda: plain.append_many(*next(theirs_batch))),
    }
    if peer:
        contenders["eventsourcing"] = lambda: rate_for(seconds, lambda: peer[0](next(peer_batch)[1]))
    batches = interleaved(contenders)
    ours, theirs = median(singles["eventsvc"]), median(singles["baseline"])
    rows = [Row("10 PostgreSQL durable single append (events/s)", per_second(ours), per_second(theirs), ours / theirs,
                "≥ 0.7", ours / theirs >= 0.7,
                "baseline: hand-written psycopg INSERT + commit per event into a table with the same keys and "
                f"indexes; synchronous_commit on for both; runs: eventsvc {_list(singles['eventsvc'])}, "
                f"baseline {_list(singles['baseline'])}")]
    ours, theirs = median(batches["eventsvc"]), median(batches["baseline"])
    rows.append(Row("10 PostgreSQL batch of 100 vs hand-written multi-row INSERT (events/s)", per_second(ours),
                    per_second(theirs), ours / theirs, "≥ 0.5", ours / theirs >= 0.5,
                    f"one multi-row INSERT + commit per 100 events; runs: eventsvc {_list(batches['eventsvc'])}, "
                    f"baseline {_list(batches['baseline'])}"))
    if peer:
        theirs = median(batches["eventsourcing"])
        rows.append(Row("10 PostgreSQL batch of 100 vs eventsourcing (events/s)", per_second(ours), per_second(theirs),
                        ours / theirs, "≥ 1.0", ours / theirs >= 1.0,
                        f"eventsourcing PostgresApplicationRecorder, 100 StoredEvents per insert_events; runs: "
                        f"{_list(batches['eventsourcing'])}"))
    else:
        rows.append(common.skipped("10 PostgreSQL batch of 100 vs eventsourcing", "≥ 1.0",
                                   "eventsourcing's PostgreSQL recorder is not installed (pip install -e '.[bench]')"))
    return rows


def _single(events) -> tuple[str, dict]:
    session_id, [event] = next(events)
    return session_id, event


def _list(values: list[float]) -> str:
    return "/".join(f"{value:,.0f}" for value in values)


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print("   ", row.note)
