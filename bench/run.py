"""`make bench`: every figure of the performance contract beside its baseline, in one table.

Prints the table and writes it to bench/RESULTS.md with the machine, the versions and the date.
Quick by default (cached stores, 5 s per wrk run, about 2 minutes for the table once the stores exist);
BENCH_FULL=1 adds the 10,000,000-event point and runs longer. Other bench/bench_*.py scripts
that are not part of this table (audit, streams) run afterwards through their own entry
points, and their output is appended to RESULTS.md as they print it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import loadgen  # noqa: E402
from common import Row  # noqa: E402

HEADER = ["figure", "eventsvc", "baseline", "ratio", "target", "met?"]
OTHER_SCRIPTS = ("bench_audit.py", "bench_streams.py")
OTHER_SECONDS = 600 if common.FULL else 240


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def _figure_order(row: Row) -> tuple[int, str]:
    """Figures by number (10 after 9), their lettered rows (3m) after them, unnumbered rows last."""
    number = re.match(r"\d*", row.figure).group()
    return (int(number) if number else 1000, row.figure.split()[0])


def guarded(name: str, section: Callable[[], list[Row]]) -> list[Row]:
    """A section that fails becomes a failed row; the others still run."""
    common.say(f"== {name}")
    started = time.monotonic()
    try:
        rows = section()
    except Exception as exc:  # a benchmark crash is a result to report, not a reason to stop
        traceback.print_exc()
        rows = [Row(name, "error", "—", None, "—", False, f"{type(exc).__name__}: {exc}")]
    common.say(f"   {time.monotonic() - started:.0f} s")
    for row in rows:
        common.say("   " + " | ".join(row.cells()))
    return rows


def other_scripts() -> list[tuple[str, str]]:
    """Run the other bench scripts that exist, each by its own entry point, bounded in time."""
    outputs = []
    for name in OTHER_SCRIPTS:
        path = common.BENCH_DIR / name
        if not path.exists():
            continue
        common.say(f"== {name} (its own script)")
        process = subprocess.Popen([sys.executable, str(path)], cwd=common.ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=OTHER_SECONDS)
            status = f"exit code {process.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                output, _ = process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                output, _ = process.communicate()
            status = f"stopped after {OTHER_SECONDS} s"
        print(output, end="" if output.endswith("\n") else "\n")
        outputs.append((f"{name} ({status})", output))
    return outputs


def main() -> int:
    started = time.monotonic()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "full (BENCH_FULL=1)" if common.FULL else "quick"
    host = common.machine()
    wrk = loadgen.find_wrk()
    if wrk is None:
        common.say(loadgen.WRK_HELP + "; the HTTP figures are skipped")
    for scale in ("10k", "1M", *(["10M"] if common.FULL else [])):
        common.ensure_store(scale)

    import bench_append
    import bench_clients
    import bench_http
    import bench_json
    import bench_memory
    import bench_metrics_cost
    import bench_query
    import bench_postgres
    import bench_postgres_scale
    import bench_recovery
    import bench_summaries
    import bench_ui

    rows: list[Row] = []
    rows += guarded("figures 1-2: appends in process", bench_append.main)
    if wrk:
        rows += guarded("figure 3: HTTP appends", lambda: bench_http.figure_3(wrk))
        rows += guarded("figures 4 and 7: HTTP run reads, worker memory",
                        lambda: bench_http.figure_4(wrk, after=bench_memory.worker_rows))
    else:
        rows += [common.skipped("3 HTTP append", "≥ 0.6", loadgen.WRK_HELP),
                 common.skipped("3m HTTP append: metrics on vs off", "≥ 0.95", loadgen.WRK_HELP),
                 common.skipped("4m HTTP run page: metrics on vs off", "≥ 0.95", loadgen.WRK_HELP),
                 common.skipped("4 HTTP run page", "≥ 1.0", loadgen.WRK_HELP),
                 common.skipped("7 memory: gunicorn worker", "≤ 1.0", loadgen.WRK_HELP)]
    rows += guarded("rows 3m and 4m, counted: the metrics' instructions per request", bench_metrics_cost.main)
    rows += guarded("figure 5: query scale and cold cache", bench_query.main)
    rows += guarded("figure 6: recovery", bench_recovery.main)
    rows += guarded("figure 7: audit CLI memory", lambda: [bench_memory.audit_row()])
    rows += guarded("figure 8: run and session summaries", bench_summaries.main)
    rows += guarded("figure 9: batching emitters", bench_clients.main)
    rows += guarded("strict JSON reads (issue 11, item 9)", bench_json.main)
    rows += guarded("figure 9: console session page", bench_ui.main)
    rows += guarded("figure 10: the PostgreSQL backend", bench_postgres.main)
    rows += guarded("figure 10: the PostgreSQL backend at scale and over HTTP", bench_postgres_scale.main)
    rows.sort(key=_figure_order)
    ours_seconds = time.monotonic() - started
    others = other_scripts()

    text = table(rows)
    print()
    print(text)
    print()
    for row in rows:
        if row.note:
            print(f"- {row.figure}: {row.note}")
    print(f"\n{mode} run, {ours_seconds:.0f} s for the table; written to bench/RESULTS.md")

    report = [
        "# Benchmark results", "",
        f"`make bench`, {mode} mode, {when}. Every ratio compares two things measured in the same run "
        "(medians of interleaved repeats); targets are those of the performance issue. "
        "Reproduce with `make bench` (`BENCH_FULL=1 make bench` adds the 10M-event point).", "",
        text, "",
        "## Notes", "",
        *[f"- **{row.figure}**: {row.note}" for row in rows if row.note], "",
        "## Machine", "",
        *[f"- {key}: {value}" for key, value in host.items()], "",
        "## Versions", "",
        "- " + ", ".join(f"{name} {version}" for name, version in common.versions(wrk).items()), "",
        f"The table took {ours_seconds:.0f} s (stores cached under bench/work/ are reused across runs).", "",
    ]
    for title, output in others:
        report += [f"## {title}", "", "```", output.rstrip(), "```", ""]
    (common.BENCH_DIR / "RESULTS.md").write_text("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
