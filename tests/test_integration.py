"""End to end against a real gunicorn (2 gthread workers) on 127.0.0.1, sharing a data dir with the test."""
from __future__ import annotations

import threading

import pytest
import requests

from conftest import Server
from eventsvc import EventEmitter

TIMEOUT = 10


def get(server: Server, path: str, **params) -> requests.Response:
    return requests.get(server.url + path, params=params, timeout=TIMEOUT)


def page_through(server: Server, path: str, limit: int) -> tuple[list[dict], list[dict]]:
    """Follow next_since_seq until has_more is false; returns the events and every page body."""
    events: list[dict] = []
    bodies: list[dict] = []
    since = 0
    for _ in range(1000):
        response = get(server, path, since_seq=since, limit=limit)
        assert response.status_code == 200
        body = response.json()
        bodies.append(body)
        assert len(body["events"]) <= limit
        assert body["next_since_seq"] == (body["events"][-1]["seq"] if body["events"] else since)
        events.extend(body["events"])
        since = body["next_since_seq"]
        if not body["has_more"]:
            return events, bodies
    raise AssertionError("more pages than expected")


@pytest.mark.slow
def test_run_events_emitted_in_process_are_served_by_gunicorn(store, data_dir, serve):
    emitter = EventEmitter(store, source="agent")
    emitter.emit("s-int", "session_created", {"title": "integration"})
    emitter.emit("s-int", "user_message", {"text": "fix the bug"})
    with emitter.run_scope("run-a"):
        emitter.emit("s-int", "run_created", {"goal": "fix"})
        emitter.emit("s-int", "run_started")
        emitter.emit("s-int", "tool_call", {"tool": "grep"})
        emitter.emit("s-int", "run_created", {"goal": "side"}, run_id="run-b")
        emitter.emit("s-int", "tool_result", {"lines": 3})
        emitter.emit("s-int", "verify_start")
        emitter.emit("s-int", "tool_policy_warn", {"rule": "network"})
        emitter.emit("s-int", "verify_pass")
    emitter.emit("s-int", "assistant_message", {"text": "done"})
    emitter.emit("s-int", "run_completed", run_id="run-a")
    emitter.emit("s-other", "run_created", run_id="run-c")
    expected = store.get_events_by_run("s-int", "run-a")
    assert [event["seq"] for event in expected] == [3, 4, 5, 7, 8, 9, 10, 12]

    server = serve(data_dir)
    response = get(server, "/api/runs/run-a/events")

    assert response.status_code == 200
    body = response.json()
    assert body == {"session_id": "s-int", "run_id": "run-a", "events": expected,
                    "next_since_seq": 12, "has_more": False}
    assert get(server, "/api/sessions/s-int/events").json()["events"] == store.get_events_by_session("s-int")
    assert get(server, "/api/runs/run-b/events").json()["events"] == store.get_events_by_run("s-int", "run-b")
    assert get(server, "/api/runs/run-a/events", since_seq=7, limit=2).json()["events"] == \
        store.get_events_by_run("s-int", "run-a", since_seq=7, limit=2)
    assert get(server, "/api/runs/run-c/events").json()["session_id"] == "s-other"

    # The test process and the server keep sharing the data dir: each sees the other's appends.
    later = emitter.emit("s-int", "run_failed", {"reason": "late"}, run_id="run-a")
    assert get(server, "/api/runs/run-a/events", since_seq=12).json()["events"] == [later]
    posted = requests.post(server.url + "/api/sessions/s-int/events",
                           json={"type": "run_resumed", "run_id": "run-a"}, timeout=TIMEOUT)
    assert posted.status_code == 201
    assert posted.json()["seq"] == later["seq"] + 1
    assert store.get_events_by_run("s-int", "run-a", since_seq=later["seq"]) == [posted.json()]


