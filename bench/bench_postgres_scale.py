"""Figure 10, continued: the PostgreSQL backend at scale and over HTTP, beside the same baselines as 3-5.

- run page: ``get_events_by_run(limit=100)`` p50 on 1,000,000 events against 10,000 (same random
  (run, since_seq) pairs as figure 5; target: within 1.3x);
- HTTP append (as figure 3) and HTTP run page over 1M events (as figure 4), gunicorn with
  EVENTSVC_DATABASE_URL, against the same minimal Flask app under the same gunicorn.

The 10k and 1M databases are copied once from the cached files stores with ``eventsvc copy``'s
code (so they hold byte-identical lines) and kept as ``eventsvc_bench_10k``/``_1m`` on the
bench server for later runs; the HTTP-append database is throwaway.
"""
from __future__ import annotations

import os
import secrets
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_http  # noqa: E402
import common  # noqa: E402
import loadgen  # noqa: E402
from bench_postgres import ADMIN_URL, _database_url  # noqa: E402
from common import Row, median, micros, percentile  # noqa: E402

READS = 2000
BUFFER_SAMPLES = 200
FORMAT = "copied-from-files-v1"


def _admin():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


def ensure_database(scale: str) -> str:
    """The bench database of ``scale``, copied from the cached files store once and reused."""
    import psycopg

    from eventsvc.ops.copy import copy_store
    from eventsvc.store import open_store
    from eventsvc.store.postgres import upgrade

    name = f"eventsvc_bench_{scale.lower()}"
    url = _database_url(name)
    with _admin() as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        with psycopg.connect(url) as conn:
            found = conn.execute("SELECT to_regclass('bench_marker') IS NOT NULL").fetchone()[0] and \
                conn.execute("SELECT format FROM bench_marker").fetchone()
        if found and found[0] == f"{FORMAT}:{common.SCALES[scale]}":
            upgrade(url)  # a database kept from an older eventsvc is migrated, as a deployment would be
            return url
        with _admin() as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    with _admin() as admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    upgrade(url)
    common.say(f"copying the {scale} files store into PostgreSQL database {name} (once, then reused)")
    started = time.monotonic()
    source, target = open_store(common.ensure_store(scale)), open_store(url, max_event_bytes=1 << 40)
    try:
        report = copy_store(source, target, page=1000)
        if report.problems:
            raise AssertionError(f"copy differs: {report.problems[:3]}")
    finally:
        source.close()
        target.close()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bench_marker (format text)")
        conn.execute("INSERT INTO bench_marker VALUES (%s)", (f"{FORMAT}:{common.SCALES[scale]}",))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    common.say(f"  copied in {time.monotonic() - started:.0f} s")
    return url


def _timed(store, pairs) -> list[float]:
    times = []
    for session_id, run_id, since_seq in pairs:
        started = time.perf_counter()
        events = store.get_events_by_run(session_id, run_id, since_seq=since_seq, limit=100)
        times.append(time.perf_counter() - started)
        if len(events) != 100:
            raise AssertionError(f"{run_id} after {since_seq}: {len(events)} events, not 100")
    return times


def run_page_row(urls: dict[str, str]) -> Row:
    from eventsvc.store import open_store

    stores = {scale: open_store(url) for scale, url in urls.items()}
    pairs = {scale: common.read_pairs(scale, READS) for scale in urls}
    try:
        for scale in urls:
            _timed(stores[scale], pairs[scale])  # warm-up: every page read once
        samples: dict[str, list[list[float]]] = {scale: [] for scale in urls}
        for _ in range(common.REPEATS):
            for scale in urls:
                samples[scale].append(_timed(stores[scale], pairs[scale]))
    finally:
        for store in stores.values():
            store.close()
    p50 = {scale: median(percentile(run, 0.5) for run in runs) for scale, runs in samples.items()}
    p99 = {scale: percentile([t for run in runs for t in run], 0.99) for scale, runs in samples.items()}
    ratio = p50["1M"] / p50["10k"]
    buffers = {scale: _buffers(url, pairs[scale][:BUFFER_SAMPLES]) for scale, url in urls.items()}
    return Row("10 PostgreSQL get_events_by_run(limit=100), 1M vs 10k events",
               f"p50 {micros(p50['1M'])}, p99 {micros(p99['1M'])} (1M)",
               f"p50 {micros(p50['10k'])}, p99 {micros(p99['10k'])} (10k)", ratio, "p50 ratio ≤ 1.3", ratio <= 1.3,
               f"{READS} random (run, since_seq) reads per pass, {common.REPEATS} passes, warm server cache; "
               "pages per read in shared buffers / read from the OS (EXPLAIN BUFFERS, after the passes): "
               + ", ".join(f"{scale} {hit:.1f} / {read:.1f}" for scale, (hit, read) in buffers.items())
               + f"; shared_buffers {_setting(urls['1M'], 'shared_buffers')}, "
               f"1M database {_database_size(urls['1M'])}")


