"""Audit and reindex throughput next to a baseline that only reads and json.loads every line.

    .venv/bin/python bench/bench_audit.py              # 1,000,000 events (generated once, cached)
    .venv/bin/python bench/bench_audit.py --events 20000

The data folder is generated with the service's own EventStore (fsync off, 64 KiB segments, so
every session has several sealed segments) under bench/work/, which git ignores, and reused
while its ``.complete`` marker beside it is there (outside it: the audit reports any file the store
never writes). All three measurements read the same files in the same
run, after one warm-up read, so the page cache treats them alike, in interleaved rounds; the
best of each counts. CPU time is shown beside wall-clock time because it is the steadier of the
two on a shared machine. Targets (from the issue): audit within 3x of the baseline's time,
reindex within 4x.

Then peak memory (issue 12): ``eventsvc audit`` (and stats, export) on a folder whose one segment
is a single 200 MB line without a newline, beside the same commands on the ordinary data above;
each peak is the child's own ru_maxrss from wait4. A bounded reader keeps the two close.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventsvc.ops.audit import plan_audit, run_audit  # noqa: E402
from eventsvc.store import EventStore
from eventsvc.store.files import segments  # noqa: E402

WORK = ROOT / "bench" / "work"
EVENTS_PER_SESSION = 1000
SEGMENT_BYTES = 64 * 1024
TARGETS = {"audit": 3.0, "audit (CLI)": 3.0, "reindex": 4.0}


def session_events(rng: random.Random, session: int, count: int) -> list[dict]:
    """A plausible agent session: messages, and runs with tool calls and a verify gate."""
    events: list[dict] = []
    run = 0
    while len(events) < count - 20:
        run += 1
        run_id = f"s{session:05d}-r{run:04d}"
        events.append({"type": "user_message", "payload": {"text": "please look at this " * rng.randint(1, 6)}})
        events.append({"type": "run_created", "run_id": run_id})
        events.append({"type": "run_started", "run_id": run_id, "payload": {"phase": "langgraph"}})
        for _ in range(rng.randint(1, 5)):
            events.append({"type": "tool_call", "run_id": run_id,
                           "payload": {"name": "search", "args": {"q": "q" * rng.randint(5, 60)}}})
            events.append({"type": "tool_result", "run_id": run_id,
                           "payload": {"ok": True, "output": "o" * rng.randint(20, 240)}})
        if rng.random() < 0.2:
            events.append({"type": "run_waiting_input", "run_id": run_id, "payload": {"question": "which one?"}})
            events.append({"type": "run_resumed", "run_id": run_id, "payload": {"answer": "the first"}})
        events.append({"type": "verify_start", "run_id": run_id})
        events.append({"type": rng.choice(["verify_pass"] * 9 + ["verify_fail"]), "run_id": run_id})
        events.append({"type": "assistant_message", "run_id": run_id, "payload": {"text": "a" * rng.randint(20, 400)}})
        events.append({"type": rng.choice(["run_completed"] * 8 + ["run_failed", "run_cancelled"]), "run_id": run_id})
    while len(events) < count:
        events.append({"type": "message_delta", "payload": {"delta": "d" * rng.randint(1, 40)}})
    return events[:count]


def generate(data_dir: Path, events: int, batch: int) -> None:
    shutil.rmtree(data_dir, ignore_errors=True)
    sessions = max(1, events // EVENTS_PER_SESSION)
    rng = random.Random(20260206)
    store = EventStore(data_dir, fsync=False, segment_bytes=SEGMENT_BYTES)
    started = time.monotonic()
    try:
        for session in range(sessions):
            count = events // sessions + (1 if session < events % sessions else 0)
            planned = session_events(rng, session, count)
            for start in range(0, count, batch):
                store.append_many(f"bench-{session:05d}", planned[start:start + batch])
            if session % 100 == 99:
                print(f"  generated {session + 1}/{sessions} sessions", file=sys.stderr)
    finally:
        store.close()
    complete_marker(data_dir).write_text(json.dumps({"events": events, "batch": batch}))
    print(f"generated {events:,} events in {time.monotonic() - started:.1f}s", file=sys.stderr)


def segment_files(data_dir: Path) -> list[Path]:
    root = data_dir / segments.SEGMENTS_DIR
    return [root / session / segments.segment_name(base)
            for session in sorted(p.name for p in root.iterdir())
            for base in segments.list_bases(root / session)]


def baseline(files: list[Path]) -> int:
    """Read every line and json.loads it: the floor any reader of these files pays."""
    lines = 0
    for path in files:
        with open(path, "rb") as file:
            for line in file:
                json.loads(line)
                lines += 1
    return lines


def audit(data_dir: Path) -> int:
    summary = run_audit(plan_audit([data_dir]))
    if summary.count("error"):
        raise SystemExit(f"the bench data does not audit clean: {summary.as_dict()}")
    return summary.events


def audit_cli(data_dir: Path) -> int:
    script = Path(sys.executable).with_name("eventsvc")
    done = subprocess.run([str(script), "audit", str(data_dir), "--format", "json"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"eventsvc audit exited {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout)["summary"]["events"]


def reindex(data_dir: Path) -> int:
    store = EventStore(data_dir, fsync=False)
    try:
        return store.reindex().events
    finally:
        store.close()


def measure(work: Callable[[], int], *, child: bool = False) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, events) of one run; CPU of the child process for the CLI."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, wall = time.process_time(), time.perf_counter()
    events = work()
    wall = time.perf_counter() - wall
    if child:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    else:
        cpu = time.process_time() - cpu
    return wall, cpu, events


def complete_marker(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".complete")


def long_line_folder(megabytes: int) -> Path:
    """A data folder whose one session holds one line of ``megabytes`` MB and no newline (cached)."""
    data_dir = WORK / f"long-line-{megabytes}mb"
    if not complete_marker(data_dir).exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        session = data_dir / segments.SEGMENTS_DIR / "s1"
        session.mkdir(parents=True)
        block = b"x" * 1_000_000
        with open(session / segments.segment_name(1), "wb") as file:
            file.write(b'{"payload":"')
            for _ in range(megabytes):
                file.write(block)
        complete_marker(data_dir).write_text("")
    return data_dir


def peak_mib(*args: str) -> tuple[float, float, int]:
    """(peak RSS in MiB, wall seconds, exit code) of ``eventsvc ARGS``, from the child's own rusage."""
    script = Path(sys.executable).with_name("eventsvc")
    started = time.perf_counter()
    child = subprocess.Popen([str(script), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - started, child.returncode


def memory_rows(ordinary: Path, megabytes: int) -> None:
    """Peak memory of audit, stats and export on ordinary data and on one long line, side by side."""
    long_line = long_line_folder(megabytes)
    first_session = sorted(p.name for p in (ordinary / segments.SEGMENTS_DIR).iterdir())[0]
    print(f"\npeak memory (MiB, the child's ru_maxrss): ordinary = the data above, "
          f"long line = one {megabytes} MB line without a newline")
    print(f"{'':10}{'ordinary':>10}{'long line':>11}{'long line s':>13}  exit (long line)")
    for command in ("audit", "stats", "export"):
        def args(folder: Path, session: str) -> list[str]:
            if command == "audit":
                return ["audit", str(folder)]
            return [command, "--data-dir", str(folder), *(("--session", session) if command == "export" else ())]
        ordinary_peak, _, _ = peak_mib(*args(ordinary, first_session))
        long_peak, seconds, code = peak_mib(*args(long_line, "s1"))
        print(f"{command:10}{ordinary_peak:10.0f}{long_peak:11.0f}{seconds:13.2f}  {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the data folder")
    parser.add_argument("--batch", type=int, default=250, help="events per append_many (at most 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all measurements; the best counts")
    parser.add_argument("--long-line-mb", type=int, default=200, help="the long line's size for the memory figures")
    args = parser.parse_args()

    data_dir = WORK / f"data-{args.events}"
    if not complete_marker(data_dir).exists():
        generate(data_dir, args.events, args.batch)
    files = segment_files(data_dir)
    size = sum(path.stat().st_size for path in files)
    baseline(files)  # warm-up: the page cache holds the files for every measurement alike

    runs: dict[str, tuple[Callable[[], int], bool]] = {
        "baseline (json.loads)": (lambda: baseline(files), False),
        "audit": (lambda: audit(data_dir), False),
        "audit (CLI)": (lambda: audit_cli(data_dir), True),
        "reindex": (lambda: reindex(data_dir), False),
    }
    best: dict[str, tuple[float, float, int]] = {}
    for _ in range(args.repeat):  # interleaved rounds: a noisy neighbour slows every row alike
        for name, (work, child) in runs.items():
            wall, cpu, events = measure(work, child=child)
            previous = best.get(name, (float("inf"), float("inf"), 0))
            best[name] = (min(wall, previous[0]), min(cpu, previous[1]), events)
    base_wall, base_cpu, base_events = best["baseline (json.loads)"]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"data: {base_events:,} events, {len(files):,} segments, {size / 1e6:.1f} MB in {data_dir}")
    print(f"best of {args.repeat} interleaved rounds; throughput by wall-clock time; "
          f"peak RSS of the audit CLI {peak:.0f} MiB")
    print(f"{'':22}{'wall s':>8}{'cpu s':>8}{'events/s':>11}{'MB/s':>7}{'x base':>8}{'x base cpu':>11}  target")
    for name, (wall, cpu, events) in best.items():
        target = TARGETS.get(name)
        ratio, cpu_ratio = wall / base_wall, cpu / base_cpu
        verdict = "" if target is None else f"<= {target:.1f}x {'ok' if ratio <= target else 'MISSED'}"
        print(f"{name:22}{wall:8.2f}{cpu:8.2f}{events / wall:11,.0f}{size / 1e6 / wall:7.1f}{ratio:8.2f}"
              f"{cpu_ratio:11.2f}  {verdict}")
    memory_rows(data_dir, args.long_line_mb)


if __name__ == "__main__":
    main()
