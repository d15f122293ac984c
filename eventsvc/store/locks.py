"""Cross-process locks: one per session for appends, one for the whole store.

Each acquisition opens its own descriptor, so ``flock`` excludes threads of one process as
well as other processes (flock locks belong to the open file, not to the process). Lock
files live in ``<data_dir>/locks`` so that a session's folder holds nothing but its log.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreBusy

LOCKS_DIR = "locks"


class Locks:
    def __init__(self, lock_dir: Path) -> None:
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.lock_dir = lock_dir

    def session(self, session_id: str) -> contextmanager:
        """Exclusive right to append to (or repair) one session."""
        return _flock(self.lock_dir / f"{session_id}.lock", fcntl.LOCK_EX)

    def store(self, *, exclusive: bool, wait: bool = True) -> contextmanager:
        """The whole store: exclusive to create or rebuild the index, shared for appends.

        With ``wait=False`` raises StoreBusy at once instead of waiting.
        """
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        return _flock(self.lock_dir / "store.lock", mode if wait else mode | fcntl.LOCK_NB)


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            raise StoreBusy(f"another process holds {path.name}; try again when it has finished") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
