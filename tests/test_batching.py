"""BatchingEmitter and AsyncBatchingEmitter against a real gunicorn on loopback: many threads and
tasks, per-session order, one bad event in a batch, lost answers, a server SIGKILLed with batches
in flight, close() with events pending. The batch rules themselves are property-tested without
a server.
"""
from __future__ import annotations

import asyncio
import inspect
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, wait
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Server, start_server
from eventsvc import EventEmitter
from eventsvc.client import (AsyncBatchingEmitter, AsyncEventClient, BadRequest, BatchingEmitter, ConnectionFailed,
                             EmitterClosed, EventClient, EventIdConflict, PayloadTooLarge, RemoteEmitter,
                             RunSessionConflict, ValidationFailed)
from eventsvc.client.batches import Batcher, Pending, after_error
from test_client import Relay

BOUND = 60  # seconds: a safety bound on every wait, never a measurement
THREADS, PER_THREAD, SESSIONS = 16, 500, 4


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("batching")
    running = start_server(root / "data", root / "gunicorn.log", env={"EVENTSVC_MAX_EVENT_BYTES": "65536"})
    yield running
    running.stop()


@pytest.fixture
def client(server) -> Iterator[EventClient]:
    with EventClient(server.url) as event_client:
        yield event_client


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def stored_once_in_order(client: EventClient, sessions: list[str], expected: int) -> dict[str, list[dict]]:
    """Every session's events; asserts each event id appears once and each emitter's (``w``)
    events carry its counter ``i`` in increasing order."""
    stored = {session_id: list(client.session_events(session_id, limit=1000)) for session_id in sessions}
    everything = [event for events in stored.values() for event in events]
    assert len(everything) == expected
    assert len({event["event_id"] for event in everything}) == expected
    for events in stored.values():
        by_writer: dict[int, list[int]] = defaultdict(list)
        for event in events:
            by_writer[event["payload"]["w"]].append(event["payload"]["i"])
        assert all(counters == sorted(counters) for counters in by_writer.values())
    return stored


# -- the rules, without a server -----------------------------------------------------------------------


def pending(n: int, size: int = 10, since: float = 0.0, event_id: str | None = None) -> Pending:
    return Pending({"n": n, "event_id": event_id or uuid.uuid4().hex}, b"x" * size, Future(), since)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 400), st.integers(0, 40)), min_size=1, max_size=200),
       st.integers(1, 7), st.integers(1, 1200), st.lists(st.booleans(), min_size=1))
def test_batches_keep_emit_order_and_limits_with_one_in_flight_per_session(adds, max_batch, max_bytes, chains):
    """Whether the dispatcher cuts a session's next batch or its sender takes it at once; an
    event_id emitted again goes in a later batch than the first (as if emitted alone)."""
    batcher = Batcher(linger=0.005, max_batch=max_batch, max_batch_bytes=max_bytes)
    for n, (session, size, event_id) in enumerate(adds):
        batcher.add(f"s{session}", Pending({"n": n, "event_id": f"e{event_id}"}, b"x" * size, None, 0.0))
    sent: dict[str, list[int]] = defaultdict(list)
    in_flight: dict[str, list[Pending]] = {}
    turns = 0

    def record(session: str, batch: list[Pending]) -> None:
        assert session not in in_flight
        assert len(batch) <= max_batch
        assert len(batch) == 1 or sum(len(item.line) for item in batch) + len(batch) + 1 <= max_bytes
        assert len({item.event["event_id"] for item in batch}) == len(batch)
        sent[session].extend(item.event["n"] for item in batch)
        in_flight[session] = batch

    while batcher.pending:
        due, _ = batcher.take_due(1.0, urgent=False)
        assert len({session for session, _ in due}) == len(due)
        for session, batch in due:
            record(session, batch)
        assert in_flight
        assert batcher.take_due(1.0, urgent=True) == ([], None)  # the rest wait for their session's batch
        for session in list(in_flight):
            assert batcher.take_next(session, 1.0, urgent=True) is None  # its batch is not done yet
            batcher.done(session)
            del in_flight[session]
            turns += 1
            if chains[turns % len(chains)]:
                batch = batcher.take_next(session, 1.0, urgent=False)
                if batch is not None:
                    record(session, batch)
    expected: dict[str, list[int]] = defaultdict(list)
    for n, (session, _, _) in enumerate(adds):
        expected[f"s{session}"].append(n)
    assert sent == expected


