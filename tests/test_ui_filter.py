"""The console's type filter, server side: ``types=`` narrows session and run pages across the
whole log, pages on by cursor with the filter kept, is spelled one way, and an unregistered name
is a readable 400 page. (The browser side is in test_ui_browser.py.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from eventsvc import create_app
from eventsvc.store import rules
from eventsvc.ui import data
from test_ui_pages import Page, post

ROW = re.compile(r'<tr id="ev-(\d+)" data-type="([a-z_]+)"')
ON_EACH_BACKEND = pytest.mark.parametrize(("backend",), [("files",), ("postgres",)])


def client_on(backend: str, request: pytest.FixtureRequest, data_dir: Path):
    """A test client of an app on ``backend`` (PostgreSQL: this module's database, emptied)."""
    config = {"DATA_DIR": str(data_dir)}
    if backend == "postgres":
        config["DATABASE_URL"] = request.getfixturevalue("pg_url")
    app = create_app(config)
    request.addfinalizer(app.extensions["eventsvc.store"].close)
    return app.test_client()


def rows(html: str) -> list[tuple[int, str]]:
    return [(int(seq), event_type) for seq, event_type in ROW.findall(html)]


def next_href(html: str) -> str | None:
    links = [attrs["href"] for tag, attrs in Page(html).tags if tag == "a" and attrs.get("rel") == "next"]
    assert len(set(links)) <= 1
    return links[0] if links else None


def walk(client, url: str) -> tuple[list[tuple[int, str]], list[str]]:
    """Every row of every page, following Next › from ``url``; and the pages' HTML."""
    shown, pages = [], []
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.get_data(as_text=True)
        shown += rows(html)
        pages.append(html)
        url = next_href(html)
        assert len(pages) < 100
    return shown, pages


def mixed(count: int, rare_every: int) -> list[dict]:
    """``count`` events of several types; every ``rare_every``-th is an ``error``."""
    common = ["user_message", "assistant_message", "tool_call", "tool_result", "state_update"]
    return [{"type": "error" if n % rare_every == 3 else common[n % len(common)], "payload": {"n": n}}
            for n in range(count)]


@ON_EACH_BACKEND
def test_a_filter_shows_every_match_once_across_pages_and_nothing_else(backend, request, data_dir):
    client = client_on(backend, request, data_dir)
    post(client, "big", mixed(1000, 4))
    post(client, "big", mixed(1000, 4))
    expected = [seq for seq in range(1, 2001) if (seq - 1) % 1000 % 4 == 3]
    assert len(expected) == 500  # three filtered pages of 200
    shown, pages = walk(client, "/ui/sessions/big?types=error")
    assert [seq for seq, _ in shown] == expected
    assert {event_type for _, event_type in shown} == {"error"}
    assert len(pages) == 3
    assert next_href(pages[0]) == "/ui/sessions/big?since_seq=800&types=error"
    # Only the last page, which looked at the log's end, follows the stream, and with the same filter.
    assert ["data-stream" in html for html in pages] == [False, False, True]
    assert 'data-filter="error"' in pages[-1] and 'data-last-seq="2000"' in pages[-1]
    assert 'href="/ui/sessions/big?types=error">« First' in pages[1]
    assert 'id="shown-count">200<' in pages[0] and 'id="shown-count">100<' in pages[2]
    assert 'id="event-count">2000<' in pages[0]  # the session's own count stays whole


@ON_EACH_BACKEND
def test_a_filter_of_several_types_on_a_run_page(backend, request, data_dir):
    client = client_on(backend, request, data_dir)
    post(client, "s1", [{"type": "run_created", "run_id": "r1"}]
         + [{"type": ("tool_call", "tool_result", "tool_policy_warn")[n % 3], "run_id": "r1"} for n in range(600)]
         + [{"type": "user_message"}] * 5)
    expected = [seq for seq in range(2, 602) if (seq - 2) % 3 != 1]
    shown, pages = walk(client, "/ui/runs/r1?types=tool_call,tool_policy_warn")
    assert [seq for seq, _ in shown] == expected and len(pages) == 2
    assert {event_type for _, event_type in shown} == {"tool_call", "tool_policy_warn"}
    assert 'data-filter="tool_call,tool_policy_warn"' in pages[-1]
    assert 'data-fragment="/ui/runs/r1/live?since_seq=301&amp;types=tool_call,tool_policy_warn"' in pages[-1]


@ON_EACH_BACKEND
def test_a_page_whose_reads_stop_short_says_how_far_it_looked_and_pages_on(backend, request, data_dir, monkeypatch):
    client = client_on(backend, request, data_dir)
    monkeypatch.setattr(rules, "TYPE_FILTER_WINDOW", 100)  # each filtered read looks at 100 rows
    monkeypatch.setattr(data, "FILTERED_READS", 3)  # and a page takes three of them
    post(client, "sparse", [{"type": "error" if n in (50, 700, 701) else "status"} for n in range(1000)])
    first = client.get("/ui/sessions/sparse?types=error").get_data(as_text=True)
    assert rows(first) == [(51, "error")]
    assert "These are all among seq 1 to 300" in first
    second = client.get(next_href(first)).get_data(as_text=True)
    assert rows(second) == [] and "No" in second and "among seq 301 to 600" in second
    assert 'id="no-events"' in second and "data-stream" not in second
    shown, pages = walk(client, "/ui/sessions/sparse?types=error")
    assert shown == [(51, "error"), (701, "error"), (702, "error")]
    assert "data-stream" in pages[-1]


@pytest.mark.parametrize(("query", "spelled"), [
    ("types=error&types=tool_call", "types=tool_call,error"),  # as the form sends it: registry order
    ("types=error,error", "types=error"),
    ("types=error&types=error&since_seq=4", "types=error&since_seq=4"),
    ("types=", None),
    ("types=,", None),
])
def test_a_filter_is_spelled_one_way(client, query, spelled):
    post(client, "s1", mixed(10, 4))
    response = client.get(f"/ui/sessions/s1?{query}")
    assert response.status_code == 302
    assert response.headers["Location"] == "/ui/sessions/s1" + (f"?{spelled}" if spelled else "")


@pytest.mark.parametrize(("extra",), [("_external=1",), ("_anchor=x",), ("_method=POST",), ("session_id=other",),
                                      ("_scheme=javascript",)])
def test_the_redirect_stays_on_this_host_whatever_the_query_holds(client, extra):
    """Query keys are values, never arguments of URL building: no 500, no absolute URL to the Host header."""
    post(client, "s1", mixed(10, 4))
    response = client.get(f"/ui/sessions/s1?types=error&types=tool_call&{extra}",
                          headers={"Host": "evil.example"})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/ui/sessions/s1?types=tool_call,error&{extra}"


def test_ticking_every_type_is_no_filter(client, app):
    post(client, "s1", mixed(10, 4))
    every = "&".join(f"types={name}" for name in app.extensions["eventsvc.store"].event_types)
    response = client.get(f"/ui/sessions/s1?{every}")
    assert (response.status_code, response.headers["Location"]) == (302, "/ui/sessions/s1")


@pytest.mark.parametrize(("url",), [("/ui/sessions/s1?types=nope",), ("/ui/sessions/s1?types=error,Error",),
                                    ("/ui/runs/r1?types=%3Cscript%3Ealert(1)%3C/script%3E",),
                                    ("/ui/runs/r1/live?types=tool_call,x",)])
def test_an_unregistered_type_is_a_readable_400_page(client, url):
    post(client, "s1", [{"type": "run_created", "run_id": "r1"}])
    response = client.get(url)
    assert response.status_code == 400 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "400 · Unknown event type" in html and "<script>alert" not in html
    clear = [attrs["href"] for tag, attrs in Page(html).tags if tag == "a" and attrs.get("id") == "error-link"]
    assert clear == [url.split("?")[0]]


def test_no_match_says_so_with_a_way_back(client):
    post(client, "s1", mixed(10, 4))
    html = client.get("/ui/sessions/s1?types=verify_fail").get_data(as_text=True)
    assert rows(html) == []
    assert "No " in html and "verify_fail</span> events in this session yet." in html
    assert 'href="/ui/sessions/s1">Clear filter</a>' in html


def test_the_form_ticks_the_filter_and_lists_every_type(client, app):
    post(client, "s1", mixed(10, 4))
    boxes = {attrs["value"]: "checked" in attrs
             for tag, attrs in Page(client.get("/ui/sessions/s1?types=error,status").get_data(as_text=True)).tags
             if tag == "input" and attrs.get("type") == "checkbox"}
    assert list(boxes) == list(app.extensions["eventsvc.store"].event_types)
    assert {name for name, ticked in boxes.items() if ticked} == {"error", "status"}
    unfiltered = Page(client.get("/ui/sessions/s1").get_data(as_text=True))
    assert all("checked" in attrs for tag, attrs in unfiltered.tags
               if tag == "input" and attrs.get("type") == "checkbox")


def test_timeline_marks_link_to_their_row_or_to_the_page_that_shows_them(client):
    post(client, "s1", [{"type": "run_created", "run_id": "r1"}, {"type": "tool_call", "run_id": "r1"},
                        {"type": "tool_result", "run_id": "r1"}, {"type": "tool_call", "run_id": "r1"}])
    links = {attrs["href"] for tag, attrs in Page(client.get("/ui/runs/r1?types=tool_call").get_data(as_text=True)).tags
             if tag == "a" and attrs.get("class") == "mark-link"}
    assert links == {"/ui/runs/r1?since_seq=0#ev-1", "#ev-2", "/ui/runs/r1?since_seq=2#ev-3", "#ev-4"}
    live = client.get("/ui/runs/r1/live?since_seq=2&types=tool_call").get_data(as_text=True)
    links = {attrs["href"] for tag, attrs in Page(live).tags if tag == "a" and attrs.get("class") == "mark-link"}
    assert links == {"/ui/runs/r1?since_seq=0#ev-1", "/ui/runs/r1?since_seq=1&types=tool_call#ev-2",
                     "/ui/runs/r1?since_seq=2#ev-3", "#ev-4"}
