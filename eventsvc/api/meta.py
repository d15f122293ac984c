"""What the service knows about itself: the event type registry and a health check."""
from __future__ import annotations

from flask import Blueprint, jsonify

from . import store

bp = Blueprint("meta", __name__)


@bp.get("/api/event-types")
def event_types():
    registry = store().event_types
    return jsonify(event_types=[{"name": t.name, "category": t.category, "run_scoped": t.run_scoped}
                                for t in registry.values()])


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")