def test_a_resolved_session_hands_its_next_batch_to_its_sender_only_when_due():
    batcher = Batcher(linger=0.005, max_batch=2, max_batch_bytes=1000)
    for n in range(5):
        batcher.add("a", pending(n, since=10.0))
    [(session, first)] = batcher.take_due(10.0, urgent=False)[0]  # full: due without lingering
    assert [item.event["n"] for item in first] == [0, 1]
    batcher.done("a")
    assert [item.event["n"] for item in batcher.take_next("a", 10.0, urgent=False)] == [2, 3]
    batcher.done("a")
    assert batcher.take_next("a", 10.001, urgent=False) is None  # one left: it lingers, the dispatcher's turn
    assert [item.event["n"] for item in batcher.take_next("a", 10.005, urgent=False)] == [4]
    batcher.done("a")
    assert batcher.take_next("a", 11.0, urgent=True) is None and batcher.pending == 0


def test_a_batch_waits_for_linger_unless_full_or_urgent():
    batcher = Batcher(linger=0.005, max_batch=3, max_batch_bytes=1000)
    batcher.add("a", pending(1, since=10.0))
    assert batcher.take_due(10.001, urgent=False) == ([], 10.005)
    assert [len(batch) for _, batch in batcher.take_due(10.001, urgent=True)[0]] == [1]
    for n in range(4):
        batcher.add("b", pending(n, since=20.0))
    assert [len(batch) for _, batch in batcher.take_due(20.0, urgent=False)[0]] == [3]


@given(st.integers(2, 40), st.sets(st.integers(0, 39), min_size=1))
def test_a_422_fails_only_the_indexed_events_and_resends_the_rest_in_order(size, bad):
    batch = [pending(n) for n in range(size)]
    bad = {i for i in bad if i < size}
    if not bad:
        return
    error = ValidationFailed("invalid batch", {str(i): {"type": ["Unknown."]} for i in bad}, status=422,
                             code="validation_error")
    failures, again = after_error(batch, error)
    assert [batch.index(item) for item, _ in failures] == sorted(bad)
    assert all(isinstance(e, ValidationFailed) and e.details == {"type": ["Unknown."]} for _, e in failures)
    assert [item.event["n"] for part in again for item in part] == [n for n in range(size) if n not in bad]


def test_a_409_halves_the_batch_until_the_culprit_stands_alone():
    batch = [pending(n) for n in range(5)]
    conflict = EventIdConflict("taken", status=409, code="event_id_conflict")
    failures, again = after_error(batch, conflict)
    assert failures == [] and [[i.event["n"] for i in part] for part in again] == [[0, 1], [2, 3, 4]]
    assert after_error(again[0][:1], conflict) == ([(again[0][0], conflict)], [])


# -- the sync emitter against a server -----------------------------------------------------------------


def test_the_emitters_have_the_event_emitter_interface():
    assert issubclass(BatchingEmitter, EventEmitter)
    signature = inspect.signature(EventEmitter.emit)
    assert inspect.signature(BatchingEmitter.emit) == signature
    assert inspect.signature(BatchingEmitter.emit_nowait).parameters == signature.parameters
    assert list(inspect.signature(AsyncBatchingEmitter.emit).parameters) == list(signature.parameters)
    assert AsyncBatchingEmitter.run_scope is EventEmitter.run_scope


@pytest.mark.parametrize(("option", "value"), [("max_batch", 0), ("max_batch", 1001), ("linger", -0.001),
                                                ("max_batch_bytes", 0), ("max_pending", 0), ("senders", 0)])
def test_limits_beyond_the_servers_are_refused_at_construction(option, value):
    with pytest.raises(ValueError, match=option):
        BatchingEmitter(EventClient("http://127.0.0.1:9"), **{option: value})
    with pytest.raises(ValueError):
        AsyncBatchingEmitter(AsyncEventClient("http://127.0.0.1:9"), **{option: value})


