"""Live reads against a real gunicorn on loopback: SSE streams, resume, run end, keepalives, long-poll.

The SSE wire is read twice over: by hand from the raw HTTP body, and by a real SSE client
library (sseclient-py). Waits are bounded by timeouts that only guard against a hang.
"""
from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import sseclient

from conftest import Server, start_server

pytestmark = pytest.mark.slow

BOUND = 30  # seconds: a safety bound on every wait, never a measurement


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Server]:
    """One server for the tests that need no fault of their own; keepalives every 0.3 s."""
    root = tmp_path_factory.mktemp("live")
    server = start_server(root / "data", root / "gunicorn.log", env={"EVENTSVC_SSE_KEEPALIVE": "0.3"})
    yield server
    server.stop()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def append(url: str, session_id: str, events: dict | list[dict]) -> dict | list[dict]:
    """POST on a fresh connection each time, so successive appends spread over both workers."""
    response = requests.post(f"{url}/api/sessions/{session_id}/events", json=events,
                             headers={"Connection": "close"}, timeout=BOUND)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["events"] if isinstance(events, list) else body


def stream_url(url: str, *, session_id: str | None = None, run_id: str | None = None) -> str:
    if session_id is not None:
        return f"{url}/api/sessions/{session_id}/events/stream"
    return f"{url}/api/runs/{run_id}/events/stream"


def open_stream(url: str, *, params: dict | None = None, headers: dict | None = None) -> requests.Response:
    return requests.get(url, params=params, headers={"Accept": "text/event-stream", **(headers or {})},
                        stream=True, timeout=(5, BOUND))


# -- raw SSE, parsed by hand -------------------------------------------------------------------------


@dataclass
class Message:
    lines: list[str]
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, block: bytes) -> Message:
        lines = block.decode("utf-8").split("\n")
        fields: dict[str, str] = {}
        for line in lines:
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        return cls(lines, fields)

    @property
    def is_comment(self) -> bool:
        return all(line.startswith(":") for line in self.lines)


def raw_messages(response: requests.Response) -> Iterator[Message]:
    """Each SSE message off the wire as it arrives (the server ends lines with '\\n')."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            yield Message.parse(block)
    assert buffer == b"", f"stream ended inside a message: {buffer!r}"


@dataclass
class Collected:
    seqs: list[int] = field(default_factory=list)
    envelopes: list[dict] = field(default_factory=list)
    end: dict | None = None
    first: Message | None = None
    keepalives: int = 0


def collect(response: requests.Response, *, on_message=None) -> Collected:
    """Read a stream to its ``end`` message, checking each event message's shape on the way."""
    collected = Collected()
    with response:
        for message in raw_messages(response):
            if collected.first is None:
                collected.first = message
            if on_message is not None:
                on_message(message)
            if message.is_comment:
                collected.keepalives += message.lines == [": keepalive"]
                continue
            if message.fields.get("event") == "end":
                assert set(message.fields) == {"event", "data"}
                collected.end = json.loads(message.fields["data"])
                break
            if "retry" in message.fields:
                continue
            assert list(message.fields) == ["id", "event", "data"], message.lines
            envelope = json.loads(message.fields["data"])
            assert envelope["seq"] == int(message.fields["id"])
            assert envelope["type"] == message.fields["event"]
            collected.seqs.append(envelope["seq"])
            collected.envelopes.append(envelope)
    return collected


def run_in_thread(target, *args) -> tuple[threading.Thread, dict]:
    """Start ``target(*args)`` in a thread; its result or exception lands in the returned dict."""
    outcome: dict = {}

    def body() -> None:
        try:
            outcome["result"] = target(*args)
        except BaseException as exc:  # handed to the test thread, which re-raises it
            outcome["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def result_of(thread: threading.Thread, outcome: dict):
    thread.join(BOUND)
    assert not thread.is_alive(), "still running after the safety bound"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


# -- wire format ---------------------------------------------------------------------------------------


def seed(url: str, session_id: str) -> list[dict]:
    return append(url, session_id, [
        {"type": "user_message", "payload": {"text": "héllo\nworld", "n": [1, 2]}},
        {"type": "run_started", "run_id": f"{session_id}-run"},
        {"type": "status", "payload": {}},
    ])


def test_stream_headers_stop_proxies_from_buffering(live):
    session_id = new_id("hdr")
    seed(live.url, session_id)
    with open_stream(stream_url(live.url, session_id=session_id), params={"until_seq": 3}) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].split(";")[0].strip() == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"


