"""Fixtures, chained: data dir -> store -> app -> client; plus a real gunicorn on loopback."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import strategies as st

from eventsvc import EventStore, create_app
from eventsvc.store import open_store
from eventsvc.store.base import Store
from eventsvc.store.files.index import INDEX_FILE
from eventsvc.store.files.locks import LOCK_FILES, LOCKS_DIR
from eventsvc.store.files.segments import SEGMENTS_DIR

ROOT = Path(__file__).resolve().parent.parent

# Every name the store creates at the top of its folder or in locks/, with and without suffixes:
# each is a valid session id, and must be as safe as any other.
STORE_NAMES = sorted({LOCKS_DIR, SEGMENTS_DIR, INDEX_FILE, *LOCK_FILES,
                      *(INDEX_FILE + suffix for suffix in ("-wal", "-shm", "-journal", ".new")),
                      *(name.rsplit(".", 1)[0] for name in LOCK_FILES)})
# Ids from the whole alphabet, any length the rule allows, with the store's own names mixed in.
any_valid_id = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", fullmatch=True) | st.sampled_from(STORE_NAMES)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[EventStore]:
    event_store = EventStore(data_dir)
    yield event_store
    event_store.close()


@pytest.fixture
def mixed_session(store: EventStore) -> EventStore:
    """s1: a legacy event, two runs interleaved, legacy events carrying and lacking a run_id."""
    for event in [
        {"type": "user_message", "payload": {"text": "hi"}},           # 1
        {"type": "run_started", "run_id": "r1"},                        # 2
        {"type": "run_started", "run_id": "r2"},                        # 3
        {"type": "tool_call", "run_id": "r1", "payload": {"n": 1}},     # 4
        {"type": "assistant_message", "payload": {"text": "ok"}},       # 5
        {"type": "verify_pass", "run_id": "r2"},                        # 6
        {"type": "run_completed", "run_id": "r1"},                      # 7
    ]:
        store.append("s1", event)
    return store


@pytest.fixture
def app(data_dir: Path):
    return create_app({"DATA_DIR": str(data_dir)})


@pytest.fixture
def client(app):
    return app.test_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A gunicorn serving wsgi:app on 127.0.0.1, started and stopped by PID."""

    process: subprocess.Popen
    url: str
    data_dir: Path
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(data_dir: Path, log_path: Path, *, workers: int = 2, env: dict[str, str] | None = None,
                 timeout: float = 30.0, port: int | None = None) -> Server:
    """Start gunicorn with the make-run configuration on a free loopback port (or ``port``, to
    restart a killed server where its clients expect it) and wait until it answers and every
    worker has loaded the app (a worker still booting has no say in where connections go)."""
    port = port or free_port()
    log_start = log_path.stat().st_size if log_path.exists() else 0
    environ = {**os.environ, "EVENTSVC_DATA_DIR": str(data_dir), "EVENTSVC_BIND": f"127.0.0.1:{port}",
               "EVENTSVC_WORKERS": str(workers), **(env or {})}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log_file = open(log_path, "ab")
    process = subprocess.Popen([str(gunicorn), "--config", "python:eventsvc.gunicorn_conf", "wsgi:app"],
                               cwd=ROOT, env=environ, stdout=log_file, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log_file.close()
    server = Server(process, f"http://127.0.0.1:{port}", data_dir, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{server.log()}")
        try:
            if (requests.get(server.url + "/healthz", timeout=5).status_code == 200
                    and _workers_ready(log_path, log_start, environ) >= workers):
                return server
        except requests.RequestException:  # not listening yet, or still booting on a busy machine
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"gunicorn did not answer within {timeout}s:\n{server.log()}")


def _workers_ready(log_path: Path, start: int, environ: dict[str, str]) -> float:
    """How many workers logged "Worker ready" since ``start`` (infinite when the log level hides it)."""
    if environ.get("EVENTSVC_LOG_LEVEL", "info").lower() not in ("debug", "info"):
        return float("inf")
    with open(log_path, "rb") as log:
        log.seek(start)
        return log.read().count(b"Worker ready (pid: ")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path / "data", tmp_path / "gunicorn.log")
    yield running
    running.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start gunicorn on a data dir the test has already filled; stopped by PID at teardown."""
    started: list[Server] = []

    def _serve(data_dir: Path) -> Server:
        server = start_server(data_dir, tmp_path / f"gunicorn-{len(started)}.log")
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


# -- PostgreSQL (see tests/postgres_db.py) ------------------------------------------------------


_NO_POSTGRES = pytest.StashKey[str]()


def pytest_collection_modifyitems(config, items) -> None:
    """Without a PostgreSQL server, the tests that need one (and only they) skip; CI fails them instead."""
    from postgres_db import REQUIRED, needs_postgres, unreachable_reason

    needing = [item for item in items if needs_postgres(item)]
    reason = unreachable_reason() if needing and not REQUIRED else None
    for item in needing if reason else []:
        item.stash[_NO_POSTGRES] = reason


def pytest_runtest_setup(item) -> None:
    reason = item.stash.get(_NO_POSTGRES, None)
    if reason:
        pytest.skip(reason)  # one call site: pytest's summary folds every such skip into one line


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str | None]:
    """This module's own database with the current schema (None: no server); dropped after its last test."""
    from postgres_db import drop_database, try_create_database

    url = try_create_database()
    yield url
    if url is not None:
        drop_database(url)


@pytest.fixture
def pg_url(pg_database: str | None) -> str:
    """The module's database, emptied for this test."""
    from postgres_db import empty, skip_unreachable

    if pg_database is None:
        skip_unreachable()
    empty(pg_database)
    return pg_database


# -- every backend (the Store contract) -----------------------------------------------------------


class Backend:
    """Opens stores on one backend's storage and snapshots everything it holds."""

    def __init__(self, name: str, target: str, state: Callable[[], Any]) -> None:
        self.name = name
        self.target = target
        self._state = state
        self.opened: list[Store] = []

    def open(self, **options: Any) -> Store:
        opened = open_store(self.target, **options)
        self.opened.append(opened)
        return opened

    def state(self) -> Any:
        return self._state()


def files_state(data_dir: Path) -> dict[str, bytes]:
    root = data_dir / "segments"
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(params=["files", "postgres"])
def backend(request, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn, on empty storage of its own; every store it opened is closed afterwards."""
    if request.param == "files":
        data_dir = tmp_path / "data"
        chosen = Backend("files", str(data_dir), lambda: files_state(data_dir))
    else:
        from postgres_db import rows

        url = request.getfixturevalue("pg_url")
        chosen = Backend("postgres", url, lambda: rows(url))
    yield chosen
    for opened in chosen.opened:
        opened.close()
