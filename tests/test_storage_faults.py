"""Storage faults over HTTP: a disk that is full, failing, or loses an fsync.

In-process, faults come from a ``SegmentIO`` subclass set on the app's store; the files and
SQLite are real. A failed append answers 507 ``insufficient_storage`` (ENOSPC) or 503
``storage_unavailable`` (EIO), leaves the segment byte-identical and the index unchanged,
and once the fault clears the next append takes the next contiguous seq. One test runs a
real gunicorn on a 2 MiB tmpfs that fills up for real.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from eventsvc import EventStore, create_app
from eventsvc.errors import StorageError, StorageFull
from eventsvc.store.files import segments

from conftest import start_server

SESSION = "faulty"


class FaultyIO(segments.SegmentIO):
    """Fails the log's system calls as told, counting every call.

    ``fault`` is one of: ``None`` (no fault), ``pwrite`` (fails at once), ``partial`` (writes
    the first half of the bytes and reports it, then fails the call for the rest), ``zero``
    (reports 0 bytes written), ``fsync`` (the data is written in full, the flush fails).
    """

    def __init__(self) -> None:
        self.fault: str | None = None
        self.err = errno.EIO
        self.pwrites: list[tuple[int, int]] = []  # (offset, length) of every call
        self.fsyncs = 0

    def arm(self, fault: str, err: int) -> None:
        self.fault, self.err = fault, err
        self.pwrites.clear()
        self.fsyncs = 0

    def disarm(self) -> None:
        self.fault = None

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        self.pwrites.append((offset, len(data)))
        if self.fault == "pwrite":
            raise OSError(self.err, os.strerror(self.err))
        if self.fault == "partial":
            if len(self.pwrites) == 1:
                return os.pwrite(fd, bytes(data[: max(1, len(data) // 2)]), offset)
            raise OSError(self.err, os.strerror(self.err))
        if self.fault == "zero":
            return 0
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        if self.fault == "fsync":
            raise OSError(self.err, os.strerror(self.err))
        super().fsync(fd)


def segment_bytes(data_dir: Path) -> dict[str, bytes]:
    """Every file under ``segments/`` (segments, seals, torn tails) and its bytes."""
    root = data_dir / "segments"
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def index_rows(data_dir: Path) -> dict[str, list[tuple]]:
    """Every row of the index, table by table, read through a separate SQLite connection."""
    with sqlite3.connect(data_dir / "index.sqlite3") as db:
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("event", "run", "session")}


def event(n: int, **fields) -> dict:
    return {"type": "user_message", "payload": {"n": n, "text": "x" * (n % 7 + 1)}, **fields}


@pytest.fixture
def faulty_io() -> FaultyIO:
    return FaultyIO()


@pytest.fixture
def faulty_app(data_dir: Path, faulty_io: FaultyIO):
    app = create_app({"DATA_DIR": str(data_dir)})
    app.extensions["eventsvc.store"].io = faulty_io
    yield app
    app.extensions["eventsvc.store"].close()


@pytest.fixture
def faulty_client(faulty_app):
    return faulty_app.test_client()


def post(client, body, session_id: str = SESSION):
    return client.post(f"/api/sessions/{session_id}/events", json=body)


def read_all(client, session_id: str = SESSION) -> list[dict]:
    response = client.get(f"/api/sessions/{session_id}/events?limit=1000")
    assert response.status_code == 200, response.get_data()
    return response.get_json()["events"]


FAULTS = [
    ("pwrite", errno.ENOSPC, 507, "insufficient_storage"),
    ("pwrite", errno.EIO, 503, "storage_unavailable"),
    ("partial", errno.ENOSPC, 507, "insufficient_storage"),
    ("partial", errno.EIO, 503, "storage_unavailable"),
    ("zero", errno.EIO, 503, "storage_unavailable"),
    ("fsync", errno.EIO, 503, "storage_unavailable"),
    ("fsync", errno.ENOSPC, 507, "insufficient_storage"),
]
FAULT_IDS = [f"{fault}-{errno.errorcode[err]}" for fault, err, _, _ in FAULTS]


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data()
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize(("fault", "err", "status", "code"), FAULTS, ids=FAULT_IDS)
def test_failed_append_answers_its_status_and_leaves_log_and_index_unchanged(
        faulty_client, faulty_io, data_dir, fault, err, status, code):
    for n in range(1, 4):
        assert post(faulty_client, event(n)).status_code == 201
    segments_before, index_before = segment_bytes(data_dir), index_rows(data_dir)
    events_before = read_all(faulty_client)

    faulty_io.arm(fault, err)
    assert_error(post(faulty_client, event(4, event_id="lost-4")), status, code)

    assert segment_bytes(data_dir) == segments_before
    assert index_rows(data_dir) == index_before
    assert read_all(faulty_client) == events_before

    faulty_io.disarm()
    after = [post(faulty_client, event(n)) for n in (5, 6)]
    assert [response.status_code for response in after] == [201, 201]
    assert [response.get_json()["seq"] for response in after] == [4, 5]
    stored = read_all(faulty_client)
    assert [e["seq"] for e in stored] == [1, 2, 3, 4, 5]
    assert stored[:3] == events_before
    assert "lost-4" not in {e["event_id"] for e in stored}


@pytest.mark.parametrize(("fault", "err", "status", "code"), FAULTS, ids=FAULT_IDS)
def test_failed_batch_stores_none_of_its_events(faulty_client, faulty_io, data_dir, fault, err, status, code):
    assert post(faulty_client, event(1)).status_code == 201
    segments_before, index_before = segment_bytes(data_dir), index_rows(data_dir)

    faulty_io.arm(fault, err)
    assert_error(post(faulty_client, [event(n) for n in range(2, 12)]), status, code)

    assert segment_bytes(data_dir) == segments_before
    assert index_rows(data_dir) == index_before
    faulty_io.disarm()
    response = post(faulty_client, [event(n) for n in range(2, 5)])
    assert response.status_code == 201
    assert [e["seq"] for e in response.get_json()["events"]] == [2, 3, 4]
    assert [e["seq"] for e in read_all(faulty_client)] == [1, 2, 3, 4]


@pytest.mark.parametrize(("fault", "err", "status", "code"), FAULTS, ids=FAULT_IDS)
def test_failed_first_append_of_a_session_leaves_it_unknown(faulty_client, faulty_io, data_dir,
                                                            fault, err, status, code):
    assert post(faulty_client, event(1), session_id="neighbour").status_code == 201
    segments_before, index_before = segment_bytes(data_dir), index_rows(data_dir)

    faulty_io.arm(fault, err)
    assert_error(post(faulty_client, event(1)), status, code)

    assert segment_bytes(data_dir) == segments_before
    assert index_rows(data_dir) == index_before
    assert_error(faulty_client.get(f"/api/sessions/{SESSION}/events"), 404, "not_found")
    faulty_io.disarm()
    response = post(faulty_client, event(2))
    assert response.status_code == 201
    assert response.get_json()["seq"] == 1


@pytest.mark.parametrize(("fault", "err", "status", "code"), FAULTS, ids=FAULT_IDS)
def test_failed_first_write_of_a_rolled_segment_is_undone(tmp_path, fault, err, status, code):
    data_dir = tmp_path / "data"
    io = FaultyIO()
    app = create_app({"DATA_DIR": str(data_dir), "SEGMENT_BYTES": 300})
    app.extensions["eventsvc.store"].io = io
    client = app.test_client()
    seq = 0
    while len([p for p in segment_bytes(data_dir) if p.endswith(".jsonl")]) < 2 and seq < 50:
        seq += 1
        assert post(client, event(seq)).status_code == 201
    # Fill the second segment up to its size, so that the next append starts a third one.
    bases = sorted(p for p in segment_bytes(data_dir) if p.endswith(".jsonl"))
    while (data_dir / "segments" / bases[-1]).stat().st_size < 300 and seq < 100:
        seq += 1
        assert post(client, event(seq)).status_code == 201
    index_before = index_rows(data_dir)
    jsonl_before = {p: b for p, b in segment_bytes(data_dir).items() if p.endswith(".jsonl")}

    io.arm(fault, err)
    assert_error(post(client, event(seq + 1)), status, code)

    assert {p: b for p, b in segment_bytes(data_dir).items() if p.endswith(".jsonl")} == jsonl_before
    assert index_rows(data_dir) == index_before
    io.disarm()
    response = post(client, event(seq + 1))
    assert response.status_code == 201
    assert response.get_json()["seq"] == seq + 1
    assert [e["seq"] for e in read_all(client)] == list(range(1, seq + 2))
    app.extensions["eventsvc.store"].close()


def test_failed_fsync_is_not_retried_and_is_logged(faulty_client, faulty_io, data_dir, caplog):
    assert post(faulty_client, event(1)).status_code == 201
    before = segment_bytes(data_dir)
    faulty_io.arm("fsync", errno.EIO)
    with caplog.at_level(logging.ERROR):
        assert_error(post(faulty_client, event(2)), 503, "storage_unavailable")
    # One write of the line, one fsync that failed: the same data is neither re-written nor re-flushed.
    assert len(faulty_io.pwrites) == 1
    assert faulty_io.fsyncs == 1
    assert segment_bytes(data_dir) == before
    assert any("failed" in record.getMessage() and SESSION in record.getMessage() for record in caplog.records)


def test_store_api_raises_storage_full_and_storage_error(data_dir):
    io = FaultyIO()
    store = EventStore(data_dir, io=io)
    try:
        store.append("s", event(1))
        io.arm("pwrite", errno.ENOSPC)
        with pytest.raises(StorageFull):
            store.append("s", event(2))
        io.arm("fsync", errno.EIO)
        with pytest.raises(StorageError) as caught:
            store.append("s", event(3))
        assert not isinstance(caught.value, StorageFull)
        io.disarm()
        assert store.append("s", event(4))["seq"] == 2
        assert [e["seq"] for e in store.get_events_by_session("s")] == [1, 2]
        assert store.last_seq("s") == 2
    finally:
        store.close()


# -- a real filesystem that fills up ---------------------------------------------------------

TMPFS_BYTES = 2 * 1024 * 1024
FILLER_BYTES = 1024 * 1024


def _mount_tmpfs(where: Path) -> str | None:
    """Mount a 2 MiB tmpfs at ``where``; returns why not, or None when it is mounted."""
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(where)],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"mount could not run: {exc}"
    if result.returncode != 0:
        return f"mount -t tmpfs failed: {(result.stderr or result.stdout).strip()}"
    return None


def _umount(where: Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(where)], capture_output=True, timeout=20).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=20)


def _worker_pids(master: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(entry))
    return pids


def _has_index_open(pid: int) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith("index.sqlite3")
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _wait_for_workers(server, count: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` workers have loaded the app (each holds the index open)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(map(_has_index_open, _worker_pids(server.process.pid))) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{count} workers did not load the app within {timeout}s:\n{server.log()[-3000:]}")


def _fill_up(path: Path, limit_bytes: int = 16 * 1024 * 1024) -> None:
    """Write ``path`` until the filesystem has no space left (bounded by ``limit_bytes``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(limit_bytes // 4096):
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    else:
        raise AssertionError(f"{path.parent} did not fill up within {limit_bytes} bytes")
    finally:
        os.close(fd)


def _moved_aside(data_dir: Path) -> list[str]:
    return sorted(name for name in os.listdir(data_dir) if ".corrupt-" in name)


@pytest.fixture
def small_fs(tmp_path: Path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    reason = _mount_tmpfs(mount_point)
    if reason:
        pytest.skip(f"needs a small tmpfs: {reason}")
    try:
        yield mount_point
    finally:
        _umount(mount_point)


def _read_session(http: requests.Session, url: str) -> list[dict]:
    stored, since = [], 0
    for _ in range(100):
        page = http.get(url, params={"since_seq": since, "limit": 1000}, timeout=30)
        assert page.status_code == 200, (page.status_code, page.text)
        stored += page.json()["events"]
        since = page.json()["next_since_seq"]
        if not page.json()["has_more"]:
            return stored
    raise AssertionError("more than 100 pages")


@pytest.mark.slow
def test_real_server_on_a_full_filesystem_answers_507_then_resumes(tmp_path, small_fs):
    data_dir = small_fs / "data"
    data_dir.mkdir()
    filler = small_fs / "filler.bin"
    filler.write_bytes(b"\0" * FILLER_BYTES)
    server = start_server(data_dir, tmp_path / "gunicorn.log", workers=2)
    try:
        _wait_for_workers(server, 2)
        url = f"{server.url}/api/sessions/fill/events"
        acknowledged: dict[int, dict] = {}
        refused: list[requests.Response] = []
        with requests.Session() as http:
            for n in range(2000):  # ~1 MiB free at 8 KiB per event: full long before this ends
                body = {"type": "user_message", "event_id": f"e-{n}", "payload": {"n": n, "text": "y" * 8000}}
                response = http.post(url, json=body, timeout=30)
                if response.status_code == 201:
                    stored = response.json()
                    acknowledged[stored["seq"]] = stored
                    continue
                refused.append(response)
                break
            assert refused, "the filesystem never filled up"
            assert acknowledged, "no append succeeded before the disk was full"
            assert sorted(acknowledged) == list(range(1, len(acknowledged) + 1))
            # A few more appends while full, of several sizes: a small one may still fit; the rest
            # are refused the same way and store nothing.
            for n in range(5):
                response = http.post(url, json={"type": "status", "payload": {"full": "z" * 10 ** (4 - n % 4)}},
                                     timeout=30)
                if response.status_code == 201:
                    acknowledged[response.json()["seq"]] = response.json()
                else:
                    refused.append(response)
            assert sorted(acknowledged) == list(range(1, len(acknowledged) + 1))

            # Every acknowledged event is readable while the disk is still full.
            assert {e["seq"]: e for e in _read_session(http, url)} == acknowledged

            filler.unlink()
            resumed = [http.post(url, json={"type": "status", "payload": {"after": n}}, timeout=30)
                       for n in range(5)]
            assert [r.status_code for r in resumed] == [201] * 5, [r.text for r in resumed]
            last = max(acknowledged)
            assert [r.json()["seq"] for r in resumed] == list(range(last + 1, last + 6))
            final = _read_session(http, url)
            assert [e["seq"] for e in final] == list(range(1, last + 6))
            assert {e["seq"]: e for e in final if e["seq"] <= last} == acknowledged

        assert _moved_aside(data_dir) == []
        # The contract: ENOSPC is 507 insufficient_storage, whichever file (segment or index) hit it.
        answers = [(r.status_code, r.headers.get("Content-Type"), r.json()["error"]["code"]) for r in refused]
        assert answers == [(507, "application/json", "insufficient_storage")] * len(refused), answers
    finally:
        server.stop()


@pytest.mark.slow
def test_server_started_on_a_full_filesystem_starts_answers_507_and_heals(tmp_path, small_fs):
    """SQLite cannot open its WAL on a full disk, so until there is room every call is a 507;
    the server must still start, must never take the index for corrupt, and must heal by itself."""
    data_dir = small_fs / "data"
    data_dir.mkdir()
    server = start_server(data_dir, tmp_path / "first.log", workers=1)
    try:
        url = f"{server.url}/api/sessions/s/events"
        written = [requests.post(url, json={"type": "status", "payload": {"n": n}}, timeout=30) for n in range(5)]
        assert [r.status_code for r in written] == [201] * 5
    finally:
        server.stop()
    _fill_up(small_fs / "filler.bin")

    server = None
    try:
        server = start_server(data_dir, tmp_path / "second.log", workers=1, timeout=20)
        url = f"{server.url}/api/sessions/s/events"
        # Whatever slack the last pages of the files still hold fills up within a few appends.
        accepted = 0
        for _ in range(50):
            full = requests.post(url, json={"type": "status", "payload": {"pad": "p" * 20_000}}, timeout=30)
            if full.status_code != 201:
                break
            accepted += 1
        page = requests.get(url, timeout=30)
        # The index is not corrupt because the disk is full: it must never be moved aside for that.
        assert _moved_aside(data_dir) == []
        assert full.status_code == 507, full.text
        assert full.json()["error"]["code"] == "insufficient_storage"
        assert page.status_code in (200, 507), page.text

        (small_fs / "filler.bin").unlink()
        again = requests.post(url, json={"type": "status", "payload": {"n": 5}}, timeout=30)
        assert again.status_code == 201, again.text
        assert again.json()["seq"] == 6 + accepted
        events = requests.get(url, timeout=30).json()["events"]
        assert [e["seq"] for e in events] == list(range(1, 7 + accepted))
        assert [e["payload"] for e in events[:5]] == [{"n": n} for n in range(5)]
    finally:
        if server is not None:
            server.stop()
