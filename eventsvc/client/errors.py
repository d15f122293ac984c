"""The client's exceptions, named after the server's error codes.

Each is also the in-process exception of the same meaning (``Conflict`` is an
``eventsvc.errors.Conflict``, ``ValidationFailed`` a ``ValueError``), so code that caught the
embedded store's errors keeps working against the service.
"""
from __future__ import annotations

import json
from typing import Any

from .. import errors


class ClientError(errors.EventSvcError):
    """An error answer of the server (``status``, ``code``, ``message``, ``details``), or no answer.
    ``retry_after``: the seconds a 503's ``Retry-After`` asked for (None: it did not say)."""

    retry_after: float | None = None

    def __init__(self, message: str, details: Any = None, *, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, details)
        self.status = status
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status is not None else self.code
        return f"{prefix}: {self.message}"


class ValidationFailed(ClientError, errors.ValidationFailed):
    code = "validation_error"


class BadRequest(ClientError, errors.BadRequest):
    code = "bad_request"


class NotFound(ClientError, errors.NotFound):
    code = "not_found"


class Conflict(ClientError, errors.Conflict):
    code = "conflict"


class SeqConflict(Conflict, errors.SeqConflict):
    code = "seq_conflict"


class EventIdConflict(Conflict, errors.EventIdConflict):
    code = "event_id_conflict"


class RunSessionConflict(Conflict, errors.RunSessionConflict):
    code = "run_session_conflict"


class Unauthorized(ClientError, errors.Unauthorized):
    code = "unauthorized"


class Forbidden(ClientError, errors.Forbidden):
    code = "forbidden"


class PayloadTooLarge(ClientError, errors.EventTooLarge):
    code = "payload_too_large"


class UnsupportedMediaType(ClientError, errors.UnsupportedMediaType):
    code = "unsupported_media_type"


class RequestTimeout(ClientError, errors.RequestTimeout):
    code = "request_timeout"


class StorageUnavailable(ClientError, errors.StorageError):
    code = "storage_unavailable"


class StoreBusy(StorageUnavailable, errors.StoreBusy):
    code = "store_busy"


class InsufficientStorage(StorageUnavailable, errors.StorageFull):
    code = "insufficient_storage"


class TooManyStreams(ClientError, errors.TooManyStreams):
    """503 ``too_many_streams``: the server's stream slots are taken; ``follow`` waits ``Retry-After``."""

    code = "too_many_streams"


class TooManyConnections(ClientError):
    """503 ``too_many_connections``: the worker closed this unfinished request to make room for new
    connections; a re-send is safe (nothing was stored)."""

    code = "too_many_connections"


class ConnectionFailed(ClientError):
    """No answer at all (refused, reset, timed out) after the retries; ``status`` is None."""

    code = "connection_failed"


_ERROR_BY_CODE: dict[str, type[ClientError]] = {cls.code: cls for cls in (
    ValidationFailed, BadRequest, NotFound, Conflict, SeqConflict, EventIdConflict, RunSessionConflict,
    Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType, RequestTimeout, StorageUnavailable,
    StoreBusy, InsufficientStorage, TooManyStreams, TooManyConnections)}
_ERROR_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 408: RequestTimeout, 409: Conflict,
    413: PayloadTooLarge, 415: UnsupportedMediaType, 422: ValidationFailed, 503: StorageUnavailable,
    507: InsufficientStorage}


def error_from_response(status: int, body: bytes) -> ClientError:
    """The exception for an error answer: by its JSON ``error.code``, else by its HTTP status."""
    error: Any = None
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        pass
    if not isinstance(error, dict):
        text = body.decode("utf-8", "replace").strip()[:200]
        cls = _ERROR_BY_STATUS.get(status, ClientError)
        return cls(text or f"HTTP {status}", status=status, code=cls.code if cls is not ClientError else "http_error")
    code = str(error.get("code") or "error")
    cls = _ERROR_BY_CODE.get(code) or _ERROR_BY_STATUS.get(status, ClientError)
    return cls(str(error.get("message") or code), error.get("details"), status=status, code=code)


class EmitterClosed(RuntimeError):
    """``emit`` on a batching emitter after ``close()``: the event was not sent."""