def post_events(url: str, name: str, count: int, acked: list[dict], failures: list[str],
                start: threading.Barrier, guard: threading.Lock) -> None:
    try:
        start.wait()
    except threading.BrokenBarrierError:
        failures.append(f"{name}: start barrier broke")
        return
    with requests.Session() as http:
        for n in range(count):
            body = ({"type": "tool_call", "run_id": f"run-{name}", "event_id": f"{name}-{n}", "payload": {"n": n}}
                    if n % 4 == 3 else {"type": "user_message", "event_id": f"{name}-{n}", "payload": {"n": n}})
            response = http.post(url, json=body, timeout=TIMEOUT)
            with guard:
                if response.status_code == 201:
                    acked.append(response.json())
                else:
                    failures.append(f"{name}-{n}: {response.status_code} {response.text}")


@pytest.mark.slow
def test_concurrent_posts_across_workers_get_contiguous_seqs(server):
    threads_count, per_thread = 8, 25
    url = server.url + "/api/sessions/busy/events"
    acked: list[dict] = []
    failures: list[str] = []
    guard = threading.Lock()
    start = threading.Barrier(threads_count, timeout=TIMEOUT)
    posters = [threading.Thread(target=post_events, args=(url, f"p{n}", per_thread, acked, failures, start, guard))
               for n in range(threads_count)]
    for poster in posters:
        poster.start()
    for poster in posters:
        poster.join(timeout=60)
    assert not any(poster.is_alive() for poster in posters)

    assert failures == []
    total = threads_count * per_thread
    assert sorted(event["seq"] for event in acked) == list(range(1, total + 1))
    events, _ = page_through(server, "/api/sessions/busy/events", limit=1000)
    assert events == sorted(acked, key=lambda event: event["seq"])
    assert len({event["event_id"] for event in events}) == total


@pytest.mark.slow
def test_concurrent_resend_over_http_is_stored_once(server):
    url = server.url + "/api/sessions/resend/events"
    event = {"type": "run_created", "run_id": "run-once", "event_id": "only-once", "payload": {"k": 1}}
    answers: list[requests.Response] = []
    guard = threading.Lock()
    start = threading.Barrier(8, timeout=TIMEOUT)

    def send() -> None:
        start.wait()
        response = requests.post(url, json=event, timeout=TIMEOUT)
        with guard:
            answers.append(response)

    senders = [threading.Thread(target=send) for _ in range(8)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=60)

    assert sorted(response.status_code for response in answers) == [200] * 7 + [201]
    assert all(response.json() == answers[0].json() for response in answers)
    assert answers[0].json()["seq"] == 1
    assert [stored["event_id"] for stored in get(server, "/api/sessions/resend/events").json()["events"]] == \
        ["only-once"]


@pytest.mark.slow
def test_paging_over_http_reproduces_the_session(server):
    url = server.url + "/api/sessions/paged/events"
    posted: list[dict] = []
    for batch in range(8):
        events = [{"type": "tool_call" if n % 3 == 0 else "user_message", "payload": {"batch": batch, "n": n},
                   **({"run_id": "run-paged"} if n % 3 == 0 else {})} for n in range(30 - batch)]
        response = requests.post(url, json=events, timeout=TIMEOUT)
        assert response.status_code == 201
        posted.extend(response.json()["events"])
    assert len(posted) == 212

    for limit in (1000, 10, 7, 4, 1):
        events, bodies = page_through(server, "/api/sessions/paged/events", limit=limit)
        assert events == posted
        assert all(body["has_more"] for body in bodies[:-1])
        assert all(body["session_id"] == "paged" for body in bodies)
    run_events, _ = page_through(server, "/api/runs/run-paged/events", limit=9)
    assert run_events == [event for event in posted if event["run_id"] == "run-paged"]

    past_the_end = get(server, "/api/sessions/paged/events", since_seq=212, limit=5).json()
    assert past_the_end == {"session_id": "paged", "events": [], "next_since_seq": 212, "has_more": False}
    exact = get(server, "/api/sessions/paged/events", since_seq=202, limit=10).json()
    assert [event["seq"] for event in exact["events"]] == list(range(203, 213))
    assert exact["has_more"] is False
    one_short = get(server, "/api/sessions/paged/events", since_seq=201, limit=10).json()
    assert one_short["has_more"] is True and one_short["next_since_seq"] == 211