@pytest.mark.slow
def test_run_scope_gives_each_thread_and_task_its_run_id(client):
    session_id = new_id("scopes")

    def in_thread(run_id: str) -> dict:
        with emitter.run_scope(run_id):
            return emitter.emit(session_id, "run_started")

    with BatchingEmitter(client) as emitter:
        with emitter.run_scope("outer"):
            outside = emitter.emit_nowait(session_id, "status")
        results: list[dict] = []
        threads = [threading.Thread(target=lambda r=r: results.append(in_thread(r))) for r in ("ra", "rb")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BOUND)
        explicit = emitter.emit(session_id, "status", run_id="explicit")
    assert outside.result()["run_id"] == "outer" and explicit["run_id"] == "explicit"
    assert sorted(envelope["run_id"] for envelope in results) == ["ra", "rb"]

    async def tasks() -> list[dict]:
        async with AsyncEventClient(client.base_url) as async_client, AsyncBatchingEmitter(async_client) as emitter:
            async def task(run_id: str) -> dict:
                with emitter.run_scope(run_id):
                    await asyncio.sleep(0)  # the other task's scope is open meanwhile
                    return await emitter.emit(session_id, "run_started")
            return await asyncio.gather(task("ta"), task("tb"))

    assert [envelope["run_id"] for envelope in run(tasks())] == ["ta", "tb"]


@pytest.mark.slow
@pytest.mark.parametrize("senders", [8, 2])  # 2: fewer senders than sessions, so senders take turns
def test_sixteen_threads_store_every_event_once_in_emit_order(client, senders):
    sessions = [new_id("threads") for _ in range(SESSIONS)]
    results: list[list[Future]] = [[] for _ in range(THREADS)]
    order = threading.Lock()
    counter = iter(range(1, THREADS * PER_THREAD + 1))
    with BatchingEmitter(client, source="agent", senders=senders) as emitter:
        def writer(w: int) -> None:
            for i in range(PER_THREAD):
                session_id = sessions[(w + i) % SESSIONS]
                if i % 50 == 49:  # now and then a blocking emit, the common call
                    done: Future = Future()
                    done.set_result(emitter.emit(session_id, "message_delta", {"w": w, "i": i}))
                    results[w].append(done)
                elif w % 2:  # free-running writers: their own order is checked
                    results[w].append(emitter.emit_nowait(session_id, "message_delta", {"w": w, "i": i}))
                else:  # writers whose calls are numbered in the order they happen, across threads
                    with order:
                        payload = {"w": w, "i": i, "n": next(counter)}
                        results[w].append(emitter.emit_nowait(session_id, "message_delta", payload))

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BOUND)
    assert all(future.done() for futures in results for future in futures)  # close() waited for them
    stored = stored_once_in_order(client, sessions, THREADS * PER_THREAD)
    for events in stored.values():
        numbered = [event["payload"]["n"] for event in events if "n" in event["payload"]]
        assert numbered == sorted(numbered)  # stored in the order the emits were called
    by_id = {event["event_id"]: event for events in stored.values() for event in events}
    returned = [future.result() for futures in results for future in futures]
    assert all(by_id[envelope["event_id"]] == envelope for envelope in returned)
    assert {event["source"] for event in by_id.values()} == {"agent"}


@pytest.mark.slow
def test_one_bad_event_fails_only_its_own_emit(client):
    session_id, run_id, other = new_id("bad"), new_id("run"), new_id("other")
    client.append(other, {"type": "run_started", "run_id": run_id})
    with BatchingEmitter(client, linger=0.3) as emitter:
        futures = [emitter.emit_nowait(session_id, "status", {"i": 0}),
                   emitter.emit_nowait(session_id, "run_started", {"i": 1}),  # run-scoped, no run_id: 422
                   emitter.emit_nowait(session_id, "status", {"i": 2}),
                   emitter.emit_nowait(session_id, "tool_call", {"i": 3}, run_id=run_id),  # another's run: 409
                   emitter.emit_nowait(session_id, "status", {"i": 4}),
                   emitter.emit_nowait(session_id, "status", {"i": 5, "text": "x" * 70_000}),  # too large: 413
                   emitter.emit_nowait(session_id, "status", {"i": 6})]
        wait(futures, BOUND)
    with pytest.raises(ValidationFailed) as invalid:
        futures[1].result()
    assert "run_id" in invalid.value.details
    with pytest.raises(RunSessionConflict):
        futures[3].result()
    with pytest.raises(PayloadTooLarge):
        futures[5].result()
    stored = list(client.session_events(session_id))
    assert [e["payload"]["i"] for e in stored] == [0, 2, 4, 6]
    assert [futures[i].result() for i in (0, 2, 4, 6)] == stored


