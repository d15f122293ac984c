"""The audit's index check: index.sqlite3, opened read-only, against the lines the audit streams.

The index is derived from the log, so the log is the reference: a line without a row is a
missing row, a row without a line an extra one, and a row that names other bytes (segment,
offset, length) or other fields than its line holds points at the wrong bytes. Rows are read
in seq order beside the lines (a merge), so memory stays flat however large a session is.

The index of a received folder is data, not code: it is opened read-only with ``trusted_schema``
off, and queried only once its schema is exactly the one the store creates (no trigger, no view,
nothing more or less); otherwise, or when it is not a regular file, the finding is
``INDEX_UNUSABLE`` and the check does nothing more. Nothing is written beside it: an index whose
write-ahead log has no shared-memory file (a copy) is read from a private copy.
"""
from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .audit_checks import AuditError
from ..store.files import summary_index, untrusted
from ..store.files.index import INDEX_FILE, schema_problem
from ..summaries import RunSummary, SessionSummary

Emit = Callable[[str, int, str, str], None]
_ROW_FIELDS = ("segment", "offset", "length", "event_id", "run_id", "type", "timestamp")


class IndexCheck:
    def __init__(self, data_dir: Path, emit: Emit) -> None:
        self.path = data_dir / INDEX_FILE
        if untrusted.lkind(self.path) is None:
            raise AuditError(f"{self.path}: no index to compare with (--index)")
        self.emit = emit
        self.name = str(self.path)
        self.scratch: tempfile.TemporaryDirectory[str] | None = None
        self.db = self._open()
        self.session_id = ""
        self.rows: Iterator[tuple] = iter(())
        self.row: tuple | None = None
        self.passed: dict[int, tuple] = {}  # rows the merge went past; normally none
        self.missing: list[Any] | None = None  # [path, line, first seq, last seq] of lines without rows

    def _open(self) -> sqlite3.Connection | None:
        """A read-only connection to an index whose schema is the store's; None after INDEX_UNUSABLE."""
        wal, shm = (self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm"))
        try:
            for path in (self.path, wal, shm):
                untrusted.check_regular(path)
            # Read-only: auditing must not change what it audits. An index at rest (no -wal file: its
            # last writer closed it) is opened immutable, so SQLite creates no -shm beside it and a
            # copy on read-only media works too; a live one (-wal and -shm) is read through its WAL;
            # a -wal without -shm (a copy) is read from a private copy, or SQLite would create one.
            path, at_rest = self.path.resolve(), untrusted.lkind(wal) is None
            if not at_rest and untrusted.lkind(shm) is None:
                self.scratch = tempfile.TemporaryDirectory(prefix="eventsvc-audit-")
                path = Path(self.scratch.name) / INDEX_FILE
                for source, target in ((self.path, path), (wal, path.with_name(INDEX_FILE + "-wal"))):
                    with untrusted.open_binary(source) as reader, open(target, "xb") as writer:
                        shutil.copyfileobj(reader, writer, untrusted.CHUNK)
                at_rest = False
            uri = f"{path.as_uri()}?mode=ro{'&immutable=1' if at_rest else ''}"
            db = sqlite3.connect(uri, uri=True)
        except untrusted.NotRegular as exc:
            self.emit(exc.filename, 0, "INDEX_UNUSABLE", f"{exc.what}, not an index file: not followed, not read")
            return None
        try:
            problem = schema_problem(db, exact=True)
        except sqlite3.Error as exc:
            problem = f"not a readable SQLite index ({exc})"
        if problem:
            db.close()
            self.emit(self.name, 0, "INDEX_UNUSABLE", f"{problem}: the index was not queried")
            return None
        return db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.scratch is not None:
            self.scratch.cleanup()

    def _query(self, sql: str, params: tuple = ()) -> Iterator[tuple]:
        if self.db is None:
            return iter(())  # an unusable index: reported once, never queried
        return self.db.execute(sql, params)  # sqlite3.Error: the caller says which index failed

    def begin(self, session_id: str, bases: list[int] | None) -> None:
        """Start a session; with ``bases``, only rows of those segments (some files of a session)."""
        sql = ('SELECT seq, segment, "offset", length, event_id, run_id, type, timestamp FROM event'
               " WHERE session_id = ?")
        if bases is not None:
            sql += f" AND segment IN ({', '.join('?' * len(bases))})"
        self.session_id = session_id
        self.rows = iter(self._query(sql + " ORDER BY seq", (session_id, *(bases or ()))))
        self.row = next(self.rows, None)
        self.passed = {}
        self.missing = None

    def line(self, path: str, line: int, seq: int, base: int | None, offset: int, length: int, obj: Any) -> None:
        if self.db is None:
            return
        row = self.row
        while row is not None and row[0] < seq:
            self.passed[row[0]] = row
            row = next(self.rows, None)
        if row is not None and row[0] == seq:
            found, self.row = row, next(self.rows, None)
        else:
            found, self.row = self.passed.pop(seq, None), row
        if found is None:
            if self.missing and self.missing[0] == path and self.missing[3] == seq - 1:
                self.missing[3] = seq
            else:
                self._flush_missing()
                self.missing = [path, line, seq, seq]
            return
        self._flush_missing()
        fields = obj if isinstance(obj, dict) else {}
        actual = (base, offset, length, *(fields.get(key) for key in _ROW_FIELDS[3:]))
        wrong = [f"{key} {mine!r} (the line's is {theirs!r})"
                 for key, mine, theirs in zip(_ROW_FIELDS, found[1:], actual) if mine != theirs]
        if wrong:
            self.emit(path, line, "INDEX_WRONG_BYTES", f"the index row for seq {seq} has " + ", ".join(wrong))

    def _flush_missing(self) -> None:
        if self.missing:
            path, line, first, last = self.missing
            seqs = f"seq {first} has" if first == last else f"seqs {first}-{last} have"
            self.emit(path, line, "INDEX_MISSING_ROW", f"{seqs} no row in the index")
            self.missing = None

    def end(self, runs: dict[str, int | None] | None, checkpoint: tuple[int, int, int] | None) -> None:
        """Finish the session: rows no line claimed; with a whole session, its runs and checkpoint too."""
        if self.db is None:
            return
        self._flush_missing()
        extra = sorted([*self.passed.values(), *([self.row] if self.row else []), *self.rows])
        start = 0
        for at in range(1, len(extra) + 1):
            if at == len(extra) or extra[at][0] != extra[at - 1][0] + 1:
                first, last = extra[start], extra[at - 1]
                seqs = f"seq {first[0]}" if first is last else f"seqs {first[0]}-{last[0]}"
                self.emit(self.name, 0, "INDEX_EXTRA_ROW", f"session {self.session_id!r}: rows for {seqs} "
                          f"(from segment {first[1]} byte {first[2]}) but no such line in the log")
                start = at
        if runs is not None:
            self._runs(runs)
        if checkpoint is not None:
            self._checkpoint(checkpoint)

    def _runs(self, runs: dict[str, int | None]) -> None:
        indexed = dict(self._query("SELECT run_id, first_seq FROM run WHERE session_id = ?", (self.session_id,)))
        where = f"session {self.session_id!r}"
        for run_id, first_seq in runs.items():
            if run_id not in indexed:
                self.emit(self.name, 0, "INDEX_MISSING_ROW", f"{where}: run {run_id!r} has no row in the run table")
            elif first_seq is not None and indexed[run_id] != first_seq:
                self.emit(self.name, 0, "INDEX_WRONG_BYTES", f"{where}: run {run_id!r} starts at seq "
                          f"{indexed[run_id]} in the index, at seq {first_seq} in the log")
        for run_id in sorted(set(indexed).difference(runs)):
            self.emit(self.name, 0, "INDEX_EXTRA_ROW", f"{where}: run {run_id!r} is in the run table, not the log")

    def _checkpoint(self, log_end: tuple[int, int, int]) -> None:
        if self.db is None:
            return
        row = next(iter(self._query("SELECT last_seq, segment, end_offset FROM session WHERE session_id = ?",
                                    (self.session_id,))), None)
        where = f"session {self.session_id!r}"
        if row is None:
            if log_end[0]:
                self.emit(self.name, 0, "INDEX_MISSING_ROW", f"{where} has no checkpoint row in the session table")
        elif not log_end[0]:
            self.emit(self.name, 0, "INDEX_EXTRA_ROW", f"{where} has a checkpoint row but no events in the log")
        elif tuple(row) != log_end:
            self.emit(self.name, 0, "INDEX_WRONG_BYTES", f"{where}: the checkpoint says seq {row[0]}, segment "
                      f"{row[1]}, byte {row[2]}; the log ends at seq {log_end[0]}, segment {log_end[1]}, "
                      f"byte {log_end[2]}")

    def unknown_sessions(self, audited: set[str]) -> None:
        """Sessions the index knows that have no folder in the (whole) data folder audited."""
        if self.db is None:
            return
        counts = dict(self._query("SELECT session_id, count(*) FROM event GROUP BY session_id"))
        others = {row[0] for row in self._query("SELECT session_id FROM session UNION SELECT session_id FROM run")}
        for session_id in sorted(set(counts).union(others).difference(audited)):
            self.emit(self.name, 0, "INDEX_EXTRA_ROW", f"session {session_id!r}: {counts.get(session_id, 0)} "
                      "event rows (and its run and checkpoint rows) but no folder in the log")

    def listing_numbers(self) -> None:
        """The ``touched`` numbers the listings order by (summary_index): unique among sessions and among
        runs, and a session's at least its runs'. Otherwise a walk of a listing repeats or skips items."""
        if self.db is None:
            return
        for table in ("session", "run"):
            for touched, count in self._query(f"SELECT touched, count(*) FROM {table} GROUP BY touched"
                                              " HAVING count(*) > 1 ORDER BY touched LIMIT 20"):
                self.emit(self.name, 0, "INDEX_WRONG_SUMMARY", f"{count} {table} rows share the listing number "
                          f"(touched) {touched}: a walk of their listing can repeat or skip them")
        for run_id, touched, session_id, session_touched in self._query(
                "SELECT r.run_id, r.touched, s.session_id, s.touched FROM run r JOIN session s USING (session_id)"
                " WHERE r.touched > s.touched ORDER BY r.run_id LIMIT 20"):
            self.emit(self.name, 0, "INDEX_WRONG_SUMMARY", f"run {run_id!r} has the listing number (touched) "
                      f"{touched}, above its session {session_id!r}'s {session_touched}")

    def summaries(self, session: SessionSummary, runs: dict[str, RunSummary]) -> None:
        """Compare the session's and its runs' summary rows with the summaries folded from its lines."""
        if self.db is None:
            return
        where = f"session {self.session_id!r}"
        try:
            indexed = summary_index.get_session(self.db, self.session_id)
        except (ValueError, TypeError, IndexError) as exc:
            self.emit(self.name, 0, "INDEX_WRONG_SUMMARY", f"{where}: its summary row cannot be read ({exc})")
            indexed = None
        if indexed is not None and session.event_count:
            self._compare(f"{where}: its summary", indexed, session.as_dict())
        for run_id, run in runs.items():
            try:
                indexed = summary_index.get_run(self.db, run_id)
            except (ValueError, TypeError, IndexError) as exc:
                self.emit(self.name, 0, "INDEX_WRONG_SUMMARY", f"{where}: run {run_id!r}'s summary row cannot be "
                          f"read ({exc})")
                continue
            if indexed is not None and indexed["session_id"] == self.session_id:
                self._compare(f"{where}: run {run_id!r}'s summary", indexed, run.as_dict())

    def _compare(self, what: str, indexed: dict[str, Any], folded: dict[str, Any]) -> None:
        wrong = [f"{key} {indexed[key]!r} (the log's is {folded[key]!r})"
                 for key in folded if indexed.get(key) != folded[key]]
        if wrong:
            self.emit(self.name, 0, "INDEX_WRONG_SUMMARY", f"{what} in the index has " + ", ".join(wrong))
