"""GET /api/openapi.json: every /api, /healthz and /metrics route described, and nothing else."""
from __future__ import annotations

import jsonschema_rs
import pytest
import schemathesis

from eventsvc.api.openapi import openapi_path
from eventsvc.api.operations import documented_path

UNDOCUMENTED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture
def description(client) -> dict:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def test_the_routes_and_the_described_paths_are_the_same(app, description):
    routes = {(openapi_path(rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if documented_path(rule.rule)
              for method in rule.methods - UNDOCUMENTED_METHODS}
    described = {(path, method) for path, operations in description["paths"].items()
                 for method in operations if method != "parameters"}
    assert routes == described
    assert {"/api/openapi.json", "/healthz", "/metrics"} <= {path for path, _ in routes}


def test_a_route_outside_api_is_not_described(app, description):
    assert not documented_path("/ui/")
    assert all(documented_path(path) for path in description["paths"])


def test_it_is_openapi_3_1_that_schemathesis_loads(description):
    assert description["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(description)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(ops) for ops in description["paths"].values())


def test_every_component_is_valid_json_schema(description):
    for name, component in description["components"]["schemas"].items():
        resolved = {**component, "$defs": description["components"]["schemas"]}
        text = str(resolved).replace("#/components/schemas/", "#/$defs/")
        jsonschema_rs.validator_for(eval(text))  # noqa: S307 - our own dict's repr, rewritten refs


def test_every_operation_answers_500_and_every_error_has_the_error_shape(description):
    for path, operations in description["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"400", "408", "414", "431", "500"} <= set(responses), (path, method)
            for status, answer in responses.items():
                assert "X-Request-ID" in answer["headers"], (path, method, status)
                if int(status) >= 400:
                    assert answer["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}, (path, method, status)


@pytest.mark.parametrize(("path", "method", "statuses"), [
    ("/api/sessions/{session_id}/events", "post", {"200", "201", "400", "401", "403", "408", "409", "413", "414", "415",
                                                  "422", "431", "500", "503", "507"}),
    ("/api/sessions/{session_id}/events", "get", {"200", "400", "401", "404", "408", "414", "422", "431", "500", "503",
                                                 "507"}),
    ("/api/runs/{run_id}/events/stream", "get", {"200", "400", "401", "404", "408", "414", "422", "431", "500", "503",
                                                "507"}),
    ("/healthz", "get", {"200", "400", "408", "414", "431", "500", "503"}),
    ("/api/runs/{run_id}", "get", {"200", "400", "401", "404", "408", "414", "431", "500", "503", "507"}),
    ("/api/runs", "get", {"200", "400", "401", "408", "414", "422", "431", "500", "503", "507"}),
])
def test_the_status_codes_of_the_main_routes(description, path, method, statuses):
    assert set(description["paths"][path][method]["responses"]) == statuses


def test_streams_are_text_event_stream_and_bearer_is_the_scheme(description):
    for path in ("/api/sessions/{session_id}/events/stream", "/api/runs/{run_id}/events/stream"):
        assert list(description["paths"][path]["get"]["responses"]["200"]["content"]) == ["text/event-stream"]
    assert description["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert description["paths"]["/healthz"]["get"]["security"] == []
    append = description["paths"]["/api/sessions/{session_id}/events"]["post"]
    assert append["security"] == [{"bearerAuth": []}]
    assert append["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0] == {
        "$ref": "#/components/schemas/EventInput"}


def test_query_parameters_come_from_the_query_schemas(description):
    read = description["paths"]["/api/runs/{run_id}/events"]["get"]
    query = {p["name"]: p["schema"] for p in read["parameters"] if p["in"] == "query"}
    assert query["limit"] == {"type": "integer", "default": 100, "minimum": 1, "maximum": 1000}
    assert set(query) == {"since_seq", "limit", "wait", "types"}
    stream = description["paths"]["/api/runs/{run_id}/events/stream"]["get"]
    assert {p["name"] for p in stream["parameters"]} >= {"since_seq", "until_seq", "wait", "Last-Event-ID"}


def test_extra_event_types_are_in_the_description(data_dir):
    from eventsvc import create_app

    client = create_app({"DATA_DIR": str(data_dir), "EXTRA_EVENT_TYPES": "deploy_done"}).test_client()
    types = client.get("/api/openapi.json").get_json()["components"]["schemas"]["EventInput"]["properties"]["type"]
    assert "deploy_done" in types["enum"]