def test_raw_wire_format_retry_first_then_id_event_data_then_end(live):
    session_id = new_id("raw")
    stored = seed(live.url, session_id)
    response = open_stream(stream_url(live.url, session_id=session_id), params={"until_seq": 3})
    body = response.content
    blocks = body.split(b"\n\n")
    assert blocks[-1] == b"", "the stream must end with a complete message"
    assert blocks[0].startswith(b"retry: ") and blocks[0][len(b"retry: "):].isdigit()
    page = requests.get(f"{live.url}/api/sessions/{session_id}/events", timeout=BOUND).json()
    for block, envelope in zip(blocks[1:4], stored):
        lines = block.split(b"\n")
        assert lines[0] == b"id: %d" % envelope["seq"]
        assert lines[1] == b"event: " + envelope["type"].encode()
        assert lines[2].startswith(b"data: ") and len(lines) == 3, "the envelope is one line of JSON"
        assert json.loads(lines[2][len(b"data: "):]) == envelope
    assert [json.loads(b.split(b"\n")[2][6:]) for b in blocks[1:4]] == page["events"]
    assert blocks[4] == b'event: end\ndata: {"reason":"until_seq","last_seq":3}'
    assert len(blocks) == 6


def test_sse_client_library_reads_the_same_events(live):
    session_id = new_id("lib")
    stored = seed(live.url, session_id)
    response = open_stream(stream_url(live.url, session_id=session_id), params={"until_seq": 3})
    client = sseclient.SSEClient(response)
    try:
        events = list(client.events())
    finally:
        client.close()
    assert [(e.id, e.event) for e in events] == [("1", "user_message"), ("2", "run_started"), ("3", "status"),
                                                   (None, "end")]
    assert [json.loads(e.data) for e in events[:3]] == stored
    assert json.loads(events[3].data) == {"reason": "until_seq", "last_seq": 3}


def test_sse_client_library_resumes_with_last_event_id(live):
    session_id = new_id("libresume")
    stored = seed(live.url, session_id)
    response = open_stream(stream_url(live.url, session_id=session_id), params={"until_seq": 3},
                           headers={"Last-Event-ID": "1"})
    events = [e for e in sseclient.SSEClient(response).events() if e.event != "end"]
    assert [json.loads(e.data) for e in events] == stored[1:]


# -- history to live ------------------------------------------------------------------------------------


def test_history_to_live_switch_has_no_gap_and_no_duplicate_under_racing_appends(live):
    session_id = new_id("race")
    history, writers, per_writer = 20, 4, 25
    until_seq = history + writers * per_writer
    append(live.url, session_id, [{"type": "status", "payload": {"i": i}} for i in range(history)])
    appended = threading.Condition()
    count = [0]

    def writer(w: int) -> None:
        for i in range(per_writer):
            append(live.url, session_id, {"type": "assistant_message", "payload": {"w": w, "i": i}})
            with appended:
                count[0] += 1
                appended.notify_all()

    def subscriber(start_after: int, since_seq: int) -> Collected:
        # Subscribe at staggered points of the race, each from its own history position.
        with appended:
            assert appended.wait_for(lambda: count[0] >= start_after, BOUND)
        return collect(open_stream(stream_url(live.url, session_id=session_id),
                                   params={"since_seq": since_seq, "until_seq": until_seq}))

    starts = [(0, 0), (10, 7), (25, 20), (40, 20), (60, 50), (80, 90), (95, 100)]
    subscribers = [(since, *run_in_thread(subscriber, after, since)) for after, since in starts]
    writer_threads = [run_in_thread(writer, w) for w in range(writers)]
    for thread, outcome in writer_threads:
        result_of(thread, outcome)
    for since, thread, outcome in subscribers:
        collected = result_of(thread, outcome)
        assert collected.seqs == list(range(since + 1, until_seq + 1))
        assert collected.end == {"reason": "until_seq", "last_seq": until_seq}
    page = requests.get(f"{live.url}/api/sessions/{session_id}/events", params={"limit": 1000},
                        timeout=BOUND).json()
    assert [e["seq"] for e in page["events"]] == list(range(1, until_seq + 1))


def test_last_event_id_header_wins_over_since_seq(live):
    session_id = new_id("lei")
    seed(live.url, session_id)
    collected = collect(open_stream(stream_url(live.url, session_id=session_id),
                                    params={"since_seq": 0, "until_seq": 3}, headers={"Last-Event-ID": "2"}))
    assert collected.seqs == [3]


