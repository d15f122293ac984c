"""gunicorn settings for ``make run``, read from the same EVENTSVC_* variables as the app."""
from eventsvc import config as _config

_settings = _config.load()

bind = _settings["BIND"]
workers = _settings["WORKERS"]
worker_class = "gthread"
threads = _settings["THREADS"]
loglevel = _settings["LOG_LEVEL"]
accesslog = "-"
# No Authorization header, no body: only what an operator needs to follow traffic.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
graceful_timeout = 10
