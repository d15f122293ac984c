"""Cross-process locks: one per session for appends, one for the index writer, one for the whole store.

flock locks belong to an open file description, not to a process: a descriptor per
acquisition excludes threads of one process as well as other processes. The two locks
every append takes are cheaper than that: the store lock is held shared once per process
(a count of the threads inside), and the index writer lock is a thread mutex in front of
one process-wide descriptor.

Lock files live in ``<data_dir>/locks`` so that a session's folder holds nothing but its log,
and their names are fixed: no session id ever names a file. A session's lock is a one-byte
range of ``sessions.lock`` at an offset hashed from its id, taken as an open-file-description
lock (Linux ``F_OFD_SETLKW``: per descriptor like flock, byte ranges like POSIX locks). So a
session called ``store`` or ``index`` can never take the store's own locks, and the folder
does not grow with the ids clients send. Two ids that hash alike share a lock: that only
serialises their appends (a 62-bit hash makes it rare), it never mixes their logs.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ...errors import StorageError, StoreBusy

LOCKS_DIR = "locks"
STORE_LOCK, INDEX_LOCK, SESSIONS_LOCK, GATE_LOCK = "store.lock", "index.lock", "sessions.lock", "gate.lock"
LOCK_FILES = (STORE_LOCK, INDEX_LOCK, SESSIONS_LOCK, GATE_LOCK)
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW  # a lock file is never a symlink


class _ProcessLock:
    """A flock on one file, taken through one descriptor for the whole process.

    Shared mode counts the threads inside: the first takes LOCK_SH, the last drops it. So that
    a process with a steady stream of threads does lets the lock go now and then, each thread
    first passes a ``gate`` that an exclusive taker closes while it waits (see Locks.store).
    Exclusive mode lets one thread at a time in (a mutex), then takes LOCK_EX for the process.
    """

    def __init__(self, path: str, mode: int, *, gate: str | None = None) -> None:
        self.path = path
        self.mode = mode
        self._gate = _ProcessLock(gate, fcntl.LOCK_SH) if gate else None
        self._generation = 0  # bumped in a forked child: what a parent's thread held is not the child's
        self._reset()
        _process_locks.add(self)

    def _reset(self) -> None:
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._closer: weakref.finalize | None = None
        self._inside = 0

    def after_fork(self) -> None:
        """A forked child must not share the parent's open file description (nor its lock)."""
        self._generation += 1
        self._close_descriptor()  # the parent keeps its lock: it holds its own descriptor
        self._reset()

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = _open_lock_file(self.path)
            self._closer = weakref.finalize(self, _close_quietly, self._fd)  # a store never closed leaks nothing
        return self._fd

    def _close_descriptor(self) -> None:
        if self._closer is not None:
            self._closer()
        self._fd, self._closer = None, None

    def close(self) -> None:
        with self._mutex:
            if self._inside == 0:
                self._close_descriptor()
        if self._gate is not None:
            self._gate.close()

    def pass_gate(self) -> None:
        """Return at once while the gate is open; while an exclusive taker holds it, wait for it to finish."""
        with self._mutex:
            fd = self._descriptor()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)
        fcntl.flock(fd, fcntl.LOCK_UN)  # threads share this descriptor: whoever unlocks first ends it for all

    @contextmanager
    def held(self) -> Iterator[None]:
        generation = self._generation
        if self.mode == fcntl.LOCK_EX:
            with self._mutex:
                fd = self._descriptor()
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    if self._generation == generation:  # in a child forked meanwhile, fd is not ours
                        fcntl.flock(fd, fcntl.LOCK_UN)
            return
        if self._gate is not None:
            self._gate.pass_gate()
        with self._mutex:  # a thread waiting here while the first one blocks in flock is fine: both must wait
            if self._inside == 0:
                fcntl.flock(self._descriptor(), fcntl.LOCK_SH)
            self._inside += 1
        try:
            yield
        finally:
            if self._generation == generation:  # a child forked meanwhile never counted this holder
                with self._mutex:
                    self._inside -= 1
                    if self._inside == 0:
                        fcntl.flock(self._fd, fcntl.LOCK_UN)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


