"""The console: the HTML of a session page with 200 events, rendered in process (target ≤ 50 ms p50).

The baseline is the JSON read of the same 200 events through the same app, timed alternately in
the same run. Both go through Flask's test client, so neither pays for a socket. Run alone:
``python bench/bench_ui.py``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Row, percentile  # noqa: E402

from eventsvc import create_app  # noqa: E402

EVENTS = 200
RENDERS = 300
TARGET_MS = 50.0
SESSION = "ui-bench"


def _session_events() -> list[dict]:
    """Ten runs of a realistic mix: lifecycle, tool calls and results with payloads, policy, verify."""
    events = []
    for run in range(10):
        run_id = f"{SESSION}-run-{run}"
        events += common.run_events(run_id)[:EVENTS // 10]
    return events[:EVENTS]


def _timed(client, url: str, expect: bytes) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or expect not in response.data:
        raise AssertionError(f"{url}: {response.status_code}")
    return elapsed


def main() -> list[Row]:
    with common.scratch("ui") as data_dir:
        app = create_app({"DATA_DIR": str(data_dir), "FSYNC": "never"})
        client = app.test_client()
        stored = client.post(f"/api/sessions/{SESSION}/events", json=_session_events())
        if stored.status_code != 201 or len(stored.get_json()["events"]) != EVENTS:
            raise AssertionError(f"seeding failed: {stored.status_code}")
        page_url, json_url = f"/ui/sessions/{SESSION}", f"/api/sessions/{SESSION}/events?limit={EVENTS}"
        first = _timed(client, page_url, b'id="ev-200"')  # Jinja compiles the templates once
        pages, reads = [], []
        for _ in range(RENDERS):
            pages.append(_timed(client, page_url, b'id="ev-200"'))
            reads.append(_timed(client, json_url, b'"seq":200'))
        app.extensions["eventsvc.store"].close()
    page_p50, read_p50 = percentile(pages, 0.5), percentile(reads, 0.5)
    note = (f"HTML of /ui/sessions/<id> with {EVENTS} events and 10 runs, p50 of {RENDERS} renders in process "
            f"(p95 {percentile(pages, 0.95) * 1e3:.1f} ms; the first, which compiles the templates, "
            f"{first * 1e3:.1f} ms); baseline: the same {EVENTS} events as JSON from the API")
    return [Row("9 UI session page, 200 events", f"{page_p50 * 1e3:.1f} ms", f"{read_p50 * 1e3:.1f} ms",
                page_p50 / read_p50, f"≤ {TARGET_MS:.0f} ms", page_p50 * 1e3 <= TARGET_MS, note)]


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print(row.note)
