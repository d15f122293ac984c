"""What every bench shares: the events, the cached stores, timing, gunicorn on loopback, wrk.

Benchmarks are scripts, not tests: each prints its figure next to a baseline measured in the
same run. Big stores are generated once under ``bench/work/`` (git-ignored) and reused.
"""
from __future__ import annotations

import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
WORK = BENCH_DIR / "work"
FULL = os.environ.get("BENCH_FULL", "") not in ("", "0")
REPEATS = 3  # every figure is measured this many times, interleaved with its baseline; medians reported
# Five runs each keep the median clear of two bad ones (wrk's 8 keep-alive connections used to
# fall on the two workers by chance, now and then all on one; the workers now balance them).
HTTP_REPEATS = 5
HTTP_SECONDS = 15 if FULL else 5  # one wrk run
LOOP_ROUNDS = 6  # in-process throughput: short rounds, alternating, so a noisy neighbour hits all alike
LOOP_SECONDS = 1.0 if FULL else 0.5  # one in-process round

RUNS_PER_SESSION = 10
EVENTS_PER_RUN = 100
EVENTS_PER_SESSION = RUNS_PER_SESSION * EVENTS_PER_RUN
SCALES = {"10k": 10, "1M": 1_000, "10M": 10_000}  # name -> sessions of 1,000 events
# As many sessions as the 1M store, and its last WIDE_FULL_SESSIONS as large as the 1M store's,
# the others of 10 events (one run, cut short): a store that differs from the 1M one in its
# size only, for figures that should not depend on it (recovery damages those last sessions).
WIDE_SCALE, WIDE_EVENTS_PER_SESSION, WIDE_FULL_SESSIONS = "wide", 10, 10


# -- results -------------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the results table."""

    figure: str
    eventsvc: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None  # None: not measured (skipped)
    note: str = ""

    def cells(self) -> list[str]:
        met = "skipped" if self.met is None else ("yes" if self.met else "**no**")
        ratio = "—" if self.ratio is None else f"{self.ratio:.2f}"
        return [self.figure, self.eventsvc, self.baseline, ratio, self.target, met]


def skipped(figure: str, target: str, why: str) -> Row:
    return Row(figure, "—", "—", None, target, None, why)


def per_second(value: float) -> str:
    return f"{value:,.0f}/s"


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def callgrind_available() -> str | None:
    """valgrind's path, unless it is missing or BENCH_CALLGRIND=0 asks to skip the counted rows."""
    return None if os.environ.get("BENCH_CALLGRIND", "") == "0" else shutil.which("valgrind")


