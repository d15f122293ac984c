"""The make-run gunicorn configuration: one instance never touches another's files, and the app logs at LOG_LEVEL."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from conftest import start_server

pytestmark = pytest.mark.slow


def test_two_make_run_instances_side_by_side(tmp_path: Path):
    """gunicorn 27's default control socket is one per user: two servers would share it, and the
    first to stop would remove it from the other. Ours keeps none."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": ""}
    first = start_server(tmp_path / "one", tmp_path / "one.log", env=env)
    second = start_server(tmp_path / "two", tmp_path / "two.log", env=env)
    try:
        for server in (first, second):
            assert requests.post(f"{server.url}/api/sessions/s/events", json={"type": "status"},
                                 timeout=10).status_code == 201
        first.stop()
        assert requests.get(second.url + "/healthz", timeout=10).status_code == 200
        for server in (first, second):
            assert "gunicorn.ctl" not in server.log() and "control socket" not in server.log().lower()
        assert not (home / ".gunicorn").exists()
    finally:
        first.stop()
        second.stop()


@pytest.mark.parametrize(("level", "shown"), [("warning", True), ("error", False)])
def test_the_apps_own_loggers_follow_the_log_level(tmp_path: Path, level: str, shown: bool):
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_LOG_LEVEL": level, "EVENTSVC_FSYNC": "never"})
    server.stop()
    lines = [line for line in server.log().splitlines() if "EVENTSVC_FSYNC=never" in line]
    if shown:
        assert lines and all("[WARNING] eventsvc:" in line for line in lines), server.log()
    else:
        assert lines == [], server.log()
