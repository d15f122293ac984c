"""gunicorn settings for ``make run``, read from the same EVENTSVC_* variables as the app.

Worker model: ``gthread`` (see eventsvc.worker). Each open event stream holds one thread while it waits, so 2
workers x EVENTSVC_THREADS (256) serve a few hundred watchers while short requests keep
flowing; a worker learns of other workers' appends from SQLite (see eventsvc.store.watch).
"""
import gc
import os
import shutil
import sys
import tempfile

from eventsvc import config as _config
from eventsvc.tokens import tokens_from_config
from eventsvc.worker import BOARD

_settings = _config.load()

bind = [address.strip() for address in str(_settings["BIND"]).split(",") if address.strip()]
workers = _settings["WORKERS"]
worker_class = "eventsvc.worker.ThreadFreeWorker"  # gthread that reads headers without a thread
threads = _settings["THREADS"]
# Above `threads`, the rest are idle keep-alive connections and connections still sending their
# headers (neither holds a thread); at `threads` gunicorn would close every connection after one answer.
worker_connections = max(_settings["MAX_CONNECTIONS"], threads + 1)
# gunicorn 27's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl): two
# servers on one machine would share it, and the first to stop would remove it from the other.
# eventsvc does not use it.
control_socket_disable = True
loglevel = _settings["LOG_LEVEL"]
accesslog = "-"
# No Authorization header, no body, no query string: only what an operator needs to follow traffic.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms %(p)s rid=%({x-request-id}o)s'
# Both redact what a bad request quoted; json writes one JSON object per line, access and error logs alike.
logger_class = "eventsvc.logs.JsonLogger" if _settings["LOG_FORMAT"] == "json" else "eventsvc.logs.RedactingLogger"
graceful_timeout = 10


def _open_api() -> bool:
    """Whether no token is configured, from the parsed table; a token setting that yields none stops the start."""
    try:
        return not tokens_from_config(_settings)
    except ValueError as exc:
        print(f"eventsvc: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


def on_starting(server):
    """Before binding: refuse an open API beyond loopback, whatever set the address (env, --bind, ...),
    and a stream cap that leaves no thread for short requests, whatever set the threads."""
    try:
        _config.stream_limit({**_settings, "THREADS": server.cfg.threads})
    except ValueError as exc:
        print(f"eventsvc: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    refusal = _config.bind_refusal(_settings, list(server.cfg.bind), open_api=_open_api())
    if refusal:
        print(f"eventsvc: {refusal}", file=sys.stderr)
        sys.exit(2)
    _make_metrics_dir()


def when_ready(server):
    """Once, in the master: say plainly when the API is open to anyone who can reach it."""
    if _open_api():
        server.log.warning("no EVENTSVC_API_TOKENS, EVENTSVC_READ_TOKENS or EVENTSVC_TOKENS_FILE: "
                           "the API on %s is open to anyone who can reach it", ", ".join(server.cfg.bind))


def pre_fork(server, worker):
    """Give the new worker its byte on the board where workers say whether they have room for a stream."""
    worker.board_index = BOARD.claim({getattr(w, "board_index", None) for w in server.WORKERS.values()})


def child_exit(server, worker):
    """A worker that exited (or died) has no room for anything: free its byte."""
    BOARD.release(getattr(worker, "board_index", None))
    _mark_metrics_dead(worker)


# -- Prometheus multiprocess mode (eventsvc.metrics): one fresh directory per server ------------------


def _make_metrics_dir():
    """Before the workers fork (and import prometheus_client): a new, empty directory for their values."""
    if _settings["METRICS"]:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="eventsvc-metrics-")


def _mark_metrics_dead(worker):
    """In the master, as each worker exits: its live gauges (open streams, long-polls) stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    path = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


def post_worker_init(worker):
    """Requests gunicorn refuses itself (414, 431, a malformed one) get the JSON error shape too.

    The "ready" line tells an operator (and the tests) that this worker has loaded the app and
    is about to serve: gunicorn's own "Booting worker" comes before the app is loaded.
    """
    from eventsvc import http_errors

    http_errors.install()
    settle_heap()
    worker.log.info("Worker ready (pid: %s)", worker.pid)


def settle_heap():
    """Move everything loading the app created out of the collector's sight (``gc.freeze``): it lives
    as long as the worker, and a full collection that walks it stalls every request of the worker
    for ~17 ms (measured under figure 9's load; 0.5 ms once frozen)."""
    gc.collect()
    gc.freeze()
