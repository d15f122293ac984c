"""Marshmallow schemas of what the API answers, for its OpenAPI description.

Requests are described by the schemas that validate them (``eventsvc.schemas``); answers by
these, next to the envelope schema the auditor checks stored lines with. Only the description
uses them: the views write their bodies directly (see ``wire.page_response``).
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from .. import lifecycle
from ..schemas import ID_PATTERN, Identifier, QueryInteger, StoredEnvelopeSchema

ID_REGEX = f"^{ID_PATTERN}$"


class ErrorDetailSchema(Schema):
    code = fields.String(required=True, metadata={"description": "stable machine-readable code, e.g. "
                                                  "validation_error, seq_conflict, not_found"})
    message = fields.String(required=True, metadata={"description": "for people; wording may change"})
    details = fields.Raw(metadata={"description": "more to say, where there is: field -> messages for a "
                                   "validation_error (by batch index for arrays)"})
    request_id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9._:-]{1,128}$"),
                               metadata={"description": "the X-Request-ID of this answer"})


class ErrorSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)


class EventListSchema(Schema):
    events = fields.List(fields.Nested(StoredEnvelopeSchema), required=True)


class PageSchema(Schema):
    session_id = Identifier(required=True)
    run_id = Identifier(metadata={"description": "present on a run's page"})
    events = fields.List(fields.Nested(StoredEnvelopeSchema), required=True,
                         metadata={"description": "stored envelopes in seq order"})
    next_since_seq = QueryInteger(required=True, validate=validate.Range(min=0),
                                  metadata={"description": "pass as since_seq to read on"})
    has_more = fields.Boolean(required=True)


class EventTypeSchema(Schema):
    name = fields.String(required=True)
    category = fields.String(required=True)
    run_scoped = fields.Boolean(required=True)


class EventTypesSchema(Schema):
    event_types = fields.List(fields.Nested(EventTypeSchema), required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class StreamEventSchema(Schema):
    """One Server-Sent Event as a client's parser sees it (OpenAPI 3.2's ``itemSchema`` reading)."""

    event = fields.String(required=True, metadata={"description": "the event's type; 'end' closes the stream"})
    data = fields.String(required=True, metadata={
        "description": "the stored envelope as one line of JSON; for 'end', {\"reason\", \"last_seq\"}",
        "contentMediaType": "application/json"})
    id = fields.String(validate=validate.Regexp(r"^[0-9]{1,18}$"),
                       metadata={"description": "the event's seq: send it back as Last-Event-ID to resume"})
    retry = fields.Integer(metadata={"description": "reconnection advice in milliseconds, sent first"})


def _moment(description: str) -> fields.String:
    return fields.String(required=True, allow_none=True, metadata={"format": "date-time", "description": description})


class PolicySchema(Schema):
    blocked = fields.Integer(required=True, validate=validate.Range(min=0))
    warned = fields.Integer(required=True, validate=validate.Range(min=0))


class RunSummarySchema(Schema):
    run_id = Identifier(required=True)
    session_id = Identifier(required=True)
    status = fields.String(required=True, validate=validate.OneOf(lifecycle.STATUSES))
    verify = fields.String(required=True, allow_none=True,
                           validate=validate.OneOf(sorted(set(lifecycle.VERIFY_BY_TYPE.values()))))
    first_seq = fields.Integer(required=True, validate=validate.Range(min=0))
    last_seq = fields.Integer(required=True, validate=validate.Range(min=0))
    event_count = fields.Integer(required=True, validate=validate.Range(min=0))
    created_at = _moment("timestamp of the first run_created")
    started_at = _moment("timestamp of the first run_started")
    ended_at = _moment("timestamp of the event that made the run terminal")
    updated_at = _moment("timestamp of the run's last event")
    policy = fields.Nested(PolicySchema, required=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                         metadata={"description": "events of the run by type"})


class SessionSummarySchema(Schema):
    session_id = Identifier(required=True)
    first_seq = fields.Integer(required=True, validate=validate.Range(min=0))
    last_seq = fields.Integer(required=True, validate=validate.Range(min=0))
    event_count = fields.Integer(required=True, validate=validate.Range(min=0))
    created_at = _moment("timestamp of the session's first event")
    updated_at = _moment("timestamp of the session's last event")
    run_count = fields.Integer(required=True, validate=validate.Range(min=0))
    active_runs = fields.Integer(required=True, validate=validate.Range(min=0))
    closed = fields.Boolean(required=True)


_CURSOR = {"description": "pass back as cursor for the next page; null on the last page"}


class SessionListSchema(Schema):
    sessions = fields.List(fields.Nested(SessionSummarySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True, metadata=_CURSOR)


class RunListSchema(Schema):
    runs = fields.List(fields.Nested(RunSummarySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True, metadata=_CURSOR)


class SessionRunsSchema(RunListSchema):
    session_id = Identifier(required=True)
