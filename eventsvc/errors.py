"""One exception tree for the whole service.

Every error the store, the CLI or the API can raise on purpose is an ``EventSvcError``
with a stable ``code``; the API maps codes to HTTP statuses in one place
(``eventsvc.api.errors``), so the store never knows about HTTP.
"""
from __future__ import annotations

from typing import Any


class EventSvcError(Exception):
    code = "error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(EventSvcError, ValueError):
    """Input that breaks the envelope rules; ``details`` maps field (or batch index) to messages."""

    code = "validation_error"


class EventTooLarge(EventSvcError, ValueError):
    code = "payload_too_large"


class Conflict(EventSvcError):
    code = "conflict"


class SeqConflict(Conflict):
    code = "seq_conflict"


class EventIdConflict(Conflict):
    code = "event_id_conflict"


class RunSessionConflict(Conflict):
    code = "run_session_conflict"


class NotFound(EventSvcError):
    code = "not_found"


class SessionNotFound(NotFound):
    pass


class RunNotFound(NotFound):
    pass


class StorageError(EventSvcError):
    """The disk refused a write; nothing of the failed append stays visible."""

    code = "storage_unavailable"


class StorageFull(StorageError):
    code = "insufficient_storage"


class SchemaMismatch(StorageError):
    """The database holds no eventsvc schema, or another version of it (``eventsvc db upgrade`` fixes older)."""


class StoreBusy(EventSvcError):
    """Another process holds a lock this operation needs (for example a running reindex)."""

    code = "store_busy"


class BadRequest(EventSvcError, ValueError):
    """A body that is not well-formed JSON (or not UTF-8, or nested too deep, or cut short)."""

    code = "bad_request"


class Unauthorized(EventSvcError):
    """Tokens are configured and the request carries none, or an unknown one."""

    code = "unauthorized"


class Forbidden(EventSvcError):
    """A read-only token asked to write."""

    code = "forbidden"


class UnsupportedMediaType(EventSvcError):
    code = "unsupported_media_type"


class RequestTimeout(EventSvcError):
    """A request body stalled (no byte for EVENTSVC_BODY_TIMEOUT seconds); nothing was stored."""

    code = "request_timeout"


class TooManyStreams(EventSvcError):
    """This worker already serves its cap of open streams and long-polls; retry after ``retry_after`` seconds."""

    code = "too_many_streams"

    def __init__(self, message: str, details: Any = None, *, retry_after: int = 2) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after
