"""Rows 3m/4m, counted: instructions per request with the Prometheus metrics on and off.

Figures 3m and 4m compare throughput over HTTP, where a 5% difference is inside this machine's
run-to-run noise. This counts instead: the app is called as WSGI in process (no server, no
network), the request environments are built before counting starts, and callgrind counts only
the requests (the loop runs inside ``functools.reduce``, the one call it collects). The count is
the same however loaded the machine is. User-space instructions only; fsync is off, since its
cost is the kernel's and the same either way.

    .venv/bin/python bench/bench_metrics_cost.py          # prints the rows
"""
from __future__ import annotations

import functools
import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Row  # noqa: E402

REQUESTS = 300
WARM_UP = 100
PAGE_EVENTS = 400  # the run read: pages of 100 of a run this long
CASES = {  # row -> what each counted request is
    "3m HTTP append: instructions per request, metrics on vs off": "append",
    "4m HTTP run page: instructions per request, metrics on vs off": "run page",
}


def _environ(method: str, path: str, query: str = "", body: bytes = b"") -> dict:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "CONTENT_TYPE": "application/json" if body else "", "CONTENT_LENGTH": str(len(body)) if body else "",
            "HTTP_HOST": "127.0.0.1:8000"}


def _requests(case: str, count: int) -> list[dict]:
    if case == "append":
        body = json.dumps({"type": "message_delta", "payload": {"text": "a chunk of a streamed answer"}}).encode()
        return [_environ("POST", f"/api/sessions/chat-{n % 64}/events", body=body) for n in range(count)]
    return [_environ("GET", "/api/runs/run-1/events", f"since_seq={100 * (n % 3)}&limit=100") for n in range(count)]


def _counted(case: str, metrics: str, folder: str) -> None:
    """The child under callgrind: an app with metrics on or off, warmed up, then the counted loop."""
    from eventsvc import create_app

    app = create_app({"DATA_DIR": folder, "METRICS": metrics == "on", "FSYNC": "never"})
    if case == "run page":
        store = app.extensions["eventsvc.store"]
        store.append_many("chat-1", [{"type": "tool_call", "run_id": "run-1", "payload": {"n": n}}
                                     for n in range(PAGE_EVENTS)])

    def call(_: object, environ: dict) -> None:
        body = app(environ, lambda status, headers, exc_info=None: None)
        for _chunk in body:
            pass
        getattr(body, "close", lambda: None)()

    for environ in _requests(case, WARM_UP):
        call(None, environ)
    functools.reduce(call, _requests(case, REQUESTS), None)


def _values_dir(metrics: str, folder: str) -> dict[str, str]:
    """Where prometheus_client keeps values, as under gunicorn (multiprocess mode: memory-mapped files)."""
    path = Path(folder) / f"prometheus-{metrics}"
    path.mkdir()
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)}


def instructions(case: str) -> dict[str, float]:
    return common.callgrind_counts(__file__, {metrics: [case, metrics] for metrics in ("on", "off")}, REQUESTS,
                                   env=_values_dir)


def main() -> list[Row]:
    rows = []
    for figure, case in CASES.items():
        if common.callgrind_available() is None:
            rows.append(common.skipped(figure, "≤ 1.05", "valgrind is not installed, or BENCH_CALLGRIND=0"))
            continue
        counts = instructions(case)
        ratio = counts["on"] / counts["off"]
        rows.append(Row(figure, f"{counts['on']:,.0f}", f"{counts['off']:,.0f} (metrics off)", ratio, "≤ 1.05",
                        ratio <= 1.05,
                        f"callgrind's count of {REQUESTS} {case} requests through the WSGI app in process, "
                        f"after {WARM_UP} to warm up; prometheus_client in multiprocess mode as under gunicorn "
                        "(values in memory-mapped files); fsync off"))
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--count"]:
        _counted(*sys.argv[2:5])
    else:
        for row in main():
            print(" | ".join(row.cells()))
