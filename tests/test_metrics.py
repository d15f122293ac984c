"""GET /metrics: Prometheus counters that move by exactly the traffic served, summed over workers."""
from __future__ import annotations

import errno
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from eventsvc import create_app
from eventsvc.store.files import segments
from conftest import start_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def wait_for(condition, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- in process ------------------------------------------------------------------------------


def test_metrics_off_answers_404_and_times_nothing(data_dir):
    app = create_app({"DATA_DIR": str(data_dir), "METRICS": False})
    response = app.test_client().get("/metrics")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert type(app.extensions["eventsvc.store"].io) is segments.SegmentIO


def test_metrics_need_a_read_token_when_tokens_are_configured(data_dir):
    client = create_app({"DATA_DIR": str(data_dir), "READ_TOKENS": "reader-1"}).test_client()
    assert client.get("/metrics").status_code == 401
    answer = client.get("/metrics", headers={"Authorization": "Bearer reader-1"})
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    assert client.get("/healthz").status_code == 200


def test_a_refused_append_is_counted_and_timed(data_dir):
    client = create_app({"DATA_DIR": str(data_dir), "API_TOKENS": "writer-1"}).test_client()
    auth = {"Authorization": "Bearer writer-1"}
    before = parse(client.get("/metrics", headers=auth).get_data(as_text=True))
    assert client.post("/api/sessions/s1/events", json={"type": "status"}).status_code == 401
    after = parse(client.get("/metrics", headers=auth).get_data(as_text=True))
    assert moved(before, after, "eventsvc_append_requests_total", outcome="unauthorized") == 1
    assert moved(before, after, "eventsvc_append_duration_seconds_count") == 1
    assert moved(before, after, "eventsvc_append_duration_seconds_sum") > 0


def test_an_options_request_on_the_append_route_is_no_append(client):
    before = parse(client.get("/metrics").get_data(as_text=True))
    assert client.options("/api/sessions/s1/events").status_code == 200
    after = parse(client.get("/metrics").get_data(as_text=True))
    assert moved(before, after, "eventsvc_append_duration_seconds_count") == 0
    assert not any(moved(before, after, "eventsvc_append_requests_total", outcome=outcome)
                   for outcome in ("created", "replayed"))
    assert moved(before, after, "eventsvc_http_requests_total", endpoint="/api/sessions/<session_id>/events",
                 status="200") == 1


def test_a_failed_fsync_counts_as_a_storage_error_and_an_append_outcome(client, app):
    class FailingFsync(segments.SegmentIO):
        def fsync(self, fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

    before = parse(client.get("/metrics").get_data(as_text=True))
    app.extensions["eventsvc.store"].io = FailingFsync()
    assert client.post("/api/sessions/s1/events", json={"type": "user_message"}).status_code == 503
    after = parse(client.get("/metrics").get_data(as_text=True))
    assert moved(before, after, "eventsvc_storage_errors_total", kind="storage_unavailable") == 1
    assert moved(before, after, "eventsvc_append_requests_total", outcome="storage_unavailable") == 1
    assert moved(before, after, "eventsvc_events_appended_total", type="user_message") == 0
    assert value(after, "eventsvc_store_events") == 0


# -- a real gunicorn with two workers ----------------------------------------------------------


def worker_pids(master: int) -> set[int]:
    """Live (not zombie) children of the gunicorn master."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master and fields[0] != "Z":
                pids.add(int(entry.name))
    return pids


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


def posts_by_worker(log: str) -> set[str]:
    return {word for line in log.splitlines() if '"POST /api/' in line
            for word in line.split() if word.startswith("<") and word.endswith(">")}


@pytest.mark.slow
def test_counters_move_by_exactly_the_traffic_summed_over_both_workers(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=2,
                          env={"TMPDIR": str(scratch), "EVENTSVC_SSE_KEEPALIVE": "0.2"})
    try:
        assert len(list(scratch.glob("eventsvc-metrics-*"))) == 1
        scrape = lambda: parse(requests.get(server.url + "/metrics", timeout=10).text)  # noqa: E731
        before = scrape()
        post = lambda session, body, **kw: requests.post(  # noqa: E731 - a new connection per request
            f"{server.url}/api/sessions/{session}/events", json=body, timeout=10, **kw)

        singles = 0
        while singles < 24 or len(posts_by_worker(server.log())) < 2:
            assert singles < 400, "one worker served every connection"
            assert post(f"m-{singles % 4}", {"type": "user_message"}).status_code == 201
            singles += 1
        batch = [{"type": "run_created", "run_id": "r1"}, {"type": "run_started", "run_id": "r1"},
                 {"type": "tool_call", "run_id": "r1"}]
        assert post("m-batch", batch).status_code == 201
        assert post("m-0", {"type": "status", "event_id": "fixed-1"}).status_code == 201
        for _ in range(3):
            assert post("m-0", {"type": "status", "event_id": "fixed-1"}).status_code == 200
        for _ in range(2):
            assert post("m-1", {"type": "bogus"}).status_code == 422
        assert requests.post(f"{server.url}/api/sessions/m-1/events", data="x", timeout=10).status_code == 415
        assert post("m-1", {"type": "status", "seq": 999}).status_code == 409
        assert requests.post(f"{server.url}/api/sessions/m-1/events", data="{", timeout=10,
                             headers={"Content-Type": "application/json"}).status_code == 400
        for _ in range(5):
            assert requests.get(f"{server.url}/api/sessions/m-0/events", timeout=10).status_code == 200
        for _ in range(2):
            assert requests.get(f"{server.url}/api/runs/r1/events", timeout=10).status_code == 200
        assert requests.get(f"{server.url}/api/sessions/m-1/events?since_seq=1000&wait=0.2",
                            timeout=10).json()["events"] == []
        # Answered by the worker (a body shorter than announced) and by gunicorn (no request line) itself.
        assert raw_answer(server.url, b"POST /api/sessions/m-1/events HTTP/1.1\r\nHost: x\r\nContent-Type: "
                          b"application/json\r\nContent-Length: 100\r\n\r\n{\"type\"").startswith(b"HTTP/1.1 400")
        assert raw_answer(server.url, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
        after = scrape()

        created = singles + 2
        assert moved(before, after, "eventsvc_append_requests_total", outcome="created") == created
        assert moved(before, after, "eventsvc_append_requests_total", outcome="replayed") == 3
        assert moved(before, after, "eventsvc_append_requests_total", outcome="validation_error") == 2
        assert moved(before, after, "eventsvc_append_requests_total", outcome="unsupported_media_type") == 1
        assert moved(before, after, "eventsvc_append_requests_total", outcome="seq_conflict") == 1
        assert moved(before, after, "eventsvc_append_requests_total", outcome="bad_request") == 2
        assert moved(before, after, "eventsvc_http_requests_total", endpoint="/api/sessions/<session_id>/events",
                     status="400") == 2
        assert moved(before, after, "eventsvc_http_requests_total", endpoint="unmatched", status="400") == 1
        assert moved(before, after, "eventsvc_append_duration_seconds_count") == created + 3 + 5
        assert moved(before, after, "eventsvc_fsync_duration_seconds_count") == created
        assert moved(before, after, "eventsvc_events_appended_total", type="user_message") == singles
        for event_type in ("run_created", "run_started", "tool_call", "status"):
            assert moved(before, after, "eventsvc_events_appended_total", type=event_type) == 1
        session_reads = "/api/sessions/<session_id>/events"
        assert moved(before, after, "eventsvc_read_duration_seconds_count", endpoint=session_reads) == 6
        assert moved(before, after, "eventsvc_read_duration_seconds_count", endpoint="/api/runs/<run_id>/events") == 2
        assert value(after, "eventsvc_open_long_polls") == 0
        assert value(after, "eventsvc_store_sessions") == 5
        assert value(after, "eventsvc_store_events") == singles + 4
        on_disk = sum(path.stat().st_size for path in (tmp_path / "data" / "segments").rglob("*.jsonl"))
        assert value(after, "eventsvc_store_log_bytes") == on_disk

        # An open stream counts while it is open: until its client goes away, or its worker dies.
        stream = requests.get(f"{server.url}/api/sessions/m-0/events/stream", stream=True, timeout=10)
        lines = stream.iter_lines()  # kept: a dropped line iterator closes the stream when collected
        assert next(lines) == b"retry: 2000"
        wait_for(lambda: value(scrape(), "eventsvc_open_streams") == 1, "the stream to count")
        stream.close()
        wait_for(lambda: value(scrape(), "eventsvc_open_streams") == 0, "the closed stream to stop counting")
        stream = requests.get(f"{server.url}/api/sessions/m-0/events/stream", stream=True, timeout=10)
        lines = stream.iter_lines()  # kept: a dropped line iterator closes the stream when collected
        assert next(lines) == b"retry: 2000"
        wait_for(lambda: value(scrape(), "eventsvc_open_streams") == 1, "the stream to count")
        for pid in worker_pids(server.process.pid):
            os.kill(pid, signal.SIGKILL)
        stream.close()
        wait_for(lambda: len(worker_pids(server.process.pid)) == 2 and answers(server.url + "/healthz"),
                 "new workers")

        def no_open_stream() -> Samples | None:
            samples = scrape()
            return samples if value(samples, "eventsvc_open_streams") == 0 else None

        survived = wait_for(no_open_stream, "the dead worker's stream to stop counting")
        assert value(survived, "eventsvc_append_requests_total", outcome="created") == value(
            after, "eventsvc_append_requests_total", outcome="created")
    finally:
        server.stop()
    assert list(scratch.glob("eventsvc-metrics-*")) == []


def raw_answer(url: str, request: bytes) -> bytes:
    """Send ``request`` on a new connection, stop sending, and read the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(request)
        raw.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    return answer


# -- the value cells the request counting adds to directly ----------------------------------------


def test_cells_count_exactly_what_the_public_methods_count():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from eventsvc.metrics import HistogramCells, counter_cell

    registry = CollectorRegistry()
    buckets = (0.001, 0.01, 1.0)
    direct = Histogram("direct_seconds", "", ["endpoint"], buckets=buckets, registry=registry).labels("e")
    public = Histogram("public_seconds", "", ["endpoint"], buckets=buckets, registry=registry).labels("e")
    cells = HistogramCells(direct)
    assert cells.observe.__func__ is HistogramCells.observe  # the direct path, not the fallback
    for amount in (0.0, 0.0005, 0.001, 0.0010001, 0.01, 0.5, 1.0, 1.5, 1e9, float("inf")):
        cells.observe(amount)
        public.observe(amount)
    counted = Counter("direct", "", ["kind"], registry=registry).labels("k")
    for _ in range(3):
        counter_cell(counted).inc(1)

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in registry.collect() for s in family.samples if not s.name.endswith("_created")}
    mirrored = {(name.replace("direct_", "public_"), labels): value for (name, labels), value in samples.items()
                if name.startswith("direct_seconds")}
    assert mirrored == {key: value for key, value in samples.items() if key[0].startswith("public_")}
    assert samples[("direct_seconds_bucket", (("endpoint", "e"), ("le", "0.001")))] == 3
    assert samples[("direct_total", (("kind", "k"),))] == 3


def test_every_endpoint_has_one_url_rule(app):
    """The request counting labels an answer by its endpoint's rule: one rule per endpoint keeps that exact."""
    endpoints = [rule.endpoint for rule in app.url_map.iter_rules()]
    assert len(endpoints) == len(set(endpoints))
