"""Figures 3 and 4: eventsvc over HTTP next to a minimal Flask app under the same gunicorn.

Both servers run with the `make run` configuration (eventsvc.gunicorn_conf: gthread,
EVENTSVC_WORKERS=2, the configured threads) on 127.0.0.1; the baseline is bench/minimal_app.py.
wrk drives 8 keep-alive connections from one thread for a bounded time per run; runs alternate
between the two servers and the median is reported.

3. POST one event (a run step, ~300 bytes stored) to one of 64 sessions, fsync on, vs the
   minimal app parsing the JSON body and answering 201.
4. GET /api/runs/{id}/events?limit=100 at random runs and offsets over 1,000,000 events (every
   page full: 100 events) vs the minimal app jsonify-ing 100 in-memory events.
Each figure also runs a second eventsvc with EVENTSVC_METRICS=0 in the same interleaving: rows
3m and 4m give the cost of the Prometheus metrics (metrics on / metrics off, target >= 0.95).
Run alone: ``python bench/bench_http.py``.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import loadgen  # noqa: E402
from common import Row, median, per_second  # noqa: E402

POST_SESSIONS = 64
READ_PATHS = 10_000
BASELINE_APP = "bench.minimal_app:app"
EVENTSVC_APP = "wsgi:app"
METRICS_OFF = {"EVENTSVC_METRICS": "0"}


def _lua_dir() -> Path:
    path = common.WORK / "lua"
    path.mkdir(parents=True, exist_ok=True)
    return path


def post_script() -> Path:
    step = common.input_event("RUN", 3)
    body = json.dumps(step, separators=(",", ":")).replace("%", "%%").replace('"RUN"', '"hr-%d"')
    path = _lua_dir() / "post_event.lua"
    path.write_text(f"""-- POST one event to a random one of {POST_SESSIONS} sessions (each session with its own run).
local body = '{body}'
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  local n = math.random(1, {POST_SESSIONS})
  return wrk.format("POST", "/api/sessions/hs-" .. n .. "/events", headers, string.format(body, n))
end
""")
    return path


def read_paths(scale: str = "1M") -> list[str]:
    return [f"/api/runs/{run_id}/events?since_seq={since}&limit=100"
            for _, run_id, since in common.read_pairs(scale, READ_PATHS, seed=11)]


def read_script(paths: list[str]) -> Path:
    path = _lua_dir() / "read_runs.lua"
    listed = ",\n".join(f'  "{p}"' for p in paths)
    path.write_text(f"""-- GET a page of a random run after a random offset (every page holds 100 events).
local paths = {{
{listed}
}}
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
""")
    return path


def _compare(wrk: str, servers: dict[str, loadgen.Server], script: Path,
             splits: dict[str, list[str]]) -> dict[str, list[loadgen.WrkResult]]:
    """Alternating wrk runs (in turn, the order reversed every other round); ``splits`` gets, per run,
    how the requests fell on the workers.

    gthread workers accept from one shared socket; eventsvc's worker balances wrk's 8 keep-alive
    connections over them, and the split is printed because a lopsided one moves both apps' figures.
    """
    for server in servers.values():
        loadgen.run_wrk(wrk, server.url, script, seconds=1)  # warm-up: imports, connections, caches
    results: dict[str, list[loadgen.WrkResult]] = {name: [] for name in servers}
    for repeat in range(common.HTTP_REPEATS):
        # ABBA: every server runs first as often as last, so an order effect falls on all alike.
        order = list(servers.items()) if repeat % 2 == 0 else list(reversed(servers.items()))
        for name, server in order:
            before = loadgen.requests_by_worker(server.log_path)
            results[name].append(loadgen.run_wrk(wrk, server.url, script, seconds=common.HTTP_SECONDS))
            after = loadgen.requests_by_worker(server.log_path)
            shares = sorted((after[pid] - before.get(pid, 0) for pid in after), reverse=True)
            total = sum(shares) or 1
            splits.setdefault(name, []).append("/".join(f"{100 * share // total}" for share in shares if share))
    return results


def _row(figure: str, results: dict[str, list[loadgen.WrkResult]], target: float, note: str,
         splits: dict[str, list[str]]) -> Row:
    ours = median(r.rps for r in results["eventsvc"])
    theirs = median(r.rps for r in results["baseline"])
    failures = {name: sum(r.non_2xx for r in runs) for name, runs in results.items()}
    errors = "; ".join(f"{name}: {runs[-1].socket_errors}" for name, runs in results.items() if runs[-1].socket_errors)
    valid = not any(failures.values())
    latency = "; ".join(f"{name} p50/p99 {runs[-1].latency_p50}/{runs[-1].latency_p99}"
                        for name, runs in results.items())
    runs = "; ".join(f"{name} " + "/".join(f"{r.rps:,.0f}" for r in rs) for name, rs in results.items())
    split = "; ".join(f"{name} " + ", ".join(shares) for name, shares in splits.items())
    note = f"{note}; runs (req/s): {runs}; {latency}; % of requests per worker in each run: {split}"
    if not valid:
        note += f"; NON-2xx ANSWERS: {failures} (the figure is not valid)"
    if errors:
        note += f"; {errors}"
    return Row(figure, per_second(ours), per_second(theirs), ours / theirs, f"≥ {target}",
               valid and ours / theirs >= target, note)


def _metrics_row(figure: str, results: dict[str, list[loadgen.WrkResult]],
                 splits: dict[str, list[str]]) -> Row:
    """The cost of the metrics: the same eventsvc with EVENTSVC_METRICS=0 as the baseline.

    A run whose connections fell (nearly) all on one worker moves its server's figure by more than
    the 5% this row resolves, so such runs are left out here, on either side (all kept if none is left).
    """
    kept = {name: [r for r, split in zip(results[name], splits[name]) if _balanced(split)]
            for name in ("eventsvc", "metrics off")}
    if not all(kept.values()):
        kept = {name: results[name] for name in kept}
    on, off = (median(r.rps for r in kept[name]) for name in ("eventsvc", "metrics off"))
    valid = not any(r.non_2xx for runs in results.values() for r in runs)
    runs = "; ".join(f"{name} " + "/".join(f"{r.rps:,.0f}" for r in rs) for name, rs in results.items()
                     if name != "baseline")
    left_out = {name: len(results[name]) - len(runs_kept) for name, runs_kept in kept.items()}
    return Row(figure, per_second(on), per_second(off), on / off, "≥ 0.95", valid and on / off >= 0.95,
               f"eventsvc with metrics on (the default) vs EVENTSVC_METRICS=0, interleaved runs (req/s): {runs}; "
               f"medians of the runs in which no worker served more than {_LOPSIDED}% of the requests "
               f"(left out: {left_out['eventsvc']} on, {left_out['metrics off']} off)")


_LOPSIDED = 80  # % of a run's requests on one worker


def _balanced(split: str) -> bool:
    """``split`` is _compare's "share/share" (%, largest first) of one run."""
    return bool(split) and int(split.split("/")[0]) <= _LOPSIDED