_process_locks: weakref.WeakSet[_ProcessLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in list(_process_locks):
        lock.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Locks:
    def __init__(self, lock_dir: Path) -> None:
        lock_dir.mkdir(parents=True, exist_ok=True)
        if not stat.S_ISDIR(os.lstat(lock_dir).st_mode):
            raise StorageError(f"{lock_dir} is not a directory (a symlink is never followed)")
        self.lock_dir = lock_dir
        self._store_lock = os.path.join(lock_dir, STORE_LOCK)
        self._gate = os.path.join(lock_dir, GATE_LOCK)
        self._sessions = os.path.join(lock_dir, SESSIONS_LOCK)
        self._store_shared = _ProcessLock(self._store_lock, fcntl.LOCK_SH, gate=self._gate)
        self._index_writer = _ProcessLock(os.path.join(lock_dir, INDEX_LOCK), fcntl.LOCK_EX)

    def close(self) -> None:
        """Close the process-wide descriptors (they reopen if used again)."""
        self._store_shared.close()
        self._index_writer.close()

    def session(self, session_id: str) -> AbstractContextManager[None]:
        """Exclusive right to append to (or repair) one session. Not re-entrant."""
        return _range_lock(self._sessions, session_slot(session_id))

    def index_writer(self) -> AbstractContextManager[None]:
        """The right to start an index write transaction.

        SQLite's own busy handler sleeps and polls (1 ms, 2 ms, 5 ms, ...) while another
        connection writes; a writer blocked in flock is woken the moment the lock is free.
        """
        return self._index_writer.held()

    def store(self, *, exclusive: bool, wait: bool = True,
              patience: float = 0.0) -> AbstractContextManager[None]:
        """The whole store: exclusive to create or rebuild the index, shared for appends.

        With ``wait=False`` it tries for ``patience`` seconds, then raises StoreBusy. Shared
        holders are not re-entrant: a thread inside must not ask again.
        """
        if not exclusive and wait:
            return self._store_shared.held()
        if not exclusive:
            return _flock(self._store_lock, fcntl.LOCK_SH, None if wait else patience)
        return self._exclusive(None if wait else patience)

    @contextmanager
    def _exclusive(self, patience: float | None) -> Iterator[None]:
        # Close the gate first: appenders stop coming in, so the shared holders drain and the
        # exclusive lock is free within one append, however steady the traffic.
        deadline = None if patience is None else time.monotonic() + patience
        with _flock(self._gate, fcntl.LOCK_EX, patience):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            with _flock(self._store_lock, fcntl.LOCK_EX, remaining):
                yield


def session_slot(session_id: str) -> int:
    """Where a session's lock byte lies in ``sessions.lock`` (62 bits: any offset stays in range)."""
    return int.from_bytes(hashlib.blake2b(session_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "big") >> 2


_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", None)  # Linux 3.15+
_FLOCK_STRUCT = struct.Struct("@hhqqi")  # struct flock with a 64-bit off_t: type, whence, start, len, pid


@contextmanager
def _range_lock(path: str, start: int) -> Iterator[None]:
    """Hold a write lock on one byte of ``path``, owned by a descriptor of our own (released at close)."""
    fd = _open_lock_file(path)
    try:
        if _OFD_SETLKW is None:  # no OFD locks here: one lock for every session (correct, slower)
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            fcntl.fcntl(fd, _OFD_SETLKW, _FLOCK_STRUCT.pack(fcntl.F_WRLCK, os.SEEK_SET, start, 1, 0))
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_lock_file(path: str) -> int:
    try:
        return os.open(path, _OPEN_FLAGS, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"lock file {path} is a symlink; refusing to follow it") from None
        raise


@contextmanager
def _flock(path: str, mode: int, patience: float | None = None) -> Iterator[None]:
    """Hold ``flock(mode)`` on ``path``; ``patience`` None waits for ever, else at most that long."""
    fd = _open_lock_file(path)
    try:
        if patience is None:
            fcntl.flock(fd, mode)
        else:
            deadline = time.monotonic() + patience
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreBusy("another process is using the store (appends or a reindex are in "
                                        f"progress; {os.path.basename(path)} is locked); try again later") from None
                    time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
