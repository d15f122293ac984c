"""EventStore, the files backend: JSON-lines segments per session and a SQLite index (no Flask, no click in here).

Appends go to the session's JSON-lines segment first and to the SQLite index second;
reads find byte ranges in the index and return the log's own bytes. The log is the truth:
the index can always be rebuilt from the segments, never the reverse.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar


from ...errors import RunNotFound, SessionNotFound, StorageError, ValidationFailed
from ...schemas import EventInputSchema, ID_RULE, is_valid_id
from ...types import EVENT_TYPES, RUN_TERMINAL_TYPES, EventTypeSet
from .. import listings, rules
from . import appends, reads, seals, segments, untrusted
from ..base import AppendResult, EnvelopeReads, Page
from ..drafts import AppendShortcuts, Draft, prepare
from .index import (BUSY_TIMEOUT_MS, DRIVER_ERRORS, INDEX_FILE, SCHEMA_VERSION, BeforeAppend, Index, Location,
                    SessionState, index_version_before, is_corruption, schema_problem, storage_error)
from ..listings import SummaryPage
from .locks import LOCKS_DIR, Locks
from .recovery import Unindexable, UnsafeFiles, catch_up, is_consistent
from .totals import StoreTotals, TotalsReader
from .type_filter import FilteredPage
from ..watch import AppendWatcher

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
RECOVERY_MIN_LINE_BYTES = 8 * 1024 * 1024


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    """Driver errors leave the store as StorageFull/StorageError, never as SQLite's own exceptions."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except DRIVER_ERRORS as exc:
            log.error("index error in %s: %s", method.__name__, exc)
            raise storage_error(exc, args[0].data_dir) from None

    return wrapper


@dataclass(frozen=True)
class ReindexReport:
    events: int
    sessions: int
    seconds: float
    damaged: dict[str, str]  # session -> why its log could not be indexed past some line