def figure_3(wrk: str) -> list[Row]:
    script = post_script()
    with common.scratch("http-append") as folder, \
            loadgen.serve(EVENTSVC_APP, folder / "data", folder / "eventsvc.log") as ours, \
            loadgen.serve(EVENTSVC_APP, folder / "data-off", folder / "eventsvc-off.log", settings=METRICS_OFF) as off, \
            loadgen.serve(BASELINE_APP, folder / "unused", folder / "baseline.log") as theirs:
        for server in (ours, off):
            status, stored = loadgen.http_json(server.url + "/api/sessions/hs-1/events",
                                               common.input_event("hr-1", 3))
            if status != 201 or stored["seq"] != 1:
                raise AssertionError(f"eventsvc answered {status} {stored}")
        splits: dict[str, list[str]] = {}
        results = _compare(wrk, {"eventsvc": ours, "metrics off": off, "baseline": theirs}, script, splits)
    return [_row("3 HTTP append, 1 event/POST, 8 conns (req/s)", results, 0.6,
                 f"fsync on, {POST_SESSIONS} sessions, gthread 2 workers x {loadgen.configured_threads()} threads; "
                 "baseline parses the body and answers 201", splits),
            _metrics_row("3m HTTP append: metrics on vs off (req/s)", results, splits)]


def figure_4(wrk: str, after: Callable[[loadgen.Server, str, Path, list[str]], list[Row]] | None = None) -> list[Row]:
    """Figure 4; ``after`` gets the eventsvc server once the figure is measured (for figure 7)."""
    data_dir = common.ensure_store("1M")
    paths = read_paths()
    script = read_script(paths)
    with common.scratch("http-read") as folder, \
            loadgen.serve(EVENTSVC_APP, data_dir, folder / "eventsvc.log") as ours, \
            loadgen.serve(EVENTSVC_APP, data_dir, folder / "eventsvc-off.log", settings=METRICS_OFF) as off, \
            loadgen.serve(BASELINE_APP, folder / "unused", folder / "baseline.log") as theirs:
        for path in paths[:20]:
            status, page = loadgen.http_json(ours.url + path)
            if status != 200 or len(page["events"]) != 100:
                raise AssertionError(f"{path}: {status}, {len(page.get('events', []))} events")
        splits: dict[str, list[str]] = {}
        results = _compare(wrk, {"eventsvc": ours, "metrics off": off, "baseline": theirs}, script, splits)
        rows = [_row("4 HTTP run page, limit=100, 1M events (req/s)", results, 1.0,
                     f"{READ_PATHS} random (run, since_seq) paths, every page 100 events; baseline jsonifies "
                     "100 in-memory events", splits),
                _metrics_row("4m HTTP run page: metrics on vs off (req/s)", results, splits)]
        if after is not None:
            rows += after(ours, wrk, script, [str(folder / "eventsvc.log")])
    return rows


def main() -> list[Row]:
    wrk = loadgen.find_wrk()
    if wrk is None:
        common.say(loadgen.WRK_HELP)
        return [common.skipped("3 HTTP append", "≥ 0.6", loadgen.WRK_HELP),
                common.skipped("3m HTTP append: metrics on vs off", "≥ 0.95", loadgen.WRK_HELP),
                common.skipped("4 HTTP run page", "≥ 1.0", loadgen.WRK_HELP),
                common.skipped("4m HTTP run page: metrics on vs off", "≥ 0.95", loadgen.WRK_HELP)]
    return [*figure_3(wrk), *figure_4(wrk)]


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print("   ", row.note)
