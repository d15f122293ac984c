"""The event store: one interface (``Store``), two backends, and ``open_store`` to pick one.

``EventStore`` (eventsvc.store.files) keeps JSON-lines segments per session with a SQLite index,
the default that needs no server; ``PostgresStore`` (eventsvc.store.postgres) keeps the same
envelopes in PostgreSQL for deployments that outgrow one host. Users' code imports from here.
"""
from __future__ import annotations

import os
from typing import Any

from ..config import is_database_url
from .base import AppendResult, Page, Store
from .files import EventStore, ReindexReport
from .files.totals import StoreTotals
from .listings import SummaryPage

__all__ = ["AppendResult", "EventStore", "Page", "ReindexReport", "Store", "StoreTotals", "SummaryPage", "open_store"]


def open_store(target: str | os.PathLike[str], **options: Any) -> Store:
    """The store at ``target``: a ``postgresql://`` URL opens PostgresStore, anything else a data folder.

    ``options`` go to the backend's constructor (``fsync``, ``segment_bytes`` for files;
    ``pool_size``, ``connect_timeout``, ``statement_timeout`` for PostgreSQL; ``max_event_bytes``
    and ``event_types`` for both).
    """
    if is_database_url(target):
        from .postgres import PostgresStore  # psycopg is needed only by those who use it

        return PostgresStore(str(target), **options)
    return EventStore(target, **options)
