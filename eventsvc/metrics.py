"""Prometheus metrics of the service, correct across gunicorn's worker processes (no Flask here).

Under gunicorn, ``eventsvc.gunicorn_conf`` makes a fresh directory and exports it as
``PROMETHEUS_MULTIPROC_DIR`` before the workers fork; prometheus_client then keeps each
worker's values in files there, a scrape sums them over every worker (live or dead, for
counters and histograms; live only, for the open-streams gauges) and the master marks each
worker that exits as dead. Without that variable (tests, ``flask run``) values stay in process.

Import this module only after that variable is set: prometheus_client picks its value
store once, when it is first imported (``create_app`` imports it lazily for that reason).
"""
from __future__ import annotations

import os
import re
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .store import EventStore
from .store.files.segments import SegmentIO

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_READ_LATENCY = _LATENCY + (30.0, 60.0)  # a long-poll may wait up to 60 s

LOCAL = CollectorRegistry(auto_describe=True)
EVENTS_APPENDED = Counter("eventsvc_events_appended", "Events stored by appends, by event type",
                          ["type"], registry=LOCAL)
APPEND_REQUESTS = Counter("eventsvc_append_requests", "Append requests by outcome: created, replayed "
                          "(an idempotent re-send) or the error code answered", ["outcome"], registry=LOCAL)
APPEND_SECONDS = Histogram("eventsvc_append_duration_seconds", "Time to answer an append request",
                           buckets=_LATENCY, registry=LOCAL)
FSYNC_SECONDS = Histogram("eventsvc_fsync_duration_seconds", "Time of each fsync of a segment",
                          buckets=_LATENCY, registry=LOCAL)
READ_SECONDS = Histogram("eventsvc_read_duration_seconds", "Time to answer a read, by endpoint "
                         "(a long-poll's includes its wait)", ["endpoint"], buckets=_READ_LATENCY, registry=LOCAL)
HTTP_REQUESTS = Counter("eventsvc_http_requests", "Answers by endpoint and status",
                        ["endpoint", "status"], registry=LOCAL)
OPEN_STREAMS = Gauge("eventsvc_open_streams", "Server-Sent Event streams open now",
                     multiprocess_mode="livesum", registry=LOCAL)
OPEN_LONG_POLLS = Gauge("eventsvc_open_long_polls", "Long-poll reads (wait > 0) in progress now",
                        multiprocess_mode="livesum", registry=LOCAL)
STORAGE_ERRORS = Counter("eventsvc_storage_errors", "Requests failed by the storage, by kind (error code)",
                         ["kind"], registry=LOCAL)


APPEND_RULE = "/api/sessions/<session_id>/events"  # the append route's label, as the app counts it
_APPEND_LINE = re.compile(rb"POST /api/sessions/[^/?# ]+/events(?:\?[^ ]*)? HTTP/")


def count_refused(status: int, code: str, head: bytes = b"") -> None:
    """An answer gunicorn or ``eventsvc.worker`` gave before the app saw the request (a body shorter
    than announced, a timeout, oversized headers, a request it cannot parse): an append's, with its
    outcome, when ``head`` starts with an append's request line, else under the endpoint "unmatched".
    Not timed: the app's histograms time what the app answered."""
    append = _APPEND_LINE.match(head) is not None
    HTTP_REQUESTS.labels(APPEND_RULE if append else "unmatched", str(status)).inc()
    if append:
        APPEND_REQUESTS.labels(code).inc()


class Cell(Protocol):
    def inc(self, amount: float) -> None: ...


def counter_cell(counter: Counter) -> Cell:
    """The value cell a labelled counter's ``inc`` ends in, to add to it directly.

    ``Counter.inc`` and ``Histogram.observe`` check their arguments and labels on every call, which
    costs about as much as the write to the memory-mapped value itself; each request updates four or
    five values (bench/bench_metrics_cost.py). Where prometheus_client keeps no ``_value`` (a future
    version), the counter itself serves, at its usual cost.
    """
    value = getattr(counter, "_value", None)
    return value if callable(getattr(value, "inc", None)) else _CounterAsCell(counter)


class HistogramCells:
    """A labelled histogram's sum and bucket cells, observed directly (see ``counter_cell``)."""

    def __init__(self, histogram: Histogram) -> None:
        self._sum = getattr(histogram, "_sum", None)
        self._buckets = getattr(histogram, "_buckets", None)
        self._bounds = getattr(histogram, "_upper_bounds", None)
        if not (callable(getattr(self._sum, "inc", None)) and self._bounds and self._buckets
                and len(self._buckets) == len(self._bounds) and self._bounds[-1] == float("inf")):
            self.observe = histogram.observe  # type: ignore[method-assign]

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        self._buckets[bisect_left(self._bounds, amount)].inc(1)  # the first bound >= amount, as observe()


class _CounterAsCell:
    def __init__(self, counter: Counter) -> None:
        self.inc = counter.inc


class TimedSegmentIO(SegmentIO):
    """The store's system calls, with each fsync timed into ``eventsvc_fsync_duration_seconds``."""

    def fsync(self, fd: int) -> None:
        started = time.perf_counter()
        try:
            super().fsync(fd)
        finally:
            _FSYNC_CELLS.observe(time.perf_counter() - started)


_FSYNC_CELLS = HistogramCells(FSYNC_SECONDS)


class StoreCollector(Collector):
    """What the store holds, asked at scrape time from the index (see ``EventStore.totals``)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        totals = self.store.totals()
        yield GaugeMetricFamily("eventsvc_store_sessions", "Sessions in the store", value=totals.sessions)
        yield GaugeMetricFamily("eventsvc_store_events", "Events in the store", value=totals.events)
        yield GaugeMetricFamily("eventsvc_store_log_bytes", "Bytes of the segments (the log) on disk",
                                value=totals.log_bytes)
        yield GaugeMetricFamily("eventsvc_store_index_bytes", "Bytes of the SQLite index and its WAL on disk",
                                value=totals.index_bytes)


class _Local(Collector):
    def collect(self) -> Iterator:
        return LOCAL.collect()


def exposition(store: EventStore, accept: str | None) -> tuple[bytes, str]:
    """(body, content type) of one scrape: every worker's metrics, and the store's totals."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    else:
        registry.register(_Local())
    registry.register(StoreCollector(store))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