@pytest.mark.slow
def test_one_post_per_session_per_window_and_a_lost_answer_is_stored_once(server, client):
    relay = Relay(server.url, faults=("drop",))
    sessions = [new_id("window"), new_id("window")]
    try:
        with EventClient(relay.url, backoff=0.05) as relayed, BatchingEmitter(relayed, linger=0.5) as emitter:
            futures = [emitter.emit_nowait(sessions[i % 2], "message_delta", {"w": 0, "i": i}) for i in range(100)]
            wait(futures, BOUND)
        posts = [status for _, status in relay.requests("POST")]
    finally:
        relay.close()
    assert sorted(posts) == [200, 201, 201]  # one POST per session; the dropped one re-sent and replayed
    stored_once_in_order(client, sessions, 100)


@pytest.mark.slow
def test_close_sends_pending_events_then_refuses_emits(client):
    session_id = new_id("close")
    emitter = BatchingEmitter(client, linger=30.0)
    futures = [emitter.emit_nowait(session_id, "status", {"w": 0, "i": i}) for i in range(50)]
    emitter.close()  # well before the 30 s linger: close does not wait for the window
    assert all(future.done() and future.exception() is None for future in futures)
    stored_once_in_order(client, [session_id], 50)
    with pytest.raises(EmitterClosed, match="closed"):
        emitter.emit(session_id, "status")
    with pytest.raises(EmitterClosed):
        emitter.emit_nowait(session_id, "status")
    emitter.close()
    emitter.flush()
    assert len(list(client.session_events(session_id))) == 50


@pytest.mark.slow
def test_a_program_that_exits_without_close_still_sends_what_it_emitted(client):
    session_id = new_id("atexit")
    script = f"""
from eventsvc.client import BatchingEmitter, EventClient
emitter = BatchingEmitter(EventClient({client.base_url!r}), linger=30.0)
for i in range(20):
    emitter.emit_nowait({session_id!r}, "status", {{"w": 0, "i": i}})
"""
    exited = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=BOUND)
    assert exited.returncode == 0, exited.stderr
    stored_once_in_order(client, [session_id], 20)


@pytest.mark.slow
def test_sigkill_with_batches_in_flight_then_restart_stores_every_event_exactly_once(tmp_path: Path):
    data_dir, log = tmp_path / "data", tmp_path / "gunicorn.log"
    server = start_server(data_dir, log)
    port = int(server.url.rsplit(":", 1)[1])
    sessions = [new_id("kill") for _ in range(SESSIONS)]
    futures: list[Future] = []
    lock = threading.Lock()
    try:
        with EventClient(server.url, timeout=2.0, backoff=0.05, max_backoff=0.5) as client, \
                BatchingEmitter(client, max_batch=50) as emitter:
            def writer(w: int) -> None:
                for i in range(300):
                    future = emitter.emit_nowait(sessions[(w + i) % SESSIONS], "message_delta", {"w": w, "i": i})
                    with lock:
                        futures.append(future)

            first = emitter.emit(sessions[0], "message_delta", {"w": -1, "i": 0})
            threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
            for thread in threads:
                thread.start()
            stored_some = threading.Event()
            while not stored_some.is_set():  # until a batch after the first is stored: more are in flight
                with lock:
                    latest = futures[-1] if len(futures) > 100 else None
                if latest is not None:
                    latest.add_done_callback(lambda _: stored_some.set())
                    assert stored_some.wait(BOUND)
                else:
                    threads[0].join(0.01)
            server.stop(signal.SIGKILL)  # batches are in flight: some stored and unanswered, some not sent
            server = start_server(data_dir, log, port=port)
            for thread in threads:
                thread.join(BOUND)
            emitter.flush()
        assert all(future.exception() is None for future in futures)
        with EventClient(server.url) as reader:
            stored = stored_once_in_order(reader, sessions, 8 * 300 + 1)
        assert stored[sessions[0]][0] == first
    finally:
        server.stop()


