"""Schemathesis against a real gunicorn, driven by GET /api/openapi.json.

Checks: no 5xx, every status code and content type documented, documented headers present,
every body valid against its schema, and invalid input refused. ``make test`` runs a bounded
profile (SCHEMATHESIS_EXAMPLES, 5 per operation and mode); ``make fuzz`` 1,000 per operation and
mode (about 16,000 requests).
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_headers_conformance, response_schema_conformance,
                                               status_code_conformance)

from conftest import Server, start_server

TOKEN = "conformance-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "5"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
LONGEST_WAIT = 0.1  # seconds: a generated long-poll of up to 60 s would stall the run, not test more


@pytest.fixture(scope="module")
def api_server(tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("conformance")
    server = start_server(folder / "data", folder / "gunicorn.log", workers=2,
                          env={"EVENTSVC_API_TOKENS": TOKEN, "EVENTSVC_SSE_KEEPALIVE": "0.2"})
    seed = [{"type": "run_created", "run_id": "r1"}, {"type": "user_message", "payload": {"text": "hi"}},
            {"type": "run_completed", "run_id": "r1"}]
    requests.post(server.url + "/api/sessions/s1/events", json=seed, headers=AUTH, timeout=10).raise_for_status()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(api_server: Server):
    # Invalid input must be refused with a 4xx this API documents for it; 414 and 431 are
    # gunicorn refusing a request line or header too large to read, 413 a body too large.
    refusals = ["400", "401", "403", "404", "405", "409", "413", "414", "415", "422", "431"]
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": refusals}}})
    return schemathesis.openapi.from_url(api_server.url + "/api/openapi.json", config=config, headers=AUTH,
                                         timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize(("mode",), [(GenerationMode.POSITIVE,), (GenerationMode.NEGATIVE,)])
def test_the_server_conforms_to_its_description(api_server, api_schema, mode):
    # Schemathesis's own pytest plugin does not run under pytest 9.2, so each operation's cases
    # are drawn here from its hypothesis strategy.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8  # Schemathesis leaves out the operation that serves the description
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def conforms(case) -> None:
            _shorten_waits(case)
            if case.path.endswith("/stream"):
                response = _first_chunk(case, api_server)
            else:
                response = case.call(base_url=api_server.url, headers=AUTH, timeout=30)
            case.validate_response(response, checks=CHECKS, headers=AUTH)

        try:
            conforms()
        except Unsatisfiable:
            # Nothing of it can be made invalid (no parameters, no body): only positive cases exist.
            assert mode is GenerationMode.NEGATIVE and not operation.body and not operation.query, operation.label


def _shorten_waits(case) -> None:
    query = case.query or {}
    wait = query.get("wait")
    try:
        seconds = float(wait)
    except (TypeError, ValueError):
        return
    if LONGEST_WAIT < seconds <= 60 and not case.path.endswith("/stream"):
        query["wait"] = LONGEST_WAIT


def _first_chunk(case, server: Server) -> requests.Response:
    """A stream's answer with its body cut after the first chunk: the stream itself never ends."""
    kwargs = case.as_transport_kwargs(base_url=server.url, headers=AUTH)
    response = requests.request(**kwargs, stream=True, timeout=30)
    try:
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            response._content = next(response.iter_content(chunk_size=None), b"")
        else:
            response._content = response.raw.read()
    finally:
        response.close()
    return response