def _buffers(url: str, pairs) -> tuple[float, float]:
    """Mean pages one run page takes from shared buffers and from the OS: why 1M may read slower than 10k."""
    import psycopg

    from eventsvc.store.postgres.pages import RUN_PAGE

    hit = read = 0
    with psycopg.connect(url) as conn:
        for session_id, run_id, since_seq in pairs:
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + RUN_PAGE,
                                (session_id, run_id, since_seq, 100)).fetchone()[0][0]
            hit += plan["Plan"]["Shared Hit Blocks"]
            read += plan["Plan"]["Shared Read Blocks"]
    return hit / len(pairs), read / len(pairs)


def _setting(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]


def _database_size(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]


@contextmanager
def _database_env(url: str):
    before = os.environ.get("EVENTSVC_DATABASE_URL")
    os.environ["EVENTSVC_DATABASE_URL"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("EVENTSVC_DATABASE_URL", None)
        else:
            os.environ["EVENTSVC_DATABASE_URL"] = before


def http_rows(wrk: str, url_1m: str) -> list[Row]:
    from eventsvc.store.postgres import upgrade

    rows = []
    name = f"eventsvc_bench_{secrets.token_hex(4)}"
    with _admin() as admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    try:
        upgrade(_database_url(name))
        script = bench_http.post_script()
        with common.scratch("pg-http-append") as folder, _database_env(_database_url(name)), \
                loadgen.serve(bench_http.EVENTSVC_APP, folder / "unused", folder / "eventsvc.log") as ours, \
                loadgen.serve(bench_http.BASELINE_APP, folder / "unused", folder / "baseline.log") as theirs:
            status, stored = loadgen.http_json(ours.url + "/api/sessions/hs-1/events", common.input_event("hr-1", 3))
            if status != 201 or stored["seq"] != 1:
                raise AssertionError(f"eventsvc answered {status} {stored}")
            splits: dict[str, list[str]] = {}
            results = bench_http._compare(wrk, {"eventsvc": ours, "baseline": theirs}, script, splits)
        rows.append(bench_http._row("10 PostgreSQL HTTP append, 1 event/POST, 8 conns (req/s)", results, 0.6,
                                    "as figure 3, EVENTSVC_DATABASE_URL set (synchronous_commit on)", splits))
    finally:
        with _admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    paths = bench_http.read_paths()
    script = bench_http.read_script(paths)
    with common.scratch("pg-http-read") as folder, _database_env(url_1m), \
            loadgen.serve(bench_http.EVENTSVC_APP, folder / "unused", folder / "eventsvc.log") as ours, \
            loadgen.serve(bench_http.BASELINE_APP, folder / "unused", folder / "baseline.log") as theirs:
        for path in paths[:20]:
            status, page = loadgen.http_json(ours.url + path)
            if status != 200 or len(page["events"]) != 100:
                raise AssertionError(f"{path}: {status}, {len(page.get('events', []))} events")
        splits = {}
        results = bench_http._compare(wrk, {"eventsvc": ours, "baseline": theirs}, script, splits)
    rows.append(bench_http._row("10 PostgreSQL HTTP run page, limit=100, 1M events (req/s)", results, 1.0,
                                "as figure 4, EVENTSVC_DATABASE_URL set", splits))
    return rows


def main() -> list[Row]:
    try:
        _admin().close()
    except Exception as exc:  # noqa: BLE001 - no server: rows say so
        why = f"PostgreSQL not reachable ({type(exc).__name__})"
        return [common.skipped("10 PostgreSQL run page 1M vs 10k", "≤ 1.3", why)]
    urls = {scale: ensure_database(scale) for scale in ("10k", "1M")}
    rows = [run_page_row(urls)]
    wrk = loadgen.find_wrk()
    if wrk is None:
        return rows + [common.skipped("10 PostgreSQL HTTP append and run page", "≥ 0.6 / ≥ 1.0", loadgen.WRK_HELP)]
    return rows + http_rows(wrk, urls["1M"])


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row.cells()))
        print("   ", row.note)