# -- the async emitter -----------------------------------------------------------------------------------


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, BOUND))


@pytest.mark.slow
@pytest.mark.parametrize("senders", [8, 2])  # 2: fewer slots than sessions, so senders take turns
def test_sixteen_tasks_store_every_event_once_in_emit_order(server, senders):
    sessions = [new_id("tasks") for _ in range(SESSIONS)]
    emitted: dict[str, list[int]] = defaultdict(list)  # per session, the global emit counter in call order

    async def scenario() -> list[dict]:
        counter = 0
        async with AsyncEventClient(server.url) as client, AsyncBatchingEmitter(client, senders=senders) as emitter:
            async def writer(w: int) -> list[dict]:
                nonlocal counter
                envelopes = []
                for i in range(PER_THREAD):
                    session_id = sessions[(w + i) % SESSIONS]
                    counter += 1
                    emitted[session_id].append(counter)
                    event = ("message_delta", {"w": w, "i": i, "n": counter})
                    if i % 50 == 49:  # now and then an awaited emit, the common call
                        envelopes.append(await emitter.emit(session_id, *event))
                    else:
                        envelopes.append(emitter.emit_nowait(session_id, *event))
                        await asyncio.sleep(0)  # let the other tasks emit in between
                return [envelope if isinstance(envelope, dict) else await envelope for envelope in envelopes]

            results = await asyncio.gather(*(writer(w) for w in range(THREADS)))
        return [envelope for envelopes in results for envelope in envelopes]

    returned = run(scenario())
    with EventClient(server.url) as client:
        stored = stored_once_in_order(client, sessions, THREADS * PER_THREAD)
    assert {session_id: [e["payload"]["n"] for e in events] for session_id, events in stored.items()} == emitted
    by_id = {event["event_id"]: event for events in stored.values() for event in events}
    assert all(by_id[envelope["event_id"]] == envelope for envelope in returned)


@pytest.mark.slow
def test_async_bad_event_close_with_pending_and_emits_after_close(server):
    session_id = new_id("async-bad")

    async def scenario() -> list[asyncio.Future]:
        async with AsyncEventClient(server.url) as client:
            emitter = AsyncBatchingEmitter(client, linger=30.0)
            futures = [emitter.emit_nowait(session_id, "status", {"w": 0, "i": 0}),
                       emitter.emit_nowait(session_id, "verify_fail", {"w": 0, "i": 1}),  # no run_id: 422
                       emitter.emit_nowait(session_id, "status", {"w": 0, "i": 2})]
            await emitter.close()  # before the 30 s linger
            assert all(future.done() for future in futures)
            with pytest.raises(EmitterClosed):
                await emitter.emit(session_id, "status")
            with pytest.raises(EmitterClosed):
                emitter.emit_nowait(session_id, "status")
            return futures

    futures = run(scenario())
    assert isinstance(futures[1].exception(), ValidationFailed)
    with EventClient(server.url) as client:
        stored = list(client.session_events(session_id))
    assert [e["payload"]["i"] for e in stored] == [0, 2]
    assert [futures[0].result(), futures[2].result()] == stored


@pytest.mark.slow
def test_async_emitter_survives_sigkill_and_restart_exactly_once(tmp_path: Path):
    data_dir, log = tmp_path / "data", tmp_path / "gunicorn.log"
    server = start_server(data_dir, log)
    port = int(server.url.rsplit(":", 1)[1])
    sessions = [new_id("akill") for _ in range(SESSIONS)]

    async def scenario() -> None:
        nonlocal server
        async with AsyncEventClient(server.url, timeout=2.0, backoff=0.05, max_backoff=0.5) as client, \
                AsyncBatchingEmitter(client, max_batch=50) as emitter:
            futures = [emitter.emit_nowait(sessions[i % SESSIONS], "message_delta", {"w": 0, "i": i})
                       for i in range(1000)]
            await asyncio.wait([futures[0]])
            await asyncio.to_thread(server.stop, signal.SIGKILL)
            server = await asyncio.to_thread(start_server, data_dir, log, port=port)
            futures += [emitter.emit_nowait(sessions[i % SESSIONS], "message_delta", {"w": 0, "i": i})
                        for i in range(1000, 1200)]
            await emitter.flush()
            assert all(future.exception() is None for future in futures)

    try:
        run(scenario())
        with EventClient(server.url) as reader:
            stored_once_in_order(reader, sessions, 1200)
    finally:
        server.stop()


