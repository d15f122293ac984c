"""SIGKILL at arbitrary moments: no acknowledged event is lost, nothing half-visible remains.

A writer process prints each event only after the store acknowledged it, so every printed
line is a promise the log must keep across the kill, the next open and further appends.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from eventsvc import EventStore
from eventsvc.store.files import segments

ROOT = Path(__file__).resolve().parent.parent
SESSION = "crash"
SEGMENT_BYTES = 4096  # small, so that kills also land around segment rolls
WAIT = 30.0

WRITER = r"""
import json, sys, threading
from eventsvc import EventStore
data_dir, prefix, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = EventStore(data_dir, segment_bytes=int(sys.argv[4]))
out = threading.Lock()
print("ready", flush=True)

def write(t):
    for i in range(100_000):
        name = f"{prefix}-{t}-{i}"
        if i % 4 == 3:
            stored = store.append_many("crash", [
                {"type": "tool_call", "run_id": f"run-{prefix}-{t}", "event_id": name + "-a", "payload": {"i": i}},
                {"type": "tool_result", "run_id": f"run-{prefix}-{t}", "event_id": name + "-b",
                 "payload": {"i": i, "pad": "p" * (i % 90)}}])
        else:
            stored = [store.append("crash", {"type": "user_message", "event_id": name, "payload": {"i": i}})]
        with out:
            for event in stored:
                sys.stdout.write(json.dumps({"seq": event["seq"], "event_id": event["event_id"]}) + "\n")
            sys.stdout.flush()

workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
"""

# (acknowledgements to wait for before the kill, extra delay in seconds); None: kill while opening.
KILL_MOMENTS = [(0, 0.0), (1, 0.0), (9, 0.0003), (40, 0.001), (None, 0.12), (3, 0.002), (150, 0.0)]


class Writer:
    """A writer subprocess whose acknowledged events are collected as they are printed."""

    def __init__(self, data_dir: Path, prefix: str, threads: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data_dir), prefix, str(threads), str(SEGMENT_BYTES)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.buffer = b""
        self.acked: list[dict] = []
        self.ready = False

    def _take(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line == b"ready":
                self.ready = True
            else:
                self.acked.append(json.loads(line))

    def wait_for(self, acks: int, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while not (self.ready and len(self.acked) >= acks):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"writer acknowledged {len(self.acked)} of {acks} events in {timeout}s"
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                data = os.read(fd, 65536)
                assert data, f"writer exited: {self.process.stderr.read().decode(errors='replace')}"
                self._take(data)

    def kill(self) -> list[dict]:
        """SIGKILL, then every acknowledgement it printed before dying (a cut-off last line is no promise)."""
        self.process.send_signal(signal.SIGKILL)
        out, _ = self.process.communicate(timeout=WAIT)
        assert self.process.returncode == -signal.SIGKILL
        self._take(out)
        return self.acked


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for writer in started:
        if writer.process.poll() is None:
            writer.process.kill()
            writer.process.wait(timeout=10)


def all_events(store: EventStore, session_id: str) -> list[dict]:
    events: list[dict] = []
    for _ in range(1000):
        page = store.get_events_by_session(session_id, since_seq=events[-1]["seq"] if events else 0, limit=1000)
        if not page:
            return events
        events.extend(page)
    raise AssertionError("more pages than expected")


def assert_keeps_every_ack(store: EventStore, acked: list[dict]) -> list[dict]:
    events = all_events(store, SESSION)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert store.last_seq(SESSION) == len(events)
    event_ids = [event["event_id"] for event in events]
    assert len(set(event_ids)) == len(event_ids)
    seq_of = {event["event_id"]: event["seq"] for event in events}
    lost = [ack for ack in acked if seq_of.get(ack["event_id"]) != ack["seq"]]
    assert lost == []
    return events


@pytest.mark.slow
@pytest.mark.parametrize(("threads",), [(1,), (3,)], ids=["one_thread", "three_threads"])
def test_writer_killed_mid_stream_loses_no_acknowledged_event(writers, data_dir, threads):
    acked: list[dict] = []
    for round_, (acks, delay) in enumerate(KILL_MOMENTS):
        writer = Writer(data_dir, f"k{round_}", threads)
        writers.append(writer)
        if acks is None:
            time.sleep(delay)
        else:
            writer.wait_for(acks)
            time.sleep(delay)
        acked.extend(writer.kill())

        store = EventStore(data_dir, segment_bytes=SEGMENT_BYTES)
        try:
            assert_keeps_every_ack(store, acked)
        finally:
            store.close()

    assert len(acked) >= sum(acks or 0 for acks, _ in KILL_MOMENTS)
    session_dir = data_dir / "segments" / SESSION
    assert len(segments.list_bases(session_dir)) > 1
    store = EventStore(data_dir, segment_bytes=SEGMENT_BYTES)
    try:
        events = assert_keeps_every_ack(store, acked)
        following = store.append(SESSION, {"type": "user_message", "event_id": "after-the-kills"})
        assert following["seq"] == len(events) + 1
        for ack in acked[:: max(1, len(acked) // 20)]:
            run_id = f"run-{ack['event_id'].split('-')[0]}-{ack['event_id'].split('-')[1]}"
            if ack["event_id"].endswith(("-a", "-b")):
                assert ack["seq"] in [event["seq"] for event in store.get_events_by_run(SESSION, run_id, limit=1000)]
    finally:
        store.close()
    for base in segments.list_bases(session_dir):
        data = (session_dir / segments.segment_name(base)).read_bytes()
        assert data.endswith(b"\n")
        assert [json.loads(line)["seq"] for line in data.splitlines()][0] == base


# -- a real gunicorn, killed as a whole -------------------------------------------------------------------

def post_until_stopped(url: str, name: str, stop: threading.Event, acked: list[dict], guard: threading.Lock) -> None:
    """POST events until told to stop (or the server is gone); records every 201 acknowledgement."""
    with requests.Session() as http:
        for n in range(10_000):
            if stop.is_set():
                return
            event = {"type": "tool_call" if n % 3 else "user_message", "event_id": f"{name}-{n}", "payload": {"n": n}}
            if n % 3:
                event["run_id"] = f"run-{name}"
            try:
                response = http.post(f"{url}/api/sessions/{SESSION}/events", json=event, timeout=10)
            except requests.RequestException:
                return
            if response.status_code == 201:
                with guard:
                    acked.append({"seq": response.json()["seq"], "event_id": event["event_id"]})


def read_session_over_http(url: str) -> list[dict]:
    events: list[dict] = []
    since = 0
    for _ in range(1000):
        body = requests.get(f"{url}/api/sessions/{SESSION}/events",
                            params={"since_seq": since, "limit": 1000}, timeout=10).json()
        events.extend(body["events"])
        since = body["next_since_seq"]
        if not body["has_more"]:
            return events
    raise AssertionError("more pages than expected")


@pytest.mark.slow
def test_gunicorn_killed_during_appends_keeps_every_acknowledged_event(serve, data_dir):
    acked: list[dict] = []
    guard = threading.Lock()
    for round_, target in enumerate((25, 60)):
        server = serve(data_dir)
        stop = threading.Event()
        clients = [threading.Thread(target=post_until_stopped, args=(server.url, f"c{round_}x{n}", stop, acked, guard))
                   for n in range(6)]
        for client in clients:
            client.start()
        try:
            deadline = time.monotonic() + WAIT
            while len(acked) < target * (round_ + 1) and time.monotonic() < deadline:
                time.sleep(0.005)
            server.stop(signal.SIGKILL)  # the arbiter and both workers, mid-request
        finally:
            stop.set()
            for client in clients:
                client.join(timeout=WAIT)
        assert not any(client.is_alive() for client in clients)
        assert len(acked) >= target * (round_ + 1)

    server = serve(data_dir)
    events = read_session_over_http(server.url)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    event_ids = [event["event_id"] for event in events]
    assert len(set(event_ids)) == len(event_ids)
    seq_of = {event["event_id"]: event["seq"] for event in events}
    assert [ack for ack in acked if seq_of.get(ack["event_id"]) != ack["seq"]] == []
    response = requests.post(f"{server.url}/api/sessions/{SESSION}/events",
                             json={"type": "user_message", "event_id": "after-restart"}, timeout=10)
    assert response.status_code == 201
    assert response.json()["seq"] == len(events) + 1
