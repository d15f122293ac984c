"""The README's client install line, run as written in a copy of the checkout and a fresh venv:
the client installs without the server stack and talks to a real server."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

SERVER_STACK = {"flask", "werkzeug", "gunicorn", "peewee", "marshmallow"}


def readme_client_install_line() -> str:
    lines = re.findall(r"^pip install '\.\[client\]'", (ROOT / "README.md").read_text(), flags=re.M)
    assert lines, "the README shows no `pip install '.[client]'` line"
    return lines[0]


def fresh_checkout(destination: Path) -> Path:
    """The tracked files as they are in the work tree (what a clone of this commit would hold)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in tracked.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def test_the_readme_install_line_gives_a_working_client_without_the_server_stack(tmp_path, server):
    checkout = fresh_checkout(tmp_path / "eventsvc")
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    bin_dir = environment / "bin"
    command = shlex.split(readme_client_install_line())
    command[0] = str(bin_dir / "pip")
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    installed = subprocess.run([*command, "--quiet", "--disable-pip-version-check"], cwd=checkout, env=env,
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    assert "does not provide the extra" not in installed.stderr

    listing = subprocess.run([str(bin_dir / "pip"), "list", "--format=json", "--disable-pip-version-check"],
                             capture_output=True, text=True, check=True, env=env)
    names = {package["name"].lower() for package in json.loads(listing.stdout)}
    assert {"eventsvc", "httpx", "httpx-sse", "sniffio"} <= names
    assert names & SERVER_STACK == set()

    use = """
import sys
from eventsvc.client import AsyncEventClient, AsyncBatchingEmitter, BatchingEmitter, EventClient, RemoteEmitter
with EventClient(sys.argv[1]) as client:
    with BatchingEmitter(client) as emitter:
        stored = emitter.emit("installed", "user_message", {"text": "from a client-only install"})
    assert list(client.session_events("installed")) == [stored]
    RemoteEmitter(client).emit("installed", "status")
loaded = {name.partition(".")[0] for name in sys.modules}
assert not loaded & {"flask", "werkzeug", "gunicorn", "peewee", "marshmallow"}, loaded
"""
    used = subprocess.run([str(bin_dir / "python"), "-c", use, server.url], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert used.returncode == 0, used.stderr
    helped = subprocess.run([str(bin_dir / "eventsvc"), "tail", "--help"], env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "--give-up-after" in helped.stdout
    server_only = subprocess.run([str(bin_dir / "eventsvc"), "stats", "--data-dir", str(tmp_path / "none")],
                                 env=env, capture_output=True, text=True)
    assert server_only.returncode == 2 and server_only.stdout == ""
    assert server_only.stderr.splitlines() == [server_only.stderr.strip()] and "server extra" in server_only.stderr