def test_an_answer_with_another_count_of_envelopes_fails_every_emit_of_the_batch():
    from eventsvc.client.batches import settle_stored

    batch = [pending(n) for n in range(3)]
    settle_stored(batch, [{"seq": 1}, {"seq": 2}])
    assert all("2 envelopes for a batch of 3" in str(item.future.exception()) for item in batch)


# -- what an agent may do that the server refuses, or that the emitter must not choke on ---------------


def test_an_event_the_server_refuses_as_a_bad_request_fails_only_its_own_emit(client):
    """JSON the server refuses whole (a key repeated once encoded): halved until it stands alone."""
    session_id = new_id("poison")
    with BatchingEmitter(client, linger=0.3) as emitter:
        futures = [emitter.emit_nowait(session_id, "status", {"i": 0}),
                   emitter.emit_nowait(session_id, "status", {1: "a", "1": "b"}),  # {"1":"a","1":"b"}: 400
                   emitter.emit_nowait(session_id, "status", {"i": 2})]
        wait(futures, BOUND)
    assert isinstance(futures[1].exception(), BadRequest)
    assert [e["payload"]["i"] for e in client.session_events(session_id)] == [0, 2]


def test_an_invalid_event_fails_with_the_details_remote_emitter_gives_alone_or_in_a_batch(client):
    session_id = new_id("details")
    with pytest.raises(ValidationFailed) as alone:
        RemoteEmitter(client).emit(session_id, "run_started")  # run-scoped, no run_id
    with BatchingEmitter(client, linger=0.3) as emitter:
        lone = emitter.emit_nowait(session_id, "run_started")
        emitter.flush(BOUND)
        in_batch = [emitter.emit_nowait(session_id, "status"), emitter.emit_nowait(session_id, "run_started")]
    assert lone.exception().details == alone.value.details == in_batch[1].exception().details
    assert "run_id" in alone.value.details


def test_an_event_id_emitted_twice_in_one_window_is_a_resend_or_a_conflict_as_when_emitted_apart(client):
    session_id = new_id("twice")
    with BatchingEmitter(client, linger=0.3) as emitter:
        first = emitter.emit_nowait(session_id, "status", {"i": 0}, event_id="e-same")
        again = emitter.emit_nowait(session_id, "status", {"i": 0}, event_id="e-same")
        other = emitter.emit_nowait(session_id, "status", {"i": 1}, event_id="e-differs")
        clash = emitter.emit_nowait(session_id, "status", {"i": 2}, event_id="e-differs")
        wait([first, again, other, clash], BOUND)
    assert again.result() == first.result()  # an idempotent re-send: the stored envelope
    assert isinstance(clash.exception(), EventIdConflict)
    assert [e["event_id"] for e in client.session_events(session_id)] == ["e-same", "e-differs"]


def test_a_409_naming_a_run_fails_all_of_that_runs_events_in_one_answer(server, client):
    session_id, run_id, other = new_id("runs"), new_id("run"), new_id("other")
    client.append(other, {"type": "run_started", "run_id": run_id})
    relay = Relay(server.url)
    try:
        with EventClient(relay.url) as relayed, BatchingEmitter(relayed, linger=0.3) as emitter:
            futures = [emitter.emit_nowait(session_id, "tool_call", {"i": i}, run_id=run_id if i % 2 else None)
                       for i in range(200)]
            wait(futures, BOUND)
        posts = relay.requests("POST")
    finally:
        relay.close()
    assert all(isinstance(futures[i].exception(), RunSessionConflict) for i in range(1, 200, 2))
    assert [e["payload"]["i"] for e in client.session_events(session_id, limit=1000)] == list(range(0, 200, 2))
    assert len(posts) == 2  # the batch, refused; the rest, stored (halving would take ~200)


