"""The console: the HTML of a session page with 200 events, rendered in process (target ≤ 50 ms p50).

The baseline is the JSON read of the same 200 events through the same app, timed alternately in
the same run. Both go through Flask's test client, so neither pays for a socket. A second figure
is the page filtered to a rare type (200 matches spread over 20,000 events, so the page reads
past more than one filter window), beside the unfiltered page of the same session. Run alone:
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
LONG_SESSION, LONG_EVENTS, RARE_EVERY = "ui-bench-long", 20_000, 100  # 200 ``error`` events in all


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
                page_p50 / read_p50, f"≤ {TARGET_MS:.0f} ms", page_p50 * 1e3 <= TARGET_MS, note),
            _filtered_row()]


def _filtered_row() -> Row:
    """The page filtered to a rare type, timed alternately with the unfiltered page of the same session."""
    with common.scratch("ui-filtered") as data_dir:
        app = create_app({"DATA_DIR": str(data_dir), "FSYNC": "never"})
        client = app.test_client()
        events = [{"type": "error" if n % RARE_EVERY == 0 else "state_update", "payload": {"n": n}}
                  for n in range(LONG_EVENTS)]
        for start in range(0, LONG_EVENTS, 1000):
            stored = client.post(f"/api/sessions/{LONG_SESSION}/events", json=events[start:start + 1000])
            if stored.status_code != 201:
                raise AssertionError(f"seeding failed: {stored.status_code}")
        filtered_url, page_url = f"/ui/sessions/{LONG_SESSION}?types=error", f"/ui/sessions/{LONG_SESSION}"
        last_match = f'id="ev-{LONG_EVENTS - RARE_EVERY + 1}"'.encode()
        _timed(client, filtered_url, last_match)
        filtered, pages = [], []
        for _ in range(RENDERS // 3):
            filtered.append(_timed(client, filtered_url, last_match))
            pages.append(_timed(client, page_url, b'id="ev-200"'))
        app.extensions["eventsvc.store"].close()
    filtered_p50, page_p50 = percentile(filtered, 0.5), percentile(pages, 0.5)
    note = (f"HTML of /ui/sessions/<id>?types=error: the {LONG_EVENTS // RARE_EVERY} matches of {LONG_EVENTS} "
            f"events on one page, p50 of {RENDERS // 3} renders (p95 {percentile(filtered, 0.95) * 1e3:.1f} ms); "
            f"baseline: the unfiltered first page of the same session")
    return Row("9b UI session page filtered to a rare type", f"{filtered_p50 * 1e3:.1f} ms",
               f"{page_p50 * 1e3:.1f} ms", filtered_p50 / page_p50, f"≤ {TARGET_MS:.0f} ms",
               filtered_p50 * 1e3 <= TARGET_MS, note)


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print(row.note)
