"""gunicorn settings for ``make run``, read from the same EVENTSVC_* variables as the app.

Worker model: ``gthread`` (see eventsvc.worker). Each open event stream holds one thread while it waits, so 2
workers x EVENTSVC_THREADS (128) serve a few hundred watchers while short requests keep
flowing; a worker learns of other workers' appends from SQLite (see eventsvc.store.watch).
"""
import sys

from eventsvc import config as _config
from eventsvc.tokens import tokens_from_config

_settings = _config.load()

bind = [address.strip() for address in str(_settings["BIND"]).split(",") if address.strip()]
workers = _settings["WORKERS"]
worker_class = "eventsvc.worker.ThreadFreeWorker"  # gthread that accepts only while a thread is free
threads = _settings["THREADS"]
# Above `threads`, the rest are idle keep-alive connections (they hold no thread); at `threads`
# gunicorn would close every connection after one answer.
worker_connections = 2 * threads
loglevel = _settings["LOG_LEVEL"]
accesslog = "-"
# No Authorization header, no body, no query string: only what an operator needs to follow traffic.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'
graceful_timeout = 10


def _open_api() -> bool:
    """Whether no token is configured, from the parsed table; a token setting that yields none stops the start."""
    try:
        return not tokens_from_config(_settings)
    except ValueError as exc:
        print(f"eventsvc: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


def on_starting(server):
    """Before binding: refuse an open API beyond loopback, whatever set the address (env, --bind, ...)."""
    refusal = _config.bind_refusal(_settings, list(server.cfg.bind), open_api=_open_api())
    if refusal:
        print(f"eventsvc: {refusal}", file=sys.stderr)
        sys.exit(2)


def when_ready(server):
    """Once, in the master: say plainly when the API is open to anyone who can reach it."""
    if _open_api():
        server.log.warning("no EVENTSVC_API_TOKENS, EVENTSVC_READ_TOKENS or EVENTSVC_TOKENS_FILE: "
                           "the API on %s is open to anyone who can reach it", ", ".join(server.cfg.bind))