class EventStore(AppendShortcuts, EnvelopeReads):
    """A durable, append-only event log per session with a rebuildable SQLite index.

    Safe to share between threads, and between processes that open the same ``data_dir``.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: bool = True,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                 event_types: EventTypeSet = EVENT_TYPES, io: segments.SegmentIO | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.segments_dir = self.data_dir / segments.SEGMENTS_DIR
        for folder in (self.segments_dir, self.data_dir / LOCKS_DIR):
            try:  # a folder from elsewhere: its own folders are never followed out of it
                untrusted.check_directory(folder)
            except untrusted.NotRegular as exc:
                raise StorageError(f"{exc.filename} is {exc.what}, not a folder: this data folder is refused") from None
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        self._segments_root = str(self.segments_dir)  # the hot path joins strings, not Paths
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.max_event_bytes = max_event_bytes
        # The longest line recovery holds: with room above the limit, since a lower limit set later
        # must not make lines stored under a higher one unreadable, but bounded whatever a received
        # log holds (a longer line stops the repair: the session needs an operator).
        self._max_line = max(max_event_bytes, RECOVERY_MIN_LINE_BYTES)
        self.event_types = event_types
        self.io = io or segments.SegmentIO()
        self._schema = EventInputSchema(event_types=event_types)
        self._locks = Locks(self.data_dir / LOCKS_DIR)
        self.damaged: dict[str, str] = {}
        self.unreadable: dict[str, str] = {}  # session -> why its folder is never read (a link, not a folder)
        self._opened: Index | None = None
        self._opening = threading.Lock()
        self._totals = TotalsReader(self._segments_root)
        self.watcher = AppendWatcher(lambda ids: self._index.last_seqs(ids), lambda: self._index.data_version())
        try:
            self._index  # noqa: B018 - open and recover now, so the first request does not pay for it
        except StorageError as exc:
            # A full or failing disk must not stop the service from starting: every call
            # answers 507/503 until the index opens, and then recovery runs as usual.
            log.error("the index cannot be opened yet (%s); will retry on each request", exc.message)

    # -- opening and recovery ----------------------------------------------------------------

    @property
    def _index(self) -> Index:
        """The open index; opens it (and recovers the sessions) on first use, raising StorageError if it can't."""
        if self._opened is None:
            with self._opening:
                if self._opened is None:
                    index = self._open_index()
                    self._opened = index
                    self.recover()
        return self._opened

    def _open_index(self) -> Index:
        """Open the index; a corrupt or foreign one is moved aside and rebuilt from the log.

        Opening (and creating) is safe to race: SQLite serialises the schema statements. Only
        the move aside needs the store to itself.
        """
        path = self.data_dir / INDEX_FILE
        try:
            return _checked_index(path, self._locks)
        except DRIVER_ERRORS as exc:
            if not is_corruption(exc):
                raise storage_error(exc, self.data_dir) from None  # a full or failing disk: never move it aside
        with self._locks.store(exclusive=True):
            try:
                return _checked_index(path, self._locks)  # another process may have repaired it meanwhile
            except DRIVER_ERRORS as exc:
                if not is_corruption(exc):
                    raise storage_error(exc, self.data_dir) from None
                stamp = time.strftime("%Y%m%dT%H%M%S")
                older = index_version_before(path)
                if older is not None:  # an upgrade, not damage: the index is derived from the log
                    log.warning("index %s has schema version %d, from an older eventsvc (now %d); moving it "
                                "aside and rebuilding it from the log", path, older, SCHEMA_VERSION)
                    aside = f"v{older}-{stamp}"
                else:
                    log.error("index %s is unusable (%s); moving it aside and rebuilding from the log", path, exc)
                    aside = f"corrupt-{stamp}"
                for suffix in ("", "-wal", "-shm"):
                    old = path.with_name(path.name + suffix)
                    if os.path.lexists(old):  # a link is moved aside itself, its target never touched
                        old.rename(old.with_name(f"{old.name}.{aside}"))
                return Index(path, write_lock=self._locks.index_writer)

    def recover(self) -> None:
        """Catch every session's index up with its log (cheap: two stats per clean session)."""
        states = {state.session_id: state for state in self._index.session_states()}
        for entry in os.scandir(self.segments_dir):
            if entry.is_symlink() and is_valid_id(entry.name):
                # A folder received from elsewhere: its link is never followed, its session never served.
                self.unreadable[entry.name] = "the session folder is a symbolic link"
                log.error("session %s is not served: its folder is a symbolic link", entry.name)
            elif entry.is_dir(follow_symlinks=False) and is_valid_id(entry.name):
                if not is_consistent(states.get(entry.name), entry.path):
                    try:
                        self._repair(entry.name)
                    except StorageError:
                        pass  # recorded in self.damaged; the other sessions are served as usual

    def _repair(self, session_id: str) -> SessionState | None:
        with self._locks.session(session_id):
            return self._caught_up(session_id)

    def _caught_up(self, session_id: str) -> SessionState | None:
        """The session's checkpoint, after repairing the tail if the log moved. Caller holds the lock."""
        return self._repaired(session_id, self._index.session_state(session_id))[0]

    def _repaired(self, session_id: str, state: SessionState | None) -> tuple[SessionState | None, bool]:
        """(checkpoint, whether a repair ran) given the checkpoint just read. Caller holds the lock."""
        if is_consistent(state, os.path.join(self._segments_root, session_id)):
            self.damaged.pop(session_id, None)  # an operator may have mended the log meanwhile
            return state, False
        try:
            state = catch_up(self._index, self.segments_dir / session_id, session_id, max_line=self._max_line)
        except Unindexable as exc:
            self.damaged[session_id] = exc.message
            if isinstance(exc, UnsafeFiles):
                self.unreadable[session_id] = exc.message
            log.error("session %s needs an operator: %s", session_id, exc.message)
            raise StorageError(f"session {session_id!r} has a log line that cannot be indexed; "
                               "run `eventsvc audit` on it", {"reason": exc.message}) from None
        self.damaged.pop(session_id, None)
        self.unreadable.pop(session_id, None)
        return state, True

    def close(self) -> None:
        self.watcher.close()
        if self._opened is not None:
            self._opened.close()
        self._locks.close()

    def log_bytes(self) -> int:
        """The size of every segment of every session: what a reindex reads (for progress)."""
        return sum(segments.file_size(self.segments_dir / session_id / segments.segment_name(base))
                   for session_id in self.session_ids()
                   for base in segments.list_bases(self.segments_dir / session_id))

    def session_ids(self) -> list[str]:
        """Every session with a folder in the log, sorted."""
        return sorted(entry.name for entry in os.scandir(self.segments_dir)
                      if entry.is_dir(follow_symlinks=False) and is_valid_id(entry.name))

    # -- operations --------------------------------------------------------------------------

    @_translated
    def reindex(self, *, wait_seconds: float = 10.0, on_bytes: Callable[[int], None] | None = None) -> ReindexReport:
        """Rebuild the index from the segments into a new file, then swap its rows in atomically.

        The swap is one SQLite transaction on the live index, so a crash at any point leaves the
        old index whole, and readers in other processes see the old or the new, never a mix.
        Appends wait while it runs; raises StoreBusy if the store lock is not free in time.
        The live index was checked when opened: its schema is the store's, so the swap runs no
        trigger or view a received index may have held. ``on_bytes`` hears progress in bytes read.
        """
        started = time.monotonic()
        with self._locks.store(exclusive=True, wait=False, patience=wait_seconds):
            fresh_path = self.data_dir / (INDEX_FILE + ".new")
            _remove_database(fresh_path)
            fresh = Index(fresh_path)
            # A scratch file, removed above if a crash left one, and read only once it is complete.
            fresh.db.execute_sql("PRAGMA synchronous = OFF")
            damaged: dict[str, str] = {}
            unreadable: dict[str, str] = {}
            try:
                for session_id in _in_write_order(self.segments_dir, self.session_ids()):
                    try:
                        catch_up(fresh, self.segments_dir / session_id, session_id,
                                 max_line=self._max_line, on_bytes=on_bytes)
                    except Unindexable as exc:
                        damaged[session_id] = exc.message
                        if isinstance(exc, UnsafeFiles):
                            unreadable[session_id] = exc.message
                events, sessions = fresh.counts()
            finally:
                fresh.close()
            self._index.replace_from(fresh_path)
            _remove_database(fresh_path)
            self.damaged, self.unreadable = damaged, unreadable
        return ReindexReport(events, sessions, time.monotonic() - started, damaged)

    @_translated
    def seal_active(self, session_id: str) -> dict[str, Any] | None:
        """Seal what the session's active segment holds so far (for shipping a folder); None if empty."""
        if not is_valid_id(session_id):
            raise ValidationFailed("invalid session_id", {"session_id": [ID_RULE]})
        self._index  # noqa: B018 - opened before the store lock: opening may need the store to itself
        with self._locks.store(exclusive=False), self._locks.session(session_id):
            state = self._caught_up(session_id)
            if state is None or state.end_offset == 0:
                return None
            return seals.write_seal(self.segments_dir / session_id, state.segment, state.end_offset)

    # -- appends -----------------------------------------------------------------------------

    @_translated
    def append_batch(self, session_id: str, events: Sequence[dict[str, Any]], *,
                     default_source: str = "api") -> AppendResult:
        """``append_many`` that also says how many events were new (the API answers 200 or 201 by it)."""
        if not events:
            return AppendResult([], 0)
        drafts = prepare(session_id, events, schema=self._schema, default_source=default_source)
        event_ids = [draft.event_id for draft in drafts]
        run_ids = {draft.run_id for draft in drafts if draft.run_id is not None}
        index = self._index  # opened before the store lock: opening may need the store to itself
        if self.unreadable and session_id in self.unreadable:
            raise StorageError(f"session {session_id!r} cannot be read", {"reason": self.unreadable[session_id]})
        with self._locks.store(exclusive=False), self._locks.session(session_id):
            known = index.before_append(session_id, event_ids, run_ids)
            state, repaired = self._repaired(session_id, known.state)
            if session_id in self.damaged:
                raise StorageError(f"session {session_id!r} needs repair", {"reason": self.damaged[session_id]})
            if repaired:  # the repair may have indexed some of these ids, or claimed a run
                known = index.before_append(session_id, event_ids, run_ids)
            return self._append_locked(session_id, drafts, known)

    def _append_locked(self, session_id: str, drafts: list[Draft], known: BeforeAppend) -> AppendResult:
        resent = (rules.find_resent(drafts, self._read_envelopes(session_id, sorted(known.stored.values())))
                  if known.stored else {})
        fresh = [draft for draft in drafts if draft.event_id not in resent] if resent else drafts
        if not fresh:
            return AppendResult([resent[draft.event_id] for draft in drafts], 0)

        state = known.state
        last_seq = state.last_seq if state else 0
        rules.check_expected_seqs(fresh, last_seq)
        rules.runs_to_claim(session_id, fresh, last_seq, known.run_owners)  # another session's run: refused
        lines = [draft.line(seq) for seq, draft in enumerate(fresh, last_seq + 1)]
        rules.check_sizes(fresh, lines, self.max_event_bytes)

        segment, offset = self._segment_for(session_id, state, last_seq + 1)
        path = os.path.join(self._segments_root, session_id, segments.segment_name(segment))
        data = b"".join(lines)
        if known.stale_mark and len(lines) == 1:
            # A batch died between its mark and its first byte, or failed and could not drop it: the
            # mark may point where this line goes. Dropped durably first, or a power cut that lost this
            # append's index commit would have recovery cut the acknowledged line aside as that batch.
            self._index.clear_batch(session_id, durable=self.fsync)
        if len(lines) > 1:
            self._index.mark_batch(session_id, segment, offset, offset + len(data), durable=self.fsync)
        # Segment first: the index can always be rebuilt from the log, never the reverse.
        try:
            appends.write_log(path, offset, data, fsync=self.fsync, io=self.io)
        except StorageError:
            if len(lines) > 1:
                try:
                    # Cut back already: the mark points at nothing. Durably, like the mark, or a power cut
                    # could bring it back over the next append's line (see known.stale_mark above).
                    self._index.clear_batch(session_id, durable=self.fsync)
                except DRIVER_ERRORS:
                    pass  # left behind: the session's next single append drops it (known.stale_mark)
            raise
        rows, end = appends.index_rows(session_id, fresh, lines, last_seq, segment, offset)
        new_state = SessionState(session_id, last_seq + len(fresh), segment, end)
        try:
            self._index.commit_append(new_state, rows, known, marked=len(lines) > 1)
        except BaseException:
            # Not acknowledged, so not kept: cut the log back to where the index ends.
            appends.undo_write(path, offset)
            raise
        self.watcher.appended(session_id, new_state.last_seq)
        seqs = {draft.event_id: seq for seq, draft in enumerate(fresh, last_seq + 1)}
        events = [resent[d.event_id] if d.event_id in resent else d.stored(seqs[d.event_id]) for d in drafts]
        written = {draft.event_id: line[:-1] for draft, line in zip(fresh, lines)}
        return AppendResult(events, len(fresh), [written.get(draft.event_id) for draft in drafts])

    def _segment_for(self, session_id: str, state: SessionState | None, next_seq: int) -> tuple[int, int]:
        """Where the next lines go: (segment base, offset). Rolls (and seals) once a segment reaches its size."""
        if state is None:
            session_dir = self.segments_dir / session_id
            if not session_dir.exists():
                session_dir.mkdir()
                if self.fsync:
                    segments.fsync_dir(self.segments_dir)
            return next_seq, 0
        if state.end_offset >= self.segment_bytes:
            session_dir = self.segments_dir / session_id
            try:
                seals.write_seal(session_dir, state.segment, state.end_offset)
            except OSError as exc:
                raise appends.storage_error(session_dir, exc) from None
            return next_seq, 0
        return state.segment, state.end_offset

    # -- reads -------------------------------------------------------------------------------

    @_translated
    def read_page(self, session_id: str, *, run_id: str | None = None, since_seq: int = 0,
                  limit: int = 100, types: Iterable[str] | None = None) -> Page:
        """Envelopes with ``seq > since_seq`` in seq order, as the log's bytes (only of ``types``, if given).

        Raises SessionNotFound when the session has no events at all, ValidationFailed for bad
        bounds or an unregistered type.
        """
        rules.check_page_bounds(since_seq, limit)
        wanted = self.check_types(types)
        if wanted is not None:
            page = self._index.filtered_page(session_id, run_id, wanted, since_seq=since_seq, limit=limit)
            if not page.locations and self._index.session_state(session_id) is None:
                raise SessionNotFound(f"session {session_id!r} not found")
            return self._filtered(session_id, page)
        locations = self._index.page(session_id, run_id, since_seq=since_seq, limit=limit + 1)
        if not locations and self._index.session_state(session_id) is None:
            reason = self.unreadable.get(session_id) or self.damaged.get(session_id)
            if reason:  # a session the log holds but this store cannot read: unavailable, not absent
                raise StorageError(f"session {session_id!r} cannot be read", {"reason": reason})
            raise SessionNotFound(f"session {session_id!r} not found")
        return self._page(session_id, locations, since_seq, limit)

    @_translated
    def read_run_page(self, run_id: str, *, since_seq: int = 0, limit: int = 100,
                      types: Iterable[str] | None = None) -> Page:
        """A page of one run's events, found without knowing its session. Raises RunNotFound."""
        rules.check_page_bounds(since_seq, limit)
        wanted = self.check_types(types)
        if wanted is not None:
            session_id = self._index.run_session(run_id) if is_valid_id(run_id) else None
            if session_id is None:
                raise RunNotFound(f"run {run_id!r} not found")
            return self._filtered(session_id, self._index.filtered_page(session_id, run_id, wanted,
                                                                        since_seq=since_seq, limit=limit))
        session_id, locations = (self._index.run_page(run_id, since_seq=since_seq, limit=limit + 1)
                                 if is_valid_id(run_id) else (None, []))
        if session_id is None:
            raise RunNotFound(f"run {run_id!r} not found")
        return self._page(session_id, locations, since_seq, limit)

    def _page(self, session_id: str, locations: list[Location], since_seq: int, limit: int) -> Page:
        has_more = len(locations) > limit
        locations = locations[:limit]
        seqs = [loc[0] for loc in locations]
        return Page(session_id, self._read_lines(session_id, locations), seqs, has_more,
                    seqs[-1] if seqs else since_seq)

    def _filtered(self, session_id: str, page: FilteredPage) -> Page:
        return Page(session_id, self._read_lines(session_id, page.locations), [loc[0] for loc in page.locations],
                    page.has_more, page.scanned_to)

    def check_types(self, types: Iterable[str] | None) -> list[str] | None:
        """The type filter as a list (None: no filter); raises ValidationFailed for an unregistered name."""
        return listings.check_types(types, self.event_types)

    @_translated
    def _envelopes(self, session_id: str, run_id: str | None, since_seq: int, limit: int,
                   types: Iterable[str] | None) -> list[dict]:
        rules.check_page_bounds(since_seq, limit)
        wanted = self.check_types(types)
        if wanted is None:
            return self._read_envelopes(session_id, self._index.page(session_id, run_id, since_seq=since_seq,
                                                                     limit=limit))
        locations: list[Location] = []
        while len(locations) < limit:
            page = self._index.filtered_page(session_id, run_id, wanted, since_seq=since_seq,
                                             limit=limit - len(locations))
            locations += page.locations
            if not page.has_more:
                break
            since_seq = page.scanned_to
        return self._read_envelopes(session_id, locations)

    @_translated
    def wait_for_events(self, session_id: str, after_seq: int, timeout: float) -> int:
        """Block until the session has an event after ``after_seq`` (or ``timeout`` passes); returns its last seq.

        Holds no lock while waiting; appends from other processes are noticed within the
        watcher's poll interval.
        """
        return self.watcher.wait(session_id, after_seq, timeout)

    @_translated
    def last_seq(self, session_id: str) -> int:
        state = self._index.session_state(session_id)
        return state.last_seq if state else 0

    @_translated
    def run_terminal_seq(self, session_id: str, run_id: str) -> int | None:
        """Seq of the run's terminal event (run_completed, run_failed, run_cancelled), if it has one."""
        return self._index.first_of_types(session_id, run_id, RUN_TERMINAL_TYPES)

    @_translated
    def run_session(self, run_id: str) -> str | None:
        """The session a run belongs to, or None for an unknown run."""
        return self._index.run_session(run_id)

    @_translated
    def totals(self) -> StoreTotals:
        """Sessions, events and bytes held, from the index's session table (no scan of the log)."""
        return self._totals.read(self._index)

    # -- summaries ---------------------------------------------------------------------------

    @_translated
    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session's summary (a primary-key read of the index), or None when it is unknown."""
        return self._index.get_session(session_id) if is_valid_id(session_id) else None

    @_translated
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's summary (a primary-key read of the index), or None when it is unknown."""
        return self._index.get_run(run_id) if is_valid_id(run_id) else None

    @_translated
    def list_sessions(self, limit: int = 100, cursor: str | None = None) -> SummaryPage:
        """Session summaries, most recently appended-to first; pass ``next_cursor`` back for the next page.

        A session appended to while a caller pages moves to the first page (it may then be missed
        by that walk); a walk that sees no appends returns every session once. Raises
        ValidationFailed for a limit outside 1-1000 or a malformed cursor.
        """
        listings.check_limit(limit)
        position = listings.decode(listings.SESSIONS, cursor)
        found = self._index.list_sessions(before=position[0] if position else None, limit=limit + 1)
        return listings.page_of(found, limit, listings.SESSIONS)

    @_translated
    def list_runs(self, *, session_id: str | None = None, statuses: Iterable[str] | None = None,
                  limit: int = 100, cursor: str | None = None) -> SummaryPage:
        """Run summaries, most recently appended-to first, optionally of one session and/or some statuses.

        Ordering and cursors as ``list_sessions``. Raises ValidationFailed for an unknown status, an
        invalid session_id, a limit outside 1-1000 or a malformed cursor.
        """
        listings.check_limit(limit)
        wanted = listings.check_statuses(statuses)
        if session_id is not None:
            listings.check_id("session_id", session_id)
        position = listings.decode(listings.RUNS, cursor)
        found = self._index.list_runs(session_id=session_id, statuses=wanted,
                                      before=position if position else None, limit=limit + 1)  # type: ignore[arg-type]
        return listings.page_of(found, limit, listings.RUNS)

    @_translated
    def list_session_runs(self, session_id: str, *, limit: int = 100, cursor: str | None = None) -> SummaryPage:
        """The session's run summaries in order of their first event. Raises SessionNotFound."""
        listings.check_limit(limit)
        position = listings.decode(listings.SESSION_RUNS, cursor)
        if not is_valid_id(session_id) or self._index.session_state(session_id) is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        found = self._index.list_session_runs(session_id, after=position[0] if position else 0, limit=limit + 1)
        return listings.page_of([(run["first_seq"], run) for run in found], limit, listings.SESSION_RUNS)

    def query_plan(self, session_id: str, run_id: str | None = None) -> str:
        return self._index.query_plan(session_id, run_id)

    def _read_envelopes(self, session_id: str, locations: list[Location]) -> list[dict]:
        return [json.loads(line) for line in self._read_lines(session_id, locations)]

    def _read_lines(self, session_id: str, locations: list[Location]) -> list[bytes]:
        if self.unreadable and session_id in self.unreadable:
            raise StorageError(f"session {session_id!r} cannot be read", {"reason": self.unreadable[session_id]})
        return reads.read_lines(os.path.join(self._segments_root, session_id), locations)