def callgrind_counts(script: str, cases: dict[str, list[str]], divisor: int,
                     env: Callable[[str, str], dict[str, str]] | None = None) -> dict[str, float]:
    """Instructions per unit for each case: ``script --count *args`` in its own process under callgrind,
    which collects only inside ``functools.reduce`` (the script runs its measured loop there), divided
    by ``divisor``. ``env(case, folder)`` gives a case's environment; ``folder`` is a scratch folder
    for both the case and its output, and the case's last argument is a data folder inside it."""
    valgrind = shutil.which("valgrind")
    assert valgrind is not None
    with tempfile.TemporaryDirectory(prefix="eventsvc-callgrind-") as folder:
        processes = {name: subprocess.Popen(
            [valgrind, "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
             f"--callgrind-out-file={folder}/{name}.out", sys.executable, script, "--count", *args,
             f"{folder}/data-{name}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env(name, folder) if env else None)
            for name, args in cases.items()}
        counts = {}
        for name, process in processes.items():
            _, errors = process.communicate(timeout=1800)
            found = re.search(r"Collected : (\d+)", errors)
            if process.returncode != 0 or found is None:
                raise RuntimeError(f"callgrind ({name}) failed: {errors[-800:]}")
            counts[name] = int(found.group(1)) / divisor
    return counts


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rate_for(seconds: float, operation: Callable[[], int]) -> float:
    """Call ``operation`` (which returns how many events it handled) for ``seconds``; events/s."""
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        count += operation()
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def interleaved(contenders: dict[str, Callable[[], float]], repeats: int = LOOP_ROUNDS) -> dict[str, list[float]]:
    """Run each contender ``repeats`` times, alternating, so drift and neighbours hit all alike."""
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, measure in contenders.items():
            results[name].append(measure())
    return results


@contextmanager
def scratch(name: str) -> Iterator[Path]:
    """An empty folder under bench/work/, removed afterwards."""
    path = WORK / "tmp" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- events --------------------------------------------------------------------------------------

_TEXT = "The tool returned three candidate files; the second matches the failing test's import path."


def input_event(run_id: str | None, n: int, *, last: bool = False) -> dict:
    """The n-th (0-based) event of a run as a caller sends it; its stored line is ~300 bytes."""
    if n == 0:
        return {"type": "run_created", "run_id": run_id, "payload": {"agent": "planner", "model": "large-2026-01"}}
    if n == 1:
        return {"type": "run_started", "run_id": run_id, "payload": {"phase": "langgraph", "attempt": 1}}
    if last:
        return {"type": "run_completed", "run_id": run_id, "payload": {"tokens": 18_442, "steps": n}}
    kind = n % 3
    if kind == 0:
        return {"type": "tool_call", "run_id": run_id,
                "payload": {"tool": "search_code", "call_id": f"call-{n}", "args": {"query": "def test_append"}}}
    if kind == 1:
        return {"type": "tool_result", "run_id": run_id,
                "payload": {"call_id": f"call-{n - 1}", "ok": True, "output": _TEXT[:60]}}
    return {"type": "assistant_message", "run_id": run_id, "payload": {"text": _TEXT}}


def run_events(run_id: str, *, running: bool = False) -> list[dict]:
    """One run: created, started, 97 steps, completed (100 events); ``running``: 98 steps, not completed."""
    return [input_event(run_id, n, last=n == EVENTS_PER_RUN - 1 and not running) for n in range(EVENTS_PER_RUN)]


def stored_envelope(event: dict, session_id: str, seq: int, *, source: str = "bench") -> dict:
    """The 8-key envelope the store keeps for ``event`` (key order as in the log)."""
    return {"type": event["type"], "timestamp": "2026-11-30T10:00:00.123456Z", "session_id": session_id,
            "run_id": event.get("run_id"), "seq": seq, "source": source,
            "event_id": event.get("event_id") or str(uuid.uuid4()), "payload": event.get("payload", {})}


def line_of(envelope: dict) -> bytes:
    return (json.dumps(envelope, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def session_name(number: int) -> str:
    return f"s-{number:06d}"


def run_name(session_number: int, run: int) -> str:
    return f"r-{session_number:06d}-{run:02d}"


# -- cached stores -------------------------------------------------------------------------------

def store_path(scale: str) -> Path:
    return WORK / f"store-{scale}"


def _marker(scale: str) -> Path:
    return WORK / f"store-{scale}.json"


def _store_format() -> dict:
    from eventsvc.store.files import index

    return {"schema": index.SCHEMA_VERSION, "sessions": SCALES, "events_per_session": EVENTS_PER_SESSION,
            "generator": 2}


def ensure_store(scale: str) -> Path:
    """The store of ``scale`` (1,000 events per session, 10 runs of 100; or WIDE_SCALE), built once and reused."""
    path, marker = store_path(scale), _marker(scale)
    wanted = {**_store_format(), "scale": scale}
    if scale == WIDE_SCALE:
        wanted.update(events_per_session=WIDE_EVENTS_PER_SESSION, full_sessions=WIDE_FULL_SESSIONS)
    if marker.exists() and path.is_dir():
        try:
            if json.loads(marker.read_text()) == wanted:
                return path
        except ValueError:
            pass
    from eventsvc import EventStore

    sessions = SCALES["1M"] if scale == WIDE_SCALE else SCALES[scale]
    say(f"building the {scale} store in {path} ({sessions} sessions, fsync off; once, then reused)")
    marker.unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)
    started = time.monotonic()
    store = EventStore(path, fsync=False)
    try:
        for number in range(1, sessions + 1):
            small = scale == WIDE_SCALE and number <= sessions - WIDE_FULL_SESSIONS
            # Each session's last run is still running: a tenth of the runs, for the run listings.
            events = [event for run in range(1, RUNS_PER_SESSION + 1)
                      for event in run_events(run_name(number, run), running=run == RUNS_PER_SESSION)
                      ][:WIDE_EVENTS_PER_SESSION if small else None]
            store.append_many(session_name(number), events, default_source="bench")
            if number % 500 == 0:
                say(f"  {number:,} sessions, {time.monotonic() - started:.0f} s")
    finally:
        store.close()
    os.sync()
    marker.write_text(json.dumps(wanted))
    say(f"  built in {time.monotonic() - started:.0f} s")
    return path


def read_pairs(scale: str, count: int, seed: int = 5) -> list[tuple[str, str, int]]:
    """Random (session, run, since_seq) reads; since_seq falls anywhere before the run, so pages are full."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        number = rng.randint(1, SCALES[scale])
        run = rng.randint(1, RUNS_PER_SESSION)
        first_seq = (run - 1) * EVENTS_PER_RUN + 1
        pairs.append((session_name(number), run_name(number, run), rng.randint(0, first_seq - 1)))
    return pairs


def store_files(data_dir: Path) -> list[Path]:
    files = [p for p in (data_dir / "segments").rglob("*.jsonl")]
    return files + [p for p in data_dir.glob("index.sqlite3*") if not p.name.endswith("-shm")]


def evict(paths: Iterable[Path]) -> None:
    """Drop the files' pages from the OS page cache (call os.sync() first so none are dirty)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: Iterable[Path]) -> None:
    """Read the files once so that they are in the OS page cache."""
    for path in paths:
        with open(path, "rb", buffering=0) as file:
            while file.read(1 << 22):
                pass


# -- the machine ---------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    WORK.mkdir(parents=True, exist_ok=True)
    disk = "unknown"
    try:
        out = subprocess.run(["df", "-PT", str(WORK)], capture_output=True, text=True, timeout=10).stdout
        device, fs = out.splitlines()[1].split()[:2]
        disk = f"{fs} on {device}"
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"CPU": f"{cpu}, {os.cpu_count()} cores", "memory": memory, "disk (bench/work)": disk,
            "OS": f"{platform.system()} {platform.release()}", "load average at start": load}


def versions(wrk: str | None) -> dict[str, str]:
    import sqlite3
    from importlib import metadata

    found = {"Python": platform.python_version(), "SQLite": sqlite3.sqlite_version}
    for package in ("eventsvc", "flask", "werkzeug", "marshmallow", "peewee", "gunicorn", "eventsourcing"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
        found["wrk"] = ((out.stdout or out.stderr).split() or ["?", "?"])[1]
    else:
        found["wrk"] = "not installed"
    return found


# Loopback servers and wrk live in loadgen.py (self-contained); re-exported for scripts that use them from here.
from loadgen import Server, serve  # noqa: E402,F401
