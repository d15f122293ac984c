"""Append latency with and without open SSE watchers, and the delay from an append's 201 to its delivery.

    .venv/bin/python bench/bench_streams.py [--url URL] [--watchers 200] [--appends 200] [--interval 0.025]

Without --url it starts gunicorn with the `make run` configuration (2 workers, gthread, default
threads) on a free loopback port and a scratch data folder, through the benches' launcher
(bench/common.py). One writer appends one event at a time over a keep-alive connection, paced
every --interval seconds; watchers follow the session's stream. Each phase uses a fresh session.
A watcher on the worker that took the append is woken at once; one on the other worker learns
of it from that worker's poll of SQLite's data_version (every 50 ms), so the one-watcher
delivery figure depends on which worker the watcher landed on. The figures include this
client's own scheduling on the same machine as the server: the watchers are threads of this
process, so on a 2-core box the delivery figures are an upper bound.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BOUND = 60.0
START_BOUND = APPEND_BOUND = 15.0


@dataclass
class Phase:
    watchers: int
    started: int = 0
    append_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    missing: int = 0
    failure: str | None = None


def watch(url: str, until_seq: int, received: dict[int, float], started: threading.Semaphore) -> None:
    """Follow the stream to ``until_seq``, noting when each seq arrives (parsed by hand, as on the wire)."""
    try:
        _watch(url, until_seq, received, started)
    except requests.RequestException:
        pass  # counted as missing deliveries


def _watch(url: str, until_seq: int, received: dict[int, float], started: threading.Semaphore) -> None:
    with requests.get(url, params={"since_seq": 1, "until_seq": until_seq}, stream=True,
                      headers={"Accept": "text/event-stream"}, timeout=(10, BOUND)) as response:
        buffer = b""
        for chunk in response.iter_content(chunk_size=None):
            now = time.perf_counter()
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                if block.startswith(b"retry:"):
                    received[0] = now  # seq 0: the stream is open
                    started.release()
                elif block.startswith(b"id: "):
                    received[int(block[4:block.index(b"\n")])] = now
                elif block.startswith(b"event: end"):
                    return


def run_phase(base_url: str, watchers: int, appends: int, interval: float) -> Phase:
    phase = Phase(watchers)
    session_id = f"bench-{uuid.uuid4().hex[:12]}"
    events_url = f"{base_url}/api/sessions/{session_id}/events"
    requests.post(events_url, json={"type": "session_created"}, timeout=BOUND).raise_for_status()
    until_seq = 1 + appends
    started = threading.Semaphore(0)
    receipts: list[dict[int, float]] = [{} for _ in range(watchers)]
    threads = [threading.Thread(target=watch, args=(f"{events_url}/stream", until_seq, receipts[i], started),
                                daemon=True) for i in range(watchers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + START_BOUND
    while phase.started < watchers and started.acquire(timeout=max(0.0, deadline - time.monotonic())):
        phase.started += 1
    if phase.started < watchers:
        phase.failure = f"only {phase.started} of {watchers} streams started within {START_BOUND:.0f}s"
    # Only watchers already open when the appends begin measure live delivery (not a history replay).
    live = [receipt for receipt in receipts if 0 in receipt]
    acknowledged: dict[int, float] = {}
    with requests.Session() as writer:
        next_at = time.perf_counter()
        for i in range(appends):
            sent = time.perf_counter()
            try:
                response = writer.post(events_url, json={"type": "message_delta", "payload": {"i": i}},
                                       timeout=APPEND_BOUND)
            except requests.Timeout:
                phase.failure = (f"{phase.failure + '; ' if phase.failure else ''}append {i + 1} got no answer "
                                 f"within {APPEND_BOUND:.0f}s with {phase.started} streams open")
                return phase
            done = time.perf_counter()
            response.raise_for_status()
            phase.append_ms.append((done - sent) * 1000)
            acknowledged[response.json()["seq"]] = done
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
    for thread in threads:
        thread.join(BOUND)
    for receipt in live:
        for seq, acked in acknowledged.items():
            if seq in receipt:
                phase.delivery_ms.append((receipt[seq] - acked) * 1000)
            else:
                phase.missing += 1
    return phase


def report(phases: list[Phase]) -> bool:
    """Print the figures as a Markdown table, the no-watcher (and one-watcher) baseline beside them."""
    def cell(samples: list[float], pct: int) -> str:
        return f"{common.percentile(samples, pct / 100):.1f} ms" if samples else "—"

    names = ["no watchers (baseline)", "1 watcher (delivery baseline)"] + [f"{p.watchers} watchers"
                                                                          for p in phases[2:]]
    print("| figure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(phases))
    rows = [("append latency p50", "append_ms", 50), ("append latency p99", "append_ms", 99),
            ("append 201 → delivery on a stream, p50", "delivery_ms", 50),
            ("append 201 → delivery on a stream, p99", "delivery_ms", 99)]
    for label, attribute, pct in rows:
        print(f"| {label} | " + " | ".join(cell(getattr(p, attribute), pct) for p in phases) + " |")
    print("| appends / deliveries measured | " + " | ".join(f"{len(p.append_ms)} / {len(p.delivery_ms)}"
                                                        for p in phases) + " |")
    print()
    if phases[0].append_ms and phases[-1].append_ms:
        print(f"- append p50 with {phases[-1].watchers} watchers is "
              f"{statistics.median(phases[-1].append_ms) / statistics.median(phases[0].append_ms):.1f}x "
              "the no-watcher baseline.")
    print("- A delivery can come before the writer has read its 201 (negative delay); watchers run as "
          "threads of the benchmark process on the same cores as the server, so delivery figures are an upper bound.")
    failed = False
    for p in phases:
        if p.failure or p.missing:
            failed = True
            print(f"- **FAILED with {p.watchers} watchers**: {p.failure or 'all streams started'}; "
                  f"{p.missing} deliveries missing.")
    return not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one with the make-run configuration)")
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.025, help="seconds between appends")
    args = parser.parse_args()
    watcher_counts = (0, 1, args.watchers)
    if args.url is not None:
        phases = [run_phase(args.url, watchers, args.appends, args.interval) for watchers in watcher_counts]
    else:
        with common.scratch("streams") as root, \
                common.serve("wsgi:app", root / "data", root / "gunicorn.log") as server:
            common.say(f"gunicorn (make-run configuration) on {server.url}")
            phases = [run_phase(server.url, watchers, args.appends, args.interval) for watchers in watcher_counts]
    return 0 if report(phases) else 1


if __name__ == "__main__":
    sys.exit(main())
