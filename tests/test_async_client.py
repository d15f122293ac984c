"""AsyncEventClient against a real gunicorn on loopback: every method, the same exceptions as
EventClient, follow across a SIGKILL and restart, and 503 ``too_many_streams`` with
``Retry-After`` honoured by both clients' follow (a real socket server, not a mocked transport).
"""
from __future__ import annotations

import asyncio
import inspect
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Server, start_server
from eventsvc import errors
from eventsvc.client.protocol import Follow, RetryPolicy, retry_after
from eventsvc.client import (AsyncEventClient, ConnectionFailed, EventClient, EventIdConflict, NotFound,
                             RunSessionConflict, Unauthorized, ValidationFailed)

pytestmark = pytest.mark.slow

BOUND = 30  # seconds: a safety bound on every wait, never a measurement
TOKEN = "async-token-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("async-client")
    running = start_server(root / "data", root / "gunicorn.log",
                           env={"EVENTSVC_API_TOKENS": TOKEN, "EVENTSVC_SSE_KEEPALIVE": "0.5"})
    yield running
    running.stop()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, BOUND))


async def collect(iterator) -> list:
    return [item async for item in iterator]


@given(st.lists(st.one_of(st.integers(1, 40), st.just(None)), max_size=60), st.integers(0, 10))
def test_follow_hands_out_each_seq_once_in_increasing_order(ids, since_seq):
    state = Follow("/p", since_seq, until_seq=None, wait=False, policy=RetryPolicy(), give_up_after=None,
                   on_retry=None)
    handed, expected, cursor = [], [], since_seq
    for seq in ids:
        envelope = state.message("status", "" if seq is None else f'{{"seq":{seq}}}', str(seq or ""), None)
        if envelope is not None:
            handed.append(envelope["seq"])
        if seq is not None and seq > cursor:
            expected.append(seq)
            cursor = seq
    assert handed == expected
    assert state.request()[1].get("Last-Event-ID") == (str(cursor) if cursor else None)


