"""Cross-process locks: one per session for appends, one for the index writer, one for the whole store.

flock locks belong to an open file description, not to a process: a descriptor per
acquisition excludes threads of one process as well as other processes. The two locks
every append takes are cheaper than that: the store lock is held shared once per process
(a count of the threads inside), and the index writer lock is a thread mutex in front of
one process-wide descriptor. Lock files live in ``<data_dir>/locks`` so that a session's
folder holds nothing but its log.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..errors import StoreBusy

LOCKS_DIR = "locks"


class _ProcessLock:
    """A flock on one file, taken through one descriptor for the whole process.

    Shared mode counts the threads inside: the first takes LOCK_SH, the last drops it.
    Exclusive mode lets one thread at a time in (a mutex), then takes LOCK_EX for the process.
    """

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.mode = mode
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
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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
        self.lock_dir = lock_dir
        self._prefix = os.path.join(lock_dir, "")
        self._store_lock = os.path.join(lock_dir, "store.lock")
        self._store_shared = _ProcessLock(self._store_lock, fcntl.LOCK_SH)
        self._index_writer = _ProcessLock(os.path.join(lock_dir, "index.lock"), fcntl.LOCK_EX)

    def close(self) -> None:
        """Close the process-wide descriptors (they reopen if used again)."""
        self._store_shared.close()
        self._index_writer.close()

    def session(self, session_id: str) -> AbstractContextManager[None]:
        """Exclusive right to append to (or repair) one session."""
        return _flock(f"{self._prefix}{session_id}.lock", fcntl.LOCK_EX)

    def index_writer(self) -> AbstractContextManager[None]:
        """The right to start an index write transaction.

        SQLite's own busy handler sleeps and polls (1 ms, 2 ms, 5 ms, ...) while another
        connection writes; a writer blocked in flock is woken the moment the lock is free.
        """
        return self._index_writer.held()

    def store(self, *, exclusive: bool, wait: bool = True,
              patience: float = 0.0) -> AbstractContextManager[None]:
        """The whole store: exclusive to create or rebuild the index, shared for appends.

        With ``wait=False`` it tries for ``patience`` seconds, then raises StoreBusy.
        """
        if not exclusive and wait:
            return self._store_shared.held()
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        return _flock(self._store_lock, mode, None if wait else patience)


@contextmanager
def _flock(path: str, mode: int, patience: float | None = None) -> Iterator[None]:
    """Hold ``flock(mode)`` on ``path``; ``patience`` None waits for ever, else at most that long."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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
                    time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