def test_blocking_calls_from_a_done_callback_refuse_and_close_there_does_not_deadlock(client):
    session_id = new_id("callback")
    emitter = BatchingEmitter(client, linger=0.05)
    seen: list[BaseException] = []

    def on_stored(_: Future) -> None:
        for blocking in (lambda: emitter.emit(session_id, "status"), lambda: emitter.flush()):
            try:
                blocking()
            except RuntimeError as exc:
                seen.append(exc)
        emitter.emit_nowait(session_id, "status", {"i": 1})  # queued: it does not wait
        emitter.close()  # closes; does not wait for the thread it runs on

    emitter.emit_nowait(session_id, "status", {"i": 0}).add_done_callback(on_stored)
    closing = threading.Thread(target=emitter.close)
    time.sleep(0.3)
    closing.start()
    closing.join(BOUND)
    assert not closing.is_alive()
    assert len(seen) == 2 and all("done-callback" in str(exc) for exc in seen)
    assert [e["payload"]["i"] for e in client.session_events(session_id)] == [0, 1]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["threads", "asyncio"])
def test_give_up_after_bounds_the_retries_of_a_server_that_never_answers(asynchronous):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the backlog), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        if asynchronous:
            async def scenario() -> BaseException | None:
                async with AsyncEventClient(url, timeout=0.5) as client:
                    async with AsyncBatchingEmitter(client, linger=0.0, give_up_after=1.0) as emitter:
                        future = emitter.emit_nowait("s", "status")
                        await asyncio.wait([future])
                        return future.exception()
            error = run(scenario())
        else:
            with EventClient(url, timeout=0.5) as client, \
                    BatchingEmitter(client, linger=0.0, give_up_after=1.0) as emitter:
                future = emitter.emit_nowait("s", "status")
                wait([future], BOUND)
                error = future.exception()
    assert isinstance(error, ConnectionFailed)
    # The client alone would try 6 times (0.5 s each, and its backoff): ~6 s. The budget is 1 s,
    # and its last attempt ends a timeout later.
    assert time.monotonic() - began < 4.0


def test_flush_says_whether_everything_was_resolved_in_time(client):
    session_id = new_id("flush")
    with BatchingEmitter(client, linger=30.0) as emitter:
        emitter.emit_nowait(session_id, "status")
        assert emitter.flush(BOUND) is True
        assert emitter.flush(0) is True  # nothing pending

    async def scenario() -> bool:
        async with AsyncEventClient(client.base_url) as async_client:
            async with AsyncBatchingEmitter(async_client, linger=30.0) as emitter:
                emitter.emit_nowait(session_id, "status")
                return await emitter.flush(BOUND)

    assert run(scenario()) is True
    assert len(list(client.session_events(session_id))) == 2


def test_an_async_close_cut_short_by_a_timeout_leaves_the_emitter_working(server):
    session_id = new_id("cut-close")

    async def scenario() -> None:
        async with AsyncEventClient(server.url) as client:
            emitter = AsyncBatchingEmitter(client, linger=0.2)
            futures = [emitter.emit_nowait(session_id, "status", {"i": i}) for i in range(3)]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(emitter.close(), 0.0001)
            await emitter.close()  # the dispatcher was not cancelled with the wait
            assert [future.result()["seq"] for future in futures] == [1, 2, 3]

    run(scenario())


def test_async_emitter_and_client_in_a_second_event_loop(server):
    session_id = new_id("loops")
    client = AsyncEventClient(server.url)
    emitter = AsyncBatchingEmitter(client, linger=30.0)

    async def first() -> None:
        await client.append(session_id, {"type": "status"})
        emitter.emit_nowait(session_id, "status")  # never closed: its loop ends with it pending

    async def second() -> None:
        await client.append(session_id, {"type": "status"})  # the client opens a pool for this loop
        with pytest.raises(RuntimeError, match="another event loop that ended without close"):
            emitter.emit_nowait(session_id, "status")
        await client.close()

    asyncio.run(first())
    asyncio.run(second())