@pytest.mark.parametrize(("header", "seconds"), [("3", 3.0), ("0", 0.0), ("86400", 60.0), ("soon", None),
                                                  ("-1", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_reads_seconds_and_dates_and_bounds_them(header, seconds):
    assert retry_after({"retry-after": header}) == seconds


def test_the_async_client_has_the_sync_clients_surface():
    public = {name for name in dir(EventClient) if not name.startswith("_")}
    assert public <= {name for name in dir(AsyncEventClient) if not name.startswith("_")}
    for name in ("append", "session_events", "run_events", "follow"):
        sync, asynchronous = inspect.signature(getattr(EventClient, name)), inspect.signature(
            getattr(AsyncEventClient, name))
        assert list(sync.parameters) == list(asynchronous.parameters), name


def test_append_one_and_a_batch_then_read_them_back_in_pages(server):
    async def scenario() -> None:
        session_id, run_id = new_id("a-append"), new_id("run")
        async with AsyncEventClient(server.url, token=TOKEN) as client:
            event = {"type": "user_message", "payload": {"text": "hi"}}
            one = await client.append(session_id, event, default_source="agent")
            assert event == {"type": "user_message", "payload": {"text": "hi"}}
            assert (one["seq"], one["source"], uuid.UUID(one["event_id"]).version) == (1, "agent", 4)
            batch = await client.append(session_id, [{"type": "tool_call", "run_id": run_id, "payload": {"i": i}}
                                                     if i % 2 else {"type": "status", "payload": {"i": i}}
                                                     for i in range(250)])
            assert [e["seq"] for e in batch] == list(range(2, 252))
            assert await collect(client.session_events(session_id, limit=40)) == [one, *batch]
            assert await collect(client.session_events(session_id, since_seq=249)) == batch[-2:]
            assert await collect(client.run_events(run_id, limit=30)) == batch[1::2]
            tail = await collect(client.run_events(run_id, since_seq=240))
            assert [e["seq"] for e in tail] == [241, 243, 245, 247, 249, 251]
    run(scenario())


def test_errors_are_the_sync_clients_exceptions(server):
    async def scenario() -> None:
        session_id, other, run_id = new_id("a-err"), new_id("a-err"), new_id("run")
        async with AsyncEventClient(server.url, token=TOKEN) as client:
            await client.append(session_id, {"type": "run_started", "run_id": run_id, "event_id": "e1"})
            with pytest.raises(ValidationFailed) as invalid:
                await client.append(session_id, [{"type": "status"}, {"type": "no_such_type"}])
            assert isinstance(invalid.value, ValueError) and list(invalid.value.details) == ["1"]
            with pytest.raises(EventIdConflict):
                await client.append(session_id, {"type": "status", "event_id": "e1"})
            with pytest.raises(RunSessionConflict) as conflict:
                await client.append(other, {"type": "tool_call", "run_id": run_id})
            assert isinstance(conflict.value, errors.Conflict) and conflict.value.status == 409
            with pytest.raises(NotFound):
                await collect(client.run_events(new_id("nope")))
            with pytest.raises(NotFound):
                await collect(client.follow(session_id=new_id("nope")))
            assert [e["seq"] async for e in client.session_events(session_id)] == [1]  # nothing rejected was stored
        async with AsyncEventClient(server.url) as anonymous:
            with pytest.raises(Unauthorized):
                await anonymous.append(session_id, {"type": "status"})
    run(scenario())


def test_follow_yields_history_then_live_events_and_stops_after_the_run_ends(server):
    async def scenario() -> None:
        session_id, run_id = new_id("a-follow"), new_id("run")
        async with AsyncEventClient(server.url, token=TOKEN) as client:
            history = await client.append(session_id, [{"type": "run_started", "run_id": run_id},
                                                       {"type": "user_message"}])
            followed = client.follow(run_id=run_id)
            assert await followed.__anext__() == history[0]
            live = await client.append(session_id, [{"type": "tool_call", "run_id": run_id},
                                                    {"type": "run_completed", "run_id": run_id},
                                                    {"type": "status", "run_id": run_id}])
            assert await collect(followed) == live[:2]
            stored = await collect(client.session_events(session_id))
            assert await collect(client.follow(session_id=session_id, since_seq=1, until_seq=4)) == stored[1:4]
    run(scenario())


def test_follow_with_wait_waits_for_a_session_that_does_not_exist_yet(server):
    async def scenario() -> None:
        session_id = new_id("a-wait")
        async with AsyncEventClient(server.url, token=TOKEN) as client:
            follower = asyncio.create_task(collect(client.follow(session_id=session_id, wait=True, until_seq=2)))
            await asyncio.sleep(0)  # let it connect first; the order does not matter to the answer
            stored = await client.append(session_id, [{"type": "user_message"}, {"type": "status"}])
            assert await follower == stored
    run(scenario())


def test_follow_survives_sigkill_and_restart_and_yields_each_event_once(tmp_path: Path):
    data_dir, log = tmp_path / "data", tmp_path / "gunicorn.log"
    env = {"EVENTSVC_SSE_KEEPALIVE": "0.5"}
    server = start_server(data_dir, log, env=env)
    port = int(server.url.rsplit(":", 1)[1])
    session_id = new_id("a-restart")

    async def scenario() -> None:
        nonlocal server
        async with AsyncEventClient(server.url, backoff=0.05, max_backoff=0.5) as client:
            stored = await client.append(session_id, [{"type": "status", "payload": {"i": i}} for i in range(5)])
            seen: list[dict] = []
            followed = client.follow(session_id=session_id, until_seq=15)
            seen += [await followed.__anext__() for _ in range(5)]
            for batch in (range(5, 10), range(10, 15)):
                await asyncio.to_thread(server.stop, signal.SIGKILL)
                server = await asyncio.to_thread(start_server, data_dir, log, env=env, port=port)
                stored += await client.append(session_id, [{"type": "status", "payload": {"i": i}} for i in batch])
                seen += [await followed.__anext__() for _ in range(5)]
            with pytest.raises(StopAsyncIteration):
                await followed.__anext__()
            assert seen == stored
    try:
        run(scenario())
    finally:
        server.stop()


def test_append_to_a_dead_server_gives_up_with_connection_failed():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]

    async def scenario() -> None:
        async with AsyncEventClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as client:
            with pytest.raises(ConnectionFailed) as caught:
                await client.append("s", {"type": "status"})
            assert caught.value.status is None
            with pytest.raises(ConnectionFailed):
                await collect(client.follow(session_id="s", give_up_after=0.3))
    run(scenario())


# -- 503 too_many_streams with Retry-After ---------------------------------------------------------------


class BusyStreamServer:
    """A real HTTP server on 127.0.0.1 that answers the first ``busy`` stream requests with 503
    ``too_many_streams`` and ``Retry-After: 1``, then a stream of two events and ``end``.
    ``arrivals`` records when each request came."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.arrivals: list[float] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(BOUND)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                self.arrivals.append(time.monotonic())
                if len(self.arrivals) <= self.busy:
                    body = b'{"error":{"code":"too_many_streams","message":"every stream slot is taken"}}'
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                 b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body))
                    continue
                stream = (b'retry: 100\n\nid: 1\nevent: status\ndata: {"seq":1}\n\n'
                          b'id: 2\nevent: status\ndata: {"seq":2}\n\nevent: end\ndata: {}\n\n')
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                             + stream)


@pytest.mark.parametrize(("flavour",), [("sync",), ("async",)])
def test_follow_waits_retry_after_when_the_server_has_too_many_streams(flavour):
    busy = BusyStreamServer(busy=2)
    notices: list[tuple[str, float]] = []
    try:
        if flavour == "sync":
            with EventClient(busy.url, backoff=0.01) as client:
                events = list(client.follow(session_id="s", on_retry=lambda what, delay: notices.append((what, delay))))
        else:
            async def scenario() -> list[dict]:
                async with AsyncEventClient(busy.url, backoff=0.01) as client:
                    return await collect(client.follow(session_id="s", on_retry=lambda w, d: notices.append((w, d))))
            events = run(scenario())
    finally:
        busy.close()
    assert events == [{"seq": 1}, {"seq": 2}]
    assert len(busy.arrivals) == 3
    gaps = [later - earlier for earlier, later in zip(busy.arrivals, busy.arrivals[1:])]
    assert all(gap >= 0.95 for gap in gaps), gaps  # Retry-After: 1, though the backoff alone is 10 ms
    assert [delay >= 1.0 and "too_many_streams" in what for what, delay in notices] == [True, True]


def test_follow_gives_up_when_retry_after_outlasts_its_budget():
    busy = BusyStreamServer(busy=100)
    try:
        with EventClient(busy.url, backoff=0.01) as client:
            with pytest.raises(ConnectionFailed) as caught:
                list(client.follow(session_id="s", give_up_after=2.5))
    finally:
        busy.close()
    assert "too_many_streams" in str(caught.value)
    assert 2 <= len(busy.arrivals) <= 4


@pytest.mark.parametrize(("flavour",), [("sync",), ("async",)])
def test_follow_waits_for_a_stream_slot_on_a_real_server_at_its_cap(tmp_path: Path, flavour):
    """One worker with one stream slot: a second follow hears 503 too_many_streams with
    Retry-After, waits it, and streams once the first stream has gone."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_MAX_STREAMS": "1", "EVENTSVC_SSE_KEEPALIVE": "0.5"})
    session_id = new_id("slots")
    refused = threading.Event()
    notices: list[tuple[str, float]] = []

    def heard(what: str, delay: float) -> None:
        notices.append((what, delay))
        refused.set()

    try:
        with EventClient(server.url) as writer:
            first = writer.append(session_id, {"type": "status"})
            hog = httpx.Client(base_url=server.url, timeout=BOUND)
            with hog.stream("GET", f"/api/sessions/{session_id}/events/stream") as holding:
                assert holding.status_code == 200
                followed: list = []
                if flavour == "sync":
                    follower = threading.Thread(target=lambda: followed.extend(EventClient(server.url).follow(
                        session_id=session_id, until_seq=2, on_retry=heard)))
                else:
                    async def follow() -> None:
                        async with AsyncEventClient(server.url) as client:
                            followed.extend(await collect(client.follow(session_id=session_id, until_seq=2,
                                                                        on_retry=heard)))
                    follower = threading.Thread(target=lambda: run(follow()))
                follower.start()
                assert refused.wait(BOUND)
            hog.close()  # the slot is free again; the follower's retry gets it
            second = writer.append(session_id, {"type": "status"})
            follower.join(BOUND)
        assert followed == [first, second]
        what, delay = notices[0]
        assert "too_many_streams" in what and delay >= 2.0  # the server's Retry-After: 2
    finally:
        server.stop()


