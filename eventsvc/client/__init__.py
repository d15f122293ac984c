"""The eventsvc clients: ``EventClient`` (threads) and ``AsyncEventClient`` (asyncio) over httpx,
and the emitters that send through them: ``RemoteEmitter`` (one POST per event),
``BatchingEmitter`` and ``AsyncBatchingEmitter`` (one array POST per session per window).

Installable without the server: ``pip install '.[client]'`` brings httpx, httpx-sse and click,
never Flask, gunicorn, Peewee or marshmallow, and nothing here imports the server.
"""
from __future__ import annotations

from .aio import AsyncEventClient
from .async_batching import AsyncBatchingEmitter
from .batching import BatchingEmitter
from .errors import (BadRequest, ClientError, Conflict, ConnectionFailed, EmitterClosed, EventIdConflict,
                     Forbidden, InsufficientStorage, NotFound, PayloadTooLarge, RequestTimeout, RunSessionConflict,
                     SeqConflict, StorageUnavailable, StoreBusy, TooManyConnections, TooManyStreams, Unauthorized,
                     UnsupportedMediaType, ValidationFailed, error_from_response)
from .protocol import RetryPolicy
from .sync import EventClient, RemoteEmitter

__all__ = [
    "AsyncBatchingEmitter", "AsyncEventClient", "BadRequest", "BatchingEmitter", "ClientError", "Conflict",
    "ConnectionFailed", "EmitterClosed", "EventClient", "EventIdConflict", "Forbidden", "InsufficientStorage",
    "NotFound", "PayloadTooLarge", "RemoteEmitter", "RequestTimeout", "RetryPolicy", "RunSessionConflict",
    "SeqConflict", "StorageUnavailable", "StoreBusy", "TooManyConnections", "TooManyStreams", "Unauthorized",
    "UnsupportedMediaType", "ValidationFailed", "error_from_response",
]
