"""Reading a request body strictly (depth limit, no NaN, no repeated keys) against plain ``json.loads``.

The depth check used to walk every byte in Python: a 32 MiB body held the interpreter lock for
about a second, stalling every thread of its worker. Target: ``loads_strict`` at most 2x
``json.loads`` of the same bytes (CPU time, interleaved repeats, median).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Row  # noqa: E402

from eventsvc.jsoncodec import loads_strict  # noqa: E402

TARGET = 2.0


def batch_body(size: int) -> bytes:
    """A body of agent events (streamed deltas, tool calls with nested arguments) of about ``size`` bytes."""
    events = [{"type": "message_delta", "run_id": "run-1", "payload": {"delta": "token " * 8, "index": n}}
              if n % 2 else
              {"type": "tool_call", "run_id": "run-1",
               "payload": {"name": "search", "args": {"query": "q[1]", "filters": [{"k": "v", "n": [1, 2.5]}]}}}
              for n in range(1000)]
    one = json.dumps(events).encode()
    return json.dumps(events * max(1, size // len(one))).encode()


def cpu_seconds(call) -> float:
    started = time.process_time()
    call()
    return time.process_time() - started


def measure(size: int, repeats: int) -> tuple[float, float]:
    body = batch_body(size)
    rounds = common.interleaved({"strict": lambda: cpu_seconds(lambda: loads_strict(body)),
                                 "json.loads": lambda: cpu_seconds(lambda: json.loads(body))}, repeats=repeats)
    return common.median(rounds["strict"]), common.median(rounds["json.loads"])


def main() -> list[Row]:
    small, small_base = measure(275 * 1024, 25)
    ours, base = measure(32 * 1024 * 1024, 5)
    return [Row("J strict JSON read of a 32 MiB body", f"{ours * 1000:,.0f} ms", f"{base * 1000:,.0f} ms (json.loads)",
                ours / base, f"≤ {TARGET:g}x", ours / base <= TARGET,
                "CPU time of loads_strict (UTF-8 check, depth limit, strict parse: no NaN, no repeated key) against "
                f"json.loads of the same bytes; a 275 KiB batch: {small * 1000:.1f} ms against "
                f"{small_base * 1000:.1f} ms ({small / small_base:.2f}x; the repeated-key check is most of it)")]


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