# -- summaries, listings and type filters (issue 14's endpoints), through both clients ----------------------


@pytest.mark.parametrize(("flavour",), [("sync",), ("async",)])
def test_summaries_listings_and_type_filters_through_both_clients(server, flavour):
    session_id, run_id, other_run = new_id("sum"), new_id("run"), new_id("run")
    with EventClient(server.url, token=TOKEN) as writer:
        stored = writer.append(session_id, [
            {"type": "run_created", "run_id": run_id}, {"type": "run_started", "run_id": run_id},
            {"type": "tool_call", "run_id": run_id}, {"type": "user_message"},
            {"type": "tool_call", "run_id": run_id}, {"type": "run_completed", "run_id": run_id},
            {"type": "run_started", "run_id": other_run}])

    def check(session, run, unknown, sessions, runs_all, runs_done, runs_running, tool_calls, run_tools, followed):
        assert session["session_id"] == session_id and session["event_count"] == 7 and session["run_count"] == 2
        assert (run["run_id"], run["status"], run["event_count"]) == (run_id, "completed", 5)
        assert isinstance(unknown, NotFound)
        assert session_id in [s["session_id"] for s in sessions]
        assert sorted(r["run_id"] for r in runs_all) == sorted([run_id, other_run])
        assert [r["run_id"] for r in runs_done] == [run_id]
        assert [r["run_id"] for r in runs_running] == [other_run]
        assert tool_calls == [stored[2], stored[4]] == run_tools
        assert followed == [stored[2], stored[4]]

    if flavour == "sync":
        with EventClient(server.url, token=TOKEN) as client:
            try:
                client.run(new_id("nope"))
            except NotFound as exc:
                unknown = exc
            check(client.session(session_id), client.run(run_id), unknown, list(client.sessions(limit=2)),
                  list(client.runs(session_id=session_id, limit=1)),
                  list(client.runs(session_id=session_id, status="completed")),
                  list(client.runs(session_id=session_id, status=["running", "waiting_input"])),
                  list(client.session_events(session_id, types=["tool_call"], limit=1)),
                  list(client.run_events(run_id, types=["tool_call"])),
                  list(client.follow(session_id=session_id, types=["tool_call"], until_seq=6)))
    else:
        async def scenario() -> None:
            async with AsyncEventClient(server.url, token=TOKEN) as client:
                try:
                    await client.run(new_id("nope"))
                except NotFound as exc:
                    unknown = exc
                check(await client.session(session_id), await client.run(run_id), unknown,
                      await collect(client.sessions(limit=2)),
                      await collect(client.runs(session_id=session_id, limit=1)),
                      await collect(client.runs(session_id=session_id, status="completed")),
                      await collect(client.runs(session_id=session_id, status=["running", "waiting_input"])),
                      await collect(client.session_events(session_id, types=["tool_call"], limit=1)),
                      await collect(client.run_events(run_id, types=["tool_call"])),
                      await collect(client.follow(session_id=session_id, types=["tool_call"], until_seq=6)))
        run(scenario())
