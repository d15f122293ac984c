"""The PostgreSQL schema, its numbered migrations and the version check a store makes on opening.

``eventsvc db upgrade URL`` applies the missing migrations in one transaction under an
advisory lock, so two upgrades racing (two hosts deploying at once) apply each step once.
A store refuses a database whose schema is missing, older or newer than the code's.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import SchemaMismatch

VERSION_TABLE = "eventsvc_schema_version"
UPGRADE_LOCK = 0x65767363  # 'evsc': an advisory lock key for migrations only
UPGRADE_HINT = "run `eventsvc db upgrade URL`"

# Ids are ASCII and compared byte for byte, as the files backend sorts them: COLLATE "C".
# The envelope is text, not jsonb: reads serve the exact line the files backend would write.
MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE session (
    session_id text COLLATE "C" PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq >= 1)
);
CREATE TABLE event (
    session_id text COLLATE "C" NOT NULL REFERENCES session (session_id),
    seq bigint NOT NULL CHECK (seq >= 1),
    run_id text COLLATE "C",
    type text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    "timestamp" text NOT NULL,
    envelope text NOT NULL,
    PRIMARY KEY (session_id, seq),
    CONSTRAINT event_session_event_id_key UNIQUE (session_id, event_id)
);
CREATE INDEX idx_session_event_run_seq ON event (session_id, run_id, seq);
CREATE TABLE run (
    run_id text COLLATE "C" PRIMARY KEY,
    session_id text COLLATE "C" NOT NULL REFERENCES session (session_id),
    first_seq bigint NOT NULL
);
CREATE INDEX idx_run_session ON run (session_id);
"""),
    # Run and session summaries, kept current by each append's transaction (eventsvc.summaries);
    # ``touched`` orders the listings, newest first: one number per append, from a sequence.
    (2, """
CREATE SEQUENCE eventsvc_touched;
ALTER TABLE session
    ADD COLUMN first_seq bigint NOT NULL DEFAULT 0, ADD COLUMN event_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN created_at text, ADD COLUMN updated_at text, ADD COLUMN run_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN active_runs bigint NOT NULL DEFAULT 0, ADD COLUMN closed boolean NOT NULL DEFAULT false,
    ADD COLUMN touched bigint NOT NULL DEFAULT 0;
ALTER TABLE run
    ADD COLUMN status text COLLATE "C" NOT NULL DEFAULT 'unknown', ADD COLUMN verify text,
    ADD COLUMN last_seq bigint NOT NULL DEFAULT 0, ADD COLUMN event_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN created_at text, ADD COLUMN started_at text, ADD COLUMN ended_at text, ADD COLUMN updated_at text,
    ADD COLUMN blocked bigint NOT NULL DEFAULT 0, ADD COLUMN warned bigint NOT NULL DEFAULT 0,
    ADD COLUMN counts text NOT NULL DEFAULT '{}', ADD COLUMN touched bigint NOT NULL DEFAULT 0;
CREATE INDEX idx_session_touched ON session (touched);
CREATE INDEX idx_run_status_touched ON run (status, touched, last_seq);
-- A session's runs, in first_seq order (its listing; the few of one session sort cheaply by touched too).
-- It replaces idx_run_session: every index here is one more write on each append that touches a run.
CREATE INDEX idx_run_session_first_seq ON run (session_id, first_seq);
DROP INDEX idx_run_session;
"""),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn: Any) -> int | None:
    """The schema version recorded in the database, or None when it has no eventsvc schema."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()[0]
    if not exists:
        return None
    return conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()[0]


def check(conn: Any, where: str) -> None:
    """Raise SchemaMismatch unless the database holds exactly the schema this code writes."""
    version = current_version(conn)
    if version is None:
        raise SchemaMismatch(f"the database {where} has no eventsvc schema: {UPGRADE_HINT}",
                             {"found": None, "expected": LATEST})
    if version < LATEST:
        raise SchemaMismatch(f"the database {where} has eventsvc schema version {version}, older than "
                             f"{LATEST}: {UPGRADE_HINT}", {"found": version, "expected": LATEST})
    if version > LATEST:
        raise SchemaMismatch(f"the database {where} has eventsvc schema version {version}, newer than this "
                             f"eventsvc knows ({LATEST}): upgrade eventsvc", {"found": version, "expected": LATEST})


def upgrade(conn: Any, after_step: Callable[[Any, int], None] = lambda conn, version: None) -> tuple[int | None, int]:
    """Create or migrate the schema to LATEST in one transaction; returns (version before, version after).

    ``after_step(conn, version)`` runs after each step's statements, in the same transaction (a
    step that derives data from the events: the summaries of version 2). ``conn`` must not be in
    autocommit mode: a failing step leaves the database as it was.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (UPGRADE_LOCK,))
        encoding = conn.execute("SHOW server_encoding").fetchone()[0]
        if encoding.upper() not in ("UTF8", "UTF-8"):
            raise SchemaMismatch(f"the database's encoding is {encoding}: eventsvc needs a UTF8 database",
                                 {"encoding": encoding})
        before = current_version(conn)
        if before is not None and before > LATEST:
            raise SchemaMismatch(f"the database has eventsvc schema version {before}, newer than this "
                                 f"eventsvc knows ({LATEST}): upgrade eventsvc", {"found": before})
        conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version integer PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        for version, statements in MIGRATIONS:
            if before is None or version > before:
                conn.execute(statements)
                after_step(conn, version)
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (version,))
    return before, LATEST
