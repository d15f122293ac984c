"""Marshmallow schemas of what the API answers, for its OpenAPI description.

Requests are described by the schemas that validate them (``eventsvc.schemas``); answers by
these, next to the envelope schema the auditor checks stored lines with. Only the description
uses them: the views write their bodies directly (see ``wire.page_response``).
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

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
