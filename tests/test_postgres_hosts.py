"""Two hosts, one database: two gunicorn masters on different ports, no shared data folder.

Writers on both append to one session at once; an SSE stream on host A receives every event
appended through host B, in seq order, once; host B SIGKILLed mid-write loses no acknowledged
event. Waits are bounded by deadlines that only guard against a hang.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import Server, start_server

pytestmark = pytest.mark.slow
BOUND = 60.0


class StreamReader(threading.Thread):
    """Reads one SSE stream in the background, keeping each event's (seq, envelope)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.response = requests.get(url, headers={"Accept": "text/event-stream"}, stream=True, timeout=(5, BOUND))
        assert self.response.status_code == 200
        self.events: list[tuple[int, dict]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        buffer = b""
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                buffer += chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in block.decode().split("\n")
                                  if line and not line.startswith(":") and ": " in line)
                    if "id" in fields:
                        self.events.append((int(fields["id"]), json.loads(fields["data"])))
        except BaseException as exc:  # noqa: BLE001 - kept for the test to report, unless we closed it
            self.error = exc

    def wait_for_seq(self, seq: int) -> None:
        deadline = time.monotonic() + BOUND
        while (not self.events or self.events[-1][0] < seq) and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.05)
        assert self.events and self.events[-1][0] >= seq, (self.events[-1:], self.error)


def writer(server: Server, name: str, count: int, acked: list[dict], stop: threading.Event) -> None:
    for n in range(count):
        if stop.is_set():
            return
        try:
            answer = requests.post(f"{server.url}/api/sessions/shared/events", headers={"Connection": "close"},
                                   json={"type": "tool_call", "event_id": f"{name}-{n}", "payload": {"n": n}},
                                   timeout=BOUND)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            return  # the host died (before or while answering): what it acknowledged before is what counts
        if answer.status_code != 201:
            return
        acked.append(answer.json())


def run_writers(hosts: list[tuple[Server, str]], count: int, acked: list[dict],
                stop: threading.Event) -> list[threading.Thread]:
    threads = [threading.Thread(target=writer, args=(server, name, count, acked, stop)) for server, name in hosts]
    for thread in threads:
        thread.start()
    return threads


def test_two_hosts_share_one_database_and_its_live_tail(pg_url, tmp_path: Path):
    env = {"EVENTSVC_DATABASE_URL": pg_url, "EVENTSVC_SSE_KEEPALIVE": "0.5", "EVENTSVC_DB_POOL_SIZE": "4"}
    host_a = start_server(tmp_path / "a", tmp_path / "a.log", env=env)
    host_b = start_server(tmp_path / "b", tmp_path / "b.log", env=env)
    try:
        first = requests.post(f"{host_b.url}/api/sessions/shared/events", json={"type": "session_created"},
                              timeout=BOUND)
        assert first.status_code == 201
        stream = StreamReader(f"{host_a.url}/api/sessions/shared/events/stream")
        stream.start()

        acked: list[dict] = [first.json()]
        stop = threading.Event()
        for thread in run_writers([(host_a, "a1"), (host_a, "a2"), (host_b, "b1"), (host_b, "b2")], 25, acked, stop):
            thread.join(timeout=BOUND)
        assert len(acked) == 101
        stream.wait_for_seq(101)

        # Host B dies mid-write: what it acknowledged stays, and A's stream goes on.
        dying = run_writers([(host_b, "b3"), (host_b, "b4"), (host_a, "a3")], 40, acked, stop)
        deadline = time.monotonic() + BOUND
        while sum(1 for event in acked if event["event_id"].startswith("b3")) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        host_b.stop(signal.SIGKILL)
        for thread in dying:
            thread.join(timeout=BOUND)

        page = requests.get(f"{host_a.url}/api/sessions/shared/events", params={"limit": 1000}, timeout=BOUND).json()
        stored = page["events"]
        assert [event["seq"] for event in stored] == list(range(1, len(stored) + 1))
        stored_ids = [event["event_id"] for event in stored]
        assert len(set(stored_ids)) == len(stored_ids)
        assert {event["event_id"] for event in acked} <= set(stored_ids)
        for event in acked:
            assert stored[event["seq"] - 1] == event

        stream.wait_for_seq(len(stored))
        assert [seq for seq, _ in stream.events] == list(range(1, len(stored) + 1))
        assert [envelope for _, envelope in stream.events] == stored
        stream.response.close()
    finally:
        host_a.stop()
        host_b.stop()