def test_invalid_last_event_id_is_a_422_before_any_stream(live):
    session_id = new_id("badlei")
    seed(live.url, session_id)
    response = open_stream(stream_url(live.url, session_id=session_id), headers={"Last-Event-ID": "abc"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_resume_with_last_event_id_after_the_server_is_killed_and_restarted(tmp_path: Path):
    data_dir, log = tmp_path / "data", tmp_path / "gunicorn.log"
    server = start_server(data_dir, log)
    try:
        session_id = new_id("resume")
        append(server.url, session_id, [{"type": "status", "payload": {"i": i}} for i in range(5)])
        seen: list[int] = []
        response = open_stream(stream_url(server.url, session_id=session_id))
        for message in raw_messages(response):
            if "id" in message.fields:
                seen.append(int(message.fields["id"]))
            if len(seen) == 3:
                break
        server.stop(signal.SIGKILL)
        response.close()
        server = start_server(data_dir, log)
        append(server.url, session_id, [{"type": "status", "payload": {"after": i}} for i in range(3)])
        resumed = collect(open_stream(stream_url(server.url, session_id=session_id),
                                      params={"until_seq": 8}, headers={"Last-Event-ID": str(seen[-1])}))
        assert seen == [1, 2, 3]
        assert resumed.seqs == [4, 5, 6, 7, 8]
    finally:
        server.stop()


# -- runs, keepalives, unknown streams -----------------------------------------------------------------


def run_events(session_id: str, run_id: str) -> list[dict]:
    return [
        {"type": "run_created", "run_id": run_id},
        {"type": "run_started", "run_id": run_id},
        {"type": "user_message", "payload": {"text": "not the run's"}},
        {"type": "tool_call", "run_id": run_id, "payload": {"name": "ls"}},
    ]


def test_run_stream_ends_after_the_terminal_event_from_history(live):
    session_id, run_id = new_id("runh"), new_id("run")
    append(live.url, session_id, run_events(session_id, run_id))
    terminal = append(live.url, session_id, {"type": "run_completed", "run_id": run_id})
    append(live.url, session_id, {"type": "status", "run_id": run_id, "payload": {"late": True}})
    collected = collect(open_stream(stream_url(live.url, run_id=run_id)))
    assert collected.seqs == [1, 2, 4, terminal["seq"]]
    assert collected.end == {"reason": "terminal", "last_seq": terminal["seq"]}


def test_run_stream_ends_after_a_live_terminal_event(live):
    session_id, run_id = new_id("runl"), new_id("run")
    append(live.url, session_id, run_events(session_id, run_id))
    received = threading.Semaphore(0)

    def on_message(message: Message) -> None:
        if "id" in message.fields:
            received.release()

    thread, outcome = run_in_thread(lambda: collect(open_stream(stream_url(live.url, run_id=run_id)),
                                                    on_message=on_message))
    for _ in range(3):
        assert received.acquire(timeout=BOUND)
    append(live.url, session_id, {"type": "assistant_message", "payload": {"text": "still going"}})
    failed = append(live.url, session_id, {"type": "run_failed", "run_id": run_id, "payload": {"why": "x"}})
    collected = result_of(thread, outcome)
    assert collected.seqs == [1, 2, 4, failed["seq"]]
    assert collected.envelopes[-1]["type"] == "run_failed"
    assert collected.end == {"reason": "terminal", "last_seq": failed["seq"]}


def test_run_stream_resumed_after_its_terminal_event_ends_at_once(live):
    session_id, run_id = new_id("runr"), new_id("run")
    append(live.url, session_id, run_events(session_id, run_id))
    terminal = append(live.url, session_id, {"type": "run_cancelled", "run_id": run_id})
    collected = collect(open_stream(stream_url(live.url, run_id=run_id),
                                    headers={"Last-Event-ID": str(terminal["seq"])}))
    assert collected.seqs == []
    assert collected.end == {"reason": "terminal", "last_seq": terminal["seq"]}


def test_keepalive_comments_arrive_on_an_idle_stream(live):
    session_id = new_id("idle")
    append(live.url, session_id, {"type": "status"})
    messages: list[Message] = []
    with open_stream(stream_url(live.url, session_id=session_id), params={"since_seq": 1}) as response:
        for message in raw_messages(response):
            messages.append(message)
            if sum(m.lines == [": keepalive"] for m in messages) == 3:
                break
    assert messages[0].fields.keys() == {"retry"}
    assert all(m.lines == [": keepalive"] for m in messages[1:])


def test_keepalives_reach_a_run_stream_while_other_events_keep_the_session_busy(live):
    """Other runs' events arrive more often than the keepalive period; this run's stream still idles."""
    session_id, run_id = new_id("busy"), new_id("run")
    append(live.url, session_id, {"type": "run_started", "run_id": run_id})
    changed = threading.Condition()
    during_chatter = [0]
    chatter_over = threading.Event()
    stop = threading.Event()

    def on_message(message: Message) -> None:
        if message.lines == [": keepalive"]:
            with changed:
                during_chatter[0] += not chatter_over.is_set()
                changed.notify_all()

    def chatter(writer: int) -> None:
        # Two writers, each pausing 0.05 s between appends: the session is never quiet for a keepalive
        # period (0.3 s), for some 25 periods unless the keepalives come first.
        for i in range(150):
            append(live.url, session_id, {"type": "message_delta", "payload": {"w": writer, "i": i}})
            if stop.wait(0.05):
                return

    def chatters() -> None:
        threads = [run_in_thread(chatter, w) for w in range(2)]
        for thread in threads:
            result_of(*thread)
        with changed:
            chatter_over.set()
            changed.notify_all()

    stream = run_in_thread(lambda: collect(open_stream(stream_url(live.url, run_id=run_id), params={"since_seq": 1}),
                                           on_message=on_message))
    writers = run_in_thread(chatters)
    try:
        with changed:
            changed.wait_for(lambda: during_chatter[0] >= 5 or chatter_over.is_set(), BOUND)
            assert during_chatter[0] >= 5, "keepalives stop while other runs' events keep the session busy"
    finally:
        stop.set()
        result_of(*writers)
        append(live.url, session_id, {"type": "run_completed", "run_id": run_id})
        assert result_of(*stream).end["reason"] == "terminal"


def test_a_disconnected_watcher_frees_its_thread(tmp_path: Path):
    """One worker, three threads, two stream slots: two abandoned streams never keep the server from
    answering (a thread is kept for short requests), and they give their slots back, so two new
    streams start once the server has noticed (at their next keepalive write)."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_THREADS": "3", "EVENTSVC_MAX_STREAMS": "2", "EVENTSVC_SSE_KEEPALIVE": "0.3"})
    kept = []
    try:
        session_id = new_id("free")
        append(server.url, session_id, {"type": "status"})
        for _ in range(2):
            response = open_stream(stream_url(server.url, session_id=session_id), params={"since_seq": 1})
            next(raw_messages(response))
            response.close()
        assert requests.get(server.url + "/healthz", timeout=BOUND).json() == {"status": "ok"}
        deadline = time.monotonic() + BOUND
        while len(kept) < 2:
            response = open_stream(stream_url(server.url, session_id=session_id), params={"since_seq": 1})
            if response.status_code == 200:
                next(raw_messages(response))
                kept.append(response)
                continue
            assert response.status_code == 503 and response.json()["error"]["code"] == "too_many_streams"
            response.close()
            assert time.monotonic() < deadline, "the abandoned streams never gave their slots back"
            time.sleep(0.1)
        assert requests.get(server.url + "/healthz", timeout=BOUND).json() == {"status": "ok"}
    finally:
        for response in kept:
            response.close()
        server.stop()


@pytest.mark.parametrize(("kind",), [("session",), ("run",)])
def test_unknown_session_or_run_is_a_json_404_before_any_stream(live, kind):
    unknown = new_id("unknown")
    url = stream_url(live.url, **{f"{kind}_id": unknown})
    with open_stream(url) as response:
        assert response.status_code == 404
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]["code"] == "not_found"


def test_wait_1_waits_for_a_session_that_does_not_exist_yet(live):
    session_id = new_id("later")
    opened = threading.Event()

    def on_message(message: Message) -> None:
        opened.set()

    thread, outcome = run_in_thread(lambda: collect(open_stream(stream_url(live.url, session_id=session_id),
                                                                params={"wait": 1, "until_seq": 2}),
                                                    on_message=on_message))
    assert opened.wait(BOUND), "the stream should start (retry advice) before the session exists"
    append(live.url, session_id, [{"type": "user_message"}, {"type": "status"}])
    collected = result_of(thread, outcome)
    assert collected.first.fields.keys() == {"retry"}
    assert collected.seqs == [1, 2]
    assert collected.end == {"reason": "until_seq", "last_seq": 2}


def test_wait_1_waits_for_a_run_that_does_not_exist_yet(live):
    session_id, run_id = new_id("laterrun"), new_id("run")
    opened = threading.Event()
    thread, outcome = run_in_thread(lambda: collect(open_stream(stream_url(live.url, run_id=run_id),
                                                                params={"wait": 1}),
                                                    on_message=lambda message: opened.set()))
    assert opened.wait(BOUND)
    append(live.url, session_id, [{"type": "run_started", "run_id": run_id},
                                  {"type": "run_completed", "run_id": run_id}])
    collected = result_of(thread, outcome)
    assert collected.seqs == [1, 2]
    assert collected.end == {"reason": "terminal", "last_seq": 2}


# -- long-poll --------------------------------------------------------------------------------------------


def test_long_poll_returns_early_when_an_event_is_appended(live):
    """Pollers wait up to 60 s; appends made on other connections (either worker) answer them early."""
    sessions = [new_id("lp") for _ in range(3)]
    run_session, run_id = new_id("lprun"), new_id("run")
    for session_id in sessions:
        append(live.url, session_id, {"type": "status"})
    append(live.url, run_session, {"type": "run_started", "run_id": run_id})

    def poll(url: str) -> dict:
        response = requests.get(url, params={"since_seq": 1, "wait": 60}, timeout=BOUND)
        assert response.status_code == 200, response.text
        return response.json()

    polls = [run_in_thread(poll, f"{live.url}/api/sessions/{s}/events") for s in sessions]
    run_poll = run_in_thread(poll, f"{live.url}/api/runs/{run_id}/events")
    threading.Event().wait(0.3)  # lets the pollers start waiting; correctness does not depend on it
    for session_id in sessions:
        append(live.url, session_id, {"type": "user_message", "payload": {"text": "wake"}})
    append(live.url, run_session, {"type": "user_message", "payload": {"text": "not the run's"}})
    run_event = append(live.url, run_session, {"type": "tool_call", "run_id": run_id})
    # Each answer must come well before the 60 s wait: the join bound (30 s) fails a poller that slept on.
    for session_id, (thread, outcome) in zip(sessions, polls):
        page = result_of(thread, outcome)
        assert [(e["seq"], e["type"]) for e in page["events"]] == [(2, "user_message")]
        assert page["next_since_seq"] == 2 and page["has_more"] is False
    page = result_of(*run_poll)
    assert [e["seq"] for e in page["events"]] == [run_event["seq"]]


def test_long_poll_returns_an_empty_page_after_the_wait(live):
    session_id = new_id("lpempty")
    append(live.url, session_id, {"type": "status"})
    response = requests.get(f"{live.url}/api/sessions/{session_id}/events",
                            params={"since_seq": 1, "wait": 0.5}, timeout=BOUND)
    assert response.status_code == 200
    assert response.json() == {"session_id": session_id, "events": [], "next_since_seq": 1, "has_more": False}


def test_long_poll_answers_at_once_when_events_exist(live):
    session_id = new_id("lpnow")
    append(live.url, session_id, [{"type": "status"}, {"type": "status"}])
    response = requests.get(f"{live.url}/api/sessions/{session_id}/events",
                            params={"since_seq": 1, "wait": 60}, timeout=BOUND)
    assert [e["seq"] for e in response.json()["events"]] == [2]


@pytest.mark.parametrize(("wait",), [("61",), ("-1",), ("soon",)])
def test_long_poll_wait_outside_0_to_60_is_a_422(live, wait):
    session_id = new_id("lpbad")
    append(live.url, session_id, {"type": "status"})
    response = requests.get(f"{live.url}/api/sessions/{session_id}/events", params={"wait": wait}, timeout=BOUND)
    assert response.status_code == 422
    assert "wait" in response.json()["error"]["details"]


# -- many watchers -------------------------------------------------------------------------------------------


def test_two_hundred_streams_each_receive_every_event_while_appends_continue(tmp_path: Path):
    """The make-run configuration (2 workers, default threads): 200 open streams, 20 appends."""
    streams, events = 200, 20
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log")
    try:
        session_id = new_id("many")
        append(server.url, session_id, {"type": "session_created"})
        until_seq = 1 + events
        started = threading.Condition()
        count = [0]
        url = stream_url(server.url, session_id=session_id)

        def on_message(message: Message) -> None:
            if "retry" in message.fields:
                with started:
                    count[0] += 1
                    started.notify_all()

        def watch() -> Collected:
            response = open_stream(url, params={"since_seq": 1, "until_seq": until_seq})
            assert response.status_code == 200
            return collect(response, on_message=on_message)

        watchers = [run_in_thread(watch) for _ in range(streams)]
        with started:
            started.wait_for(lambda: count[0] == streams, BOUND)
            assert count[0] == streams, f"only {count[0]} of {streams} streams started within {BOUND}s"
        acknowledged = [append(server.url, session_id, {"type": "message_delta", "payload": {"i": i}})["seq"]
                        for i in range(events)]
        assert acknowledged == list(range(2, until_seq + 1))
        for thread, outcome in watchers:
            collected = result_of(thread, outcome)
            assert collected.seqs == acknowledged
            assert collected.end == {"reason": "until_seq", "last_seq": until_seq}
    finally:
        server.stop()
