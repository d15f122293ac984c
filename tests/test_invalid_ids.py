"""A session or run id that breaks the id rule can never exist, so nothing waits for it (found by Schemathesis)."""
from __future__ import annotations

import pytest

BAD_IDS = ("%C3%B8bad", "-leading-dash", "a" * 129, "sp%20ace")


@pytest.mark.parametrize(("kind",), [("sessions",), ("runs",)])
@pytest.mark.parametrize(("bad_id",), [(bad,) for bad in BAD_IDS])
def test_a_stream_asked_to_wait_for_an_impossible_id_is_a_404_at_once(client, kind, bad_id):
    response = client.get(f"/api/{kind}/{bad_id}/events/stream?wait=1")
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("kind",), [("sessions",), ("runs",)])
def test_a_long_poll_for_an_impossible_id_is_a_404(client, kind):
    response = client.get(f"/api/{kind}/{BAD_IDS[0]}/events?wait=0.5")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