def _checked_index(path: Path, locks: Locks) -> Index:
    """Open the index once its files are regular and its schema is the store's (or a part of it,
    as a store still creating it leaves it); raises a corruption error otherwise, so it is moved
    aside and rebuilt: a trigger or view in a received index never runs."""
    for suffix in ("", "-wal", "-shm"):
        try:
            untrusted.check_regular(path.with_name(path.name + suffix))
        except untrusted.NotRegular as exc:
            raise sqlite3.DatabaseError(f"file is not a database: {exc.filename} is {exc.what}") from None
    if untrusted.lkind(path) is not None:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            problem = schema_problem(connection, exact=False)
        finally:
            connection.close()
        if problem:
            raise sqlite3.DatabaseError(problem)
    index = Index(path, write_lock=locks.index_writer)
    try:
        index.db.execute_sql("SELECT count(*) FROM session LIMIT 1").fetchone()
    except DRIVER_ERRORS:
        index.close()
        raise
    return index


def _in_write_order(segments_dir: Path, session_ids: list[str]) -> list[str]:
    """Sessions by when their active segment was last written, so that a rebuilt index lists the
    most recently appended-to first as the old one did (the log keeps no order across sessions)."""
    def last_write(session_id: str) -> tuple[float, str]:
        bases = segments.list_bases(segments_dir / session_id)
        try:
            return (os.stat(segments_dir / session_id / segments.segment_name(bases[-1])).st_mtime if bases else 0.0,
                    session_id)
        except OSError:
            return 0.0, session_id

    return sorted(session_ids, key=last_write)


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
