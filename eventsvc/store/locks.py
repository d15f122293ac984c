"""Cross-process locks: one per session for appends, one for the whole store.

Each acquisition opens its own descriptor, so ``flock`` excludes threads of one process as
well as other processes (flock locks belong to the open file, not to the process). Lock
files live in ``<data_dir>/locks`` so that a session's folder holds nothing but its log.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..errors import StoreBusy

LOCKS_DIR = "locks"


class Locks:
    def __init__(self, lock_dir: Path) -> None:
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.lock_dir = lock_dir
        self._prefix = os.path.join(lock_dir, "")
        self._store_lock = os.path.join(lock_dir, "store.lock")
        self._index_lock = os.path.join(lock_dir, "index.lock")

    def session(self, session_id: str) -> AbstractContextManager[None]:
        """Exclusive right to append to (or repair) one session."""
        return _flock(f"{self._prefix}{session_id}.lock", fcntl.LOCK_EX)

    def index_writer(self) -> AbstractContextManager[None]:
        """The right to start an index write transaction.

        SQLite's own busy handler sleeps and polls (1 ms, 2 ms, 5 ms, ...) while another
        connection writes; a writer blocked in flock is woken the moment the lock is free.
        """
        return _flock(self._index_lock, fcntl.LOCK_EX)

    def store(self, *, exclusive: bool, wait: bool = True,
              patience: float = 0.0) -> AbstractContextManager[None]:
        """The whole store: exclusive to create or rebuild the index, shared for appends.

        With ``wait=False`` it tries for ``patience`` seconds, then raises StoreBusy.
        """
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
