"""PostgreSQL stopped and started under a live stream and under appends (a real server, a real gunicorn).

Appends answer 503 storage_unavailable while it is down and 201 again once it is back, without
restarting the service; the stream stays open and delivers every acknowledged event once, in
order. Needs to control the local cluster (root and pg_ctlcluster), as this project's machines allow.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import start_server
from postgres_db import ADMIN_URL
from test_postgres_hosts import BOUND, StreamReader

pytestmark = pytest.mark.slow
CLUSTER = ["15", "main"]


def may_restart_cluster() -> bool:
    """Stopping the machine's PostgreSQL would fail the PostgreSQL tests of anyone else running at the
    same time on a shared development machine: it runs in CI (.ci/run) or when asked for."""
    asked = os.environ.get("EVENTSVC_TEST_REQUIRE_POSTGRES") == "1" or os.environ.get("EVENTSVC_TEST_PG_RESTART") == "1"
    return (asked and shutil.which("pg_ctlcluster") is not None and os.geteuid() == 0
            and "127.0.0.1:5432" in ADMIN_URL)


def cluster(action: str) -> None:
    subprocess.run(["pg_ctlcluster", *CLUSTER, action, *(["-m", "fast"] if action == "stop" else [])],
                   check=True, timeout=120, capture_output=True)


def post(url: str, n: int) -> requests.Response:
    return requests.post(f"{url}/api/sessions/s1/events", json={"type": "tool_call", "event_id": f"e{n}",
                                                                "payload": {"n": n}}, timeout=BOUND)


@pytest.mark.skipif(not may_restart_cluster(), reason="restarts the machine's PostgreSQL 15/main (as root): runs under "
                    ".ci/run, or with EVENTSVC_TEST_PG_RESTART=1")
def test_appends_answer_503_while_postgres_is_down_and_the_stream_misses_nothing(pg_url, tmp_path: Path):
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_DATABASE_URL": pg_url, "EVENTSVC_SSE_KEEPALIVE": "0.5",
                               "EVENTSVC_DB_CONNECT_TIMEOUT": "1"})
    stopped = False
    try:
        acked = [post(server.url, n) for n in range(3)]
        assert [answer.status_code for answer in acked] == [201] * 3
        stream = StreamReader(f"{server.url}/api/sessions/s1/events/stream")
        stream.start()
        stream.wait_for_seq(3)

        cluster("stop")
        stopped = True
        down = post(server.url, 3)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "storage_unavailable"
        cluster("start")
        stopped = False

        deadline = time.monotonic() + BOUND
        answer = post(server.url, 3)
        while answer.status_code == 503 and time.monotonic() < deadline:
            answer = post(server.url, 3)  # the same event: a retry after an unanswered try is a re-send
        assert answer.status_code == 201, answer.text
        assert answer.json()["seq"] == 4
        for n in range(4, 7):
            assert post(server.url, n).status_code == 201

        stream.wait_for_seq(7)
        assert [seq for seq, _ in stream.events] == list(range(1, 8))
        assert [envelope["event_id"] for _, envelope in stream.events] == [f"e{n}" for n in range(7)]
        assert stream.is_alive(), stream.error  # the same connection, never reopened
        stream.response.close()
    finally:
        if stopped:
            cluster("start")
        server.stop()
