"""Load on loopback: gunicorn started and stopped by PID, wrk bounded in time, worker bookkeeping."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project: gunicorn runs there, as `make run` does

# -- gunicorn on loopback ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """gunicorn with the `make run` configuration on 127.0.0.1, started and stopped by PID."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def worker_pids(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
            return [int(pid) for pid in text.split()]
        except OSError:
            pids = []
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        stat = Path(entry.path, "stat").read_text()
                    except OSError:
                        continue
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                        pids.append(int(entry.name))
            return pids


WORKERS = 2
GUNICORN_LOG_FORMAT = '%(p)s %(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'  # make run's, plus the worker pid


def requests_by_worker(log_path: Path, path_prefix: str = "/api/") -> dict[int, int]:
    """Requests per worker pid so far, from the access log (gunicorn writes the pid as <1234>)."""
    counts: dict[int, int] = {}
    for line in Path(log_path).read_text(errors="replace").splitlines():
        words = line.split()
        if len(words) > 3 and words[0][1:-1].isdigit() and words[3].startswith(path_prefix):
            pid = int(words[0][1:-1])
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def _workers_ready(log_path: Path, start: int, env: dict[str, str]) -> float:
    """Workers that logged "Worker ready" since ``start`` (infinite when the log level hides it)."""
    if env.get("EVENTSVC_LOG_LEVEL", "info").lower() not in ("debug", "info"):
        return float("inf")
    with open(log_path, "rb") as log:
        log.seek(start)
        return log.read().count(b"Worker ready (pid: ")


@contextmanager
def serve(target: str, data_dir: Path, log_path: Path, *, timeout: float = 60.0,
          settings: dict[str, str] | None = None) -> Iterator[Server]:
    """Serve ``target`` (``wsgi:app`` or ``bench.minimal_app:app``) as `make run` does: its gunicorn config,
    EVENTSVC_WORKERS=2 and the configured gthread threads, bound to a free port on 127.0.0.1;
    ``settings`` adds EVENTSVC_* variables (EVENTSVC_METRICS=0, say)."""
    port = free_port()
    env = {**os.environ, "EVENTSVC_DATA_DIR": str(data_dir), "EVENTSVC_BIND": f"127.0.0.1:{port}",
           "EVENTSVC_WORKERS": str(WORKERS), "PYTHONPATH": str(ROOT), **(settings or {})}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log_start = log_path.stat().st_size if log_path.exists() else 0
    log_file = open(log_path, "ab")
    process = subprocess.Popen([str(gunicorn), "--config", "python:eventsvc.gunicorn_conf",
                                "--access-logformat", GUNICORN_LOG_FORMAT, target],
                               cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    log_file.close()
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(server.url + "/healthz", timeout=1) as answer:
                    # Both workers, not the first: a run that starts while one still loads the app
                    # measures one worker (it takes every connection, and keeps them).
                    if answer.status == 200 and _workers_ready(log_path, log_start, env) >= WORKERS:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer within {timeout:.0f} s; see {log_path}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def http_json(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, json.loads(answer.read())


def configured_threads() -> int:
    from eventsvc import config

    return config.load()["THREADS"]


# -- wrk -----------------------------------------------------------------------------------------

WRK_HELP = ("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), `brew install wrk` (macOS), "
            "or build it from https://github.com/wg/wrk")


def find_wrk() -> str | None:
    """The wrk binary; installs Debian's package when running as root with apt-get, else None."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("installing wrk with apt-get (Debian package `wrk`)", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "install", "-y", "-qq", "wrk"], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "wrk"]):
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        if shutil.which("wrk"):
            break
    return shutil.which("wrk")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    non_2xx: int
    socket_errors: str
    latency_p50: str
    latency_p99: str


def run_wrk(wrk: str, url: str, script: Path, *, seconds: float, connections: int = 8) -> WrkResult:
    """wrk against loopback, one thread, ``connections`` keep-alive connections, bounded in time."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("load goes to 127.0.0.1 only")
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
               "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    fields = {"requests": 0, "seconds": seconds, "non_2xx": 0, "socket": "", "p50": "?", "p99": "?"}
    for line in out.splitlines():
        words = line.split()
        if "requests in" in line:
            fields["requests"] = int(words[0])
            fields["seconds"] = _duration(words[3].rstrip(","))
        elif line.startswith("Non-2xx"):
            fields["non_2xx"] = int(words[-1])
        elif line.strip().startswith("Socket errors"):
            fields["socket"] = line.strip()
        elif words[:1] == ["50%"]:
            fields["p50"] = words[1]
        elif words[:1] == ["99%"]:
            fields["p99"] = words[1]
    if not fields["requests"]:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return WrkResult(fields["requests"], fields["seconds"], fields["requests"] / fields["seconds"],
                     fields["non_2xx"], fields["socket"], fields["p50"], fields["p99"])


def _duration(text: str) -> float:
    for suffix, scale in (("ms", 1e-3), ("us", 1e-6), ("m", 60.0), ("s", 1.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)
