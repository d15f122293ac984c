"""The HTTP baseline: the least a Flask app can do on eventsvc's routes, served by the same gunicorn.

POST parses the JSON body and answers 201 with it; GET ``jsonify``s 100 events held in memory
(the same ~300-byte envelopes the store holds). No validation, no storage: what is left is
the cost of Flask, Werkzeug and gunicorn themselves.
"""
from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask, jsonify, request

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

app = Flask(__name__)
EVENTS = [common.stored_envelope(event, "s-000001", seq)
          for seq, event in enumerate(common.run_events(common.run_name(1, 1)), 1)]


@app.post("/api/sessions/<session_id>/events")
def append_event(session_id: str):
    return jsonify(request.get_json()), 201


@app.get("/api/runs/<run_id>/events")
def run_events(run_id: str):
    return jsonify(session_id="s-000001", run_id=run_id, events=EVENTS, next_since_seq=EVENTS[-1]["seq"],
                   has_more=False)


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")
