"""Figure 9: the batching emitters against one POST per event, over HTTP to `make run`'s gunicorn.

    .venv/bin/python bench/bench_clients.py [--seconds 2] [--window 8] [--sessions 4] [--repeats 3]

16 threads (and, for the async figure, 16 asyncio tasks), agents streaming single
``message_delta`` events into 4 sessions they share:
- ours: ``BatchingEmitter.emit_nowait`` (``AsyncBatchingEmitter.emit_nowait``), each writer
  keeping at most ``--window`` events unresolved (it waits for its oldest beyond that), as a
  token stream that does not wait for each chunk but bounds what it holds;
- the baseline: ``RemoteEmitter.emit`` (one POST per event, 16 threads), and for the async figure
  sequential ``await client.append(...)`` in each of 16 tasks.
Emit-to-stored latency is taken for every event: from the emit call until its future holds the
stored envelope. A session has one batch in flight (that is what keeps emit order), so an event
emitted just after its session's batch left waits for that POST and then its own: p99 is about
linger plus two batch POSTs, and the window trades throughput against it. Contenders alternate, ``REPEATS`` rounds each, medians reported; every event is
checked stored afterwards. The clients share the machine's 2 cores with the server.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import loadgen  # noqa: E402
from common import Row  # noqa: E402

from eventsvc.client import (AsyncBatchingEmitter, AsyncEventClient, BatchingEmitter, EventClient,  # noqa: E402
                             RemoteEmitter)

WRITERS = 16
SESSIONS = 4  # the writers share them, as agents' tasks share a chat session
REPEATS = 3
LINGER = 0.005
P99_TARGET = LINGER + 0.020


def payload(n: int) -> dict:
    return {"text": f"tok{n} ", "index": n}


class Tally:
    """Events and emit-to-stored latencies of one round, from any thread."""

    def __init__(self, sessions: int) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.sessions = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(sessions)]
        self.emitted = 0

    def add(self, latencies: list[float], emitted: int) -> None:
        with self.lock:
            self.latencies += latencies
            self.emitted += emitted


def threads_round(seconds: float, sessions: int, writer) -> tuple[float, Tally]:
    tally = Tally(sessions)
    deadline = time.perf_counter() + seconds
    threads = [threading.Thread(target=writer, args=(w, deadline, tally)) for w in range(WRITERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally.emitted / (time.perf_counter() - started), tally


def remote_round(url: str, seconds: float, sessions: int) -> tuple[float, Tally]:
    with EventClient(url) as client:
        emitter = RemoteEmitter(client, source="bench")

        def writer(w: int, deadline: float, tally: Tally) -> None:
            session_id, latencies, n = tally.sessions[w % len(tally.sessions)], [], 0
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                emitter.emit(session_id, "message_delta", payload(n))
                latencies.append(time.perf_counter() - began)
                n += 1
            tally.add(latencies, n)

        return threads_round(seconds, sessions, writer)


def batching_round(url: str, seconds: float, window: int, sessions: int) -> tuple[float, Tally]:
    with EventClient(url) as client, BatchingEmitter(client, source="bench", linger=LINGER) as emitter:
        def writer(w: int, deadline: float, tally: Tally) -> None:
            session_id, latencies, n = tally.sessions[w % len(tally.sessions)], [], 0
            outstanding: deque = deque()

            def stored(began: float):
                return lambda future: latencies.append(time.perf_counter() - began)

            while time.perf_counter() < deadline:
                if len(outstanding) >= window:
                    outstanding.popleft().result()
                began = time.perf_counter()
                future = emitter.emit_nowait(session_id, "message_delta", payload(n))
                future.add_done_callback(stored(began))
                outstanding.append(future)
                n += 1
            for future in outstanding:
                future.result()
            tally.add(latencies, n)

        return threads_round(seconds, sessions, writer)


async def _async_round(url: str, seconds: float, window: int | None, sessions: int) -> tuple[float, Tally]:
    tally = Tally(sessions)
    deadline = time.perf_counter() + seconds
    async with AsyncEventClient(url) as client:
        emitter = AsyncBatchingEmitter(client, source="bench", linger=LINGER) if window else None

        async def writer(w: int) -> None:
            session_id, latencies, n = tally.sessions[w % len(tally.sessions)], [], 0
            outstanding: deque = deque()
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                if emitter is None:
                    await client.append(session_id, {"type": "message_delta", "payload": payload(n)},
                                        default_source="bench")
                    latencies.append(time.perf_counter() - began)
                else:
                    if len(outstanding) >= window:
                        await outstanding.popleft()
                    future = emitter.emit_nowait(session_id, "message_delta", payload(n))
                    future.add_done_callback(lambda _, began=began: latencies.append(time.perf_counter() - began))
                    outstanding.append(future)
                n += 1
            if outstanding:
                await asyncio.gather(*outstanding)
            tally.add(latencies, n)

        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        if emitter is not None:
            await emitter.close()
        return tally.emitted / (time.perf_counter() - started), tally


def async_round(url: str, seconds: float, window: int | None, sessions: int) -> tuple[float, Tally]:
    return asyncio.run(_async_round(url, seconds, window, sessions))


def check_stored(url: str, tallies: list[Tally]) -> None:
    """Every emitted event is stored, once: the counts read back equal the counts emitted."""
    emitted = sum(tally.emitted for tally in tallies)
    with EventClient(url) as client:
        stored = sum(sum(1 for _ in client.session_events(session_id, limit=1000))
                     for tally in tallies for session_id in tally.sessions)
    if stored != emitted:
        raise RuntimeError(f"{emitted} events emitted but {stored} stored")


def figure(name: str, ours: list[tuple[float, Tally]], base: list[tuple[float, Tally]], note: str) -> Row:
    rate = common.median(rate for rate, _ in ours)
    base_rate = common.median(rate for rate, _ in base)
    p99 = common.median(common.percentile(tally.latencies, 0.99) for _, tally in ours)
    base_p99 = common.median(common.percentile(tally.latencies, 0.99) for _, tally in base)
    ratio = rate / base_rate
    runs = "/".join(f"{r:,.0f}" for r, _ in ours), "/".join(f"{r:,.0f}" for r, _ in base)
    return Row(name, f"{common.per_second(rate)}, p99 {p99 * 1000:.1f} ms",
               f"{common.per_second(base_rate)}, p99 {base_p99 * 1000:.1f} ms", ratio,
               f"≥ 5×; p99 ≤ {P99_TARGET * 1000:.0f} ms", ratio >= 5 and p99 <= P99_TARGET,
               f"{note}; runs (events/s): ours {runs[0]}, baseline {runs[1]}")


def main(seconds: float = 2.0, window: int = 8, sessions: int = SESSIONS) -> list[Row]:
    with common.scratch("clients") as data_dir, loadgen.serve("wsgi:app", data_dir, data_dir.parent / "clients.log") \
            as server:
        url = server.url
        sync_rounds = common.interleaved({"batching": lambda: batching_round(url, seconds, window, sessions),
                                          "remote": lambda: remote_round(url, seconds, sessions)}, REPEATS)
        async_rounds = common.interleaved({"batching": lambda: async_round(url, seconds, window, sessions),
                                           "sequential": lambda: async_round(url, seconds, None, sessions)}, REPEATS)
        check_stored(url, [tally for rounds in (*sync_rounds.values(), *async_rounds.values()) for _, tally in rounds])
    where = (f"{WRITERS} writers over {sessions} sessions, linger {LINGER * 1000:.0f} ms, at most {window} events "
             f"unresolved per writer, {seconds:g} s rounds, load average {os.getloadavg()[0]:.1f} on "
             f"{os.cpu_count()} cores")
    return [figure("9 BatchingEmitter vs RemoteEmitter, 16 threads (events/s)", sync_rounds["batching"],
                   sync_rounds["remote"], f"{where}; baseline: RemoteEmitter.emit, one POST per event"),
            figure("9 AsyncBatchingEmitter vs sequential awaits, 16 tasks (events/s)", async_rounds["batching"],
                   async_rounds["sequential"], f"{where}; baseline: await AsyncEventClient.append per event")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--window", type=int, default=8, help="events a writer may leave unresolved")
    parser.add_argument("--sessions", type=int, default=SESSIONS, help="sessions the 16 writers share")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    arguments = parser.parse_args()
    REPEATS = arguments.repeats
    for row in main(arguments.seconds, arguments.window, arguments.sessions):
        print(" | ".join(row.cells()))
        print("   " + row.note)
