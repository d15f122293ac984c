"""``GET /api/openapi.json``: the API described from its own routes and marshmallow schemas.

Paths come from Flask's URL map, request and answer bodies from the schemas that validate them
(apispec's marshmallow plugin turns them into JSON Schema); this module only says which
schema, parameters and status codes go with which endpoint. An endpoint missing from
``OPERATIONS`` is missing from the description, and tests/test_openapi.py fails.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, jsonify
from marshmallow import fields

from ..schemas import (ID_PATTERN, EventInputSchema, Identifier, Payload, QueryNames, Seq, StoredEnvelopeSchema,
                       Timestamp)
from ..types import EventTypeSet
from . import shapes
from .request_ids import HEADER as REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from .operations import OPERATIONS, documented_path

bp = Blueprint("openapi", __name__)
SCHEMAS = {
    "Error": shapes.ErrorSchema, "EventInput": EventInputSchema, "Event": StoredEnvelopeSchema,
    "EventList": shapes.EventListSchema, "Page": shapes.PageSchema, "EventTypes": shapes.EventTypesSchema,
    "Health": shapes.HealthSchema, "StreamEvent": shapes.StreamEventSchema,
    "RunSummary": shapes.RunSummarySchema, "SessionSummary": shapes.SessionSummarySchema,
    "SessionList": shapes.SessionListSchema, "RunList": shapes.RunListSchema, "SessionRuns": shapes.SessionRunsSchema,
}


@bp.get("/api/openapi.json")
def openapi_json():
    description = current_app.extensions.get("eventsvc.openapi")
    if description is None:
        description = current_app.extensions["eventsvc.openapi"] = build(current_app)
    return jsonify(description)


def openapi_path(rule: str) -> str:
    """``/api/runs/<run_id>/events`` -> ``/api/runs/{run_id}/events``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def build(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every documented route of ``app``, as a dict."""
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(title="eventsvc", version="1", openapi_version="3.1.0", plugins=[plugin], info={
        "description": "A durable event log for AI-agent backends. Bearer tokens are required on /api "
                       "and /metrics only when the server has tokens configured; /healthz is always open."})
    plugin.converter.add_attribute_function(_our_fields)
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        operation = OPERATIONS.get(rule.endpoint)
        if operation is None or not documented_path(rule.rule):
            continue
        method, described = copy.deepcopy(operation)  # apispec resolves schemas in place
        parameters = [_path_parameter(name) for name in sorted(rule.arguments)]
        described = {**described, "parameters": parameters + described.get("parameters", []) + [_REQUEST_ID]}
        spec.path(path=openapi_path(rule.rule), operations={method: described})
    description = spec.to_dict()
    _drop_null_defaults(description["components"]["schemas"])
    _add_registry(description["components"]["schemas"], app.extensions["eventsvc.store"].event_types)
    return description


def _schema_name(schema: Any) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    for name, known in SCHEMAS.items():
        if known is cls:
            return name
    return cls.__name__.removesuffix("Schema")


def _our_fields(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """JSON Schema for the field types ``eventsvc.schemas`` defines."""
    if isinstance(field, Identifier):
        return {"pattern": f"^{ID_PATTERN}$"}
    if isinstance(field, Timestamp):
        return {"format": "date-time"}
    if isinstance(field, Seq):
        return {"minimum": 1}
    if isinstance(field, Payload):
        return {"type": "object"}
    if isinstance(field, QueryNames):
        return {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}(,[a-z][a-z0-9_]{0,63}){0,63}$",
                "description": "comma-separated names"}
    return {}


def _path_parameter(name: str) -> dict[str, Any]:
    return {"in": "path", "name": name, "required": True,
            "schema": {"type": "string", "pattern": f"^{ID_PATTERN}$"}}


# Any value is accepted (an invalid one is replaced, not refused), so the pattern is only described.
_REQUEST_ID = {"in": "header", "name": REQUEST_ID_HEADER, "required": False,
               "description": f"echoed back when it matches {REQUEST_ID_PATTERN}, else replaced by a generated id",
               "schema": {"type": "string"}}


def _drop_null_defaults(components: dict[str, Any]) -> None:
    """``load_default=None`` means "the store fills it in", not a null the client may send."""
    for schema in components.values():
        for prop in schema.get("properties", {}).values():
            if "default" in prop and prop["default"] is None:
                del prop["default"]


def _add_registry(components: dict[str, Any], event_types: EventTypeSet) -> None:
    """This deployment's event types, and the rule that run-scoped types carry a run_id."""
    names = list(event_types)
    run_scoped = [name for name in names if event_types.is_run_scoped(name)]
    for name in ("EventInput", "Event"):
        schema = components[name]
        schema["properties"]["type"]["enum"] = names
        schema["allOf"] = [{
            "if": {"properties": {"type": {"enum": run_scoped}}, "required": ["type"]},
            "then": {"properties": {"run_id": {"type": "string"}}, "required": ["run_id"]},
        }]

