"""The console's pages through Flask's test client on a real store: what they show, their headers,
escaping of anything a payload holds, paging, 404 pages, and the summary and timeline rules."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventsvc import create_app
from eventsvc.ui.timeline import draw

OUR_TAGS = {"html", "head", "meta", "title", "link", "script", "body", "header", "a", "span", "nav", "form",
            "button", "main", "p", "h1", "h2", "dl", "div", "dt", "dd", "table", "thead", "tr", "th", "tbody",
            "td", "time", "details", "summary", "pre", "fieldset", "legend", "label", "input", "output",
            "figure", "svg", "rect", "line", "figcaption", "section", "code"}


class Page(HTMLParser):
    """Every tag, attribute value and text node of a page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.texts.append(data)


def post(client, session_id: str, events) -> list[dict]:
    response = client.post(f"/api/sessions/{session_id}/events", json=events)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["events"]


def lifecycle(run_id: str, *types: str) -> list[dict]:
    return [{"type": name, "run_id": run_id} for name in types]


def test_pages_carry_a_strict_content_security_policy(client):
    post(client, "s1", lifecycle("r1", "run_created"))
    for url in ("/ui/", "/ui/sessions/s1", "/ui/runs/r1", "/ui/runs/r1/live", "/ui/sessions/none",
                "/ui/static/console.js"):
        response = client.get(url)
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert "unsafe" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert client.get("/ui/static/console.js").mimetype == "text/javascript"


def test_pages_hold_no_inline_script_or_style(client):
    post(client, "s1", lifecycle("r1", "run_created", "run_started", "run_completed"))
    for url in ("/ui/", "/ui/sessions/s1", "/ui/runs/r1", "/ui/nowhere"):
        page = Page(client.get(url).get_data(as_text=True))
        scripts = [attrs for tag, attrs in page.tags if tag == "script"]
        assert scripts == [{"src": "/ui/static/console.js", "defer": None}]
        assert not [attrs for _, attrs in page.tags if "style" in attrs or any(k.startswith("on") for k in attrs)]


def test_ui_off_means_404(data_dir: Path):
    app = create_app({"DATA_DIR": str(data_dir), "UI": False})
    client = app.test_client()
    for url in ("/ui/", "/ui/static/console.css", "/ui/signin"):
        assert client.get(url).status_code == 404
    assert client.get("/healthz").status_code == 200
    app.extensions["eventsvc.store"].close()


@pytest.mark.parametrize(("url",), [("/ui/sessions/nobody",), ("/ui/runs/nothing",), ("/ui/sessions/bad%20id",),
                                    ("/ui/runs/r1?since_seq=abc",), ("/ui/sessions/s1?page=0",),
                                    ("/ui/sessions/s1?page=2",), ("/ui/no/such/page",), ("/ui/?cursor=garbage",)])
def test_unknown_things_are_readable_html_404_pages(client, url):
    post(client, "s1", lifecycle("r1", "run_created"))
    response = client.get(url)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert b'href="/ui/"' in response.data and b"404" in response.data


def test_sessions_are_listed_most_recently_active_first_and_paged(client):
    for number in range(30):
        post(client, f"s{number:02d}", [{"type": "user_message", "timestamp": f"2026-01-01T00:00:{number:02d}Z"}])
    post(client, "s05", [{"type": "session_closed", "timestamp": "2026-01-02T00:00:00Z"}])
    post(client, "s07", lifecycle("r7", "run_created", "run_started"))
    first = client.get("/ui/").get_data(as_text=True)
    order = [attrs["href"] for tag, attrs in Page(first).tags if tag == "a" and "/ui/sessions/" in attrs["href"]]
    assert order[:3] == ["/ui/sessions/s07", "/ui/sessions/s05", "/ui/sessions/s29"]
    assert len(order) == 25
    assert "?cursor=" in first
    cursor = first.split("?cursor=")[1].split('"')[0]
    second = client.get(f"/ui/?cursor={cursor}").get_data(as_text=True)
    rest = [attrs["href"] for tag, attrs in Page(second).tags if tag == "a" and "/ui/sessions/" in attrs["href"]]
    assert len(rest) == 5 and not set(rest) & set(order)
    assert "closed" in first


def test_session_events_are_paged_200_at_a_time(client):
    post(client, "big", [{"type": "status", "payload": {"n": n}} for n in range(450)])
    page_one = client.get("/ui/sessions/big").get_data(as_text=True)
    assert 'id="ev-200"' in page_one and 'id="ev-201"' not in page_one
    assert "data-stream" not in page_one  # live updates only on the last page
    last = client.get("/ui/sessions/big?page=3").get_data(as_text=True)
    assert 'id="ev-401"' in last and 'id="ev-450"' in last and 'id="ev-400"' not in last
    assert 'data-stream="/api/sessions/big/events/stream"' in last and 'data-last-seq="450"' in last


def test_run_page_shows_status_verify_policy_and_a_linked_timeline(client):
    post(client, "s1", lifecycle("r1", "run_created", "run_started") + [
        {"type": "tool_call", "run_id": "r1"}, {"type": "tool_policy_blocked", "run_id": "r1"},
        {"type": "tool_policy_warn", "run_id": "r1"}, {"type": "tool_policy_warn", "run_id": "r1"},
        {"type": "verify_start", "run_id": "r1"}, {"type": "verify_fail", "run_id": "r1"}])
    html = client.get("/ui/runs/r1").get_data(as_text=True)
    page = Page(html)
    assert "1 blocked" in html and "2 warned" in html
    assert 'id="run-status" data-badge="status">running<' in html
    assert 'id="run-verify" data-badge="verify">failed<' in html
    marks = [attrs for tag, attrs in page.tags if tag == "rect" and "data-seq" in attrs]
    assert [mark["data-type"] for mark in marks] == ["run_created", "run_started", "tool_call", "tool_policy_blocked",
                                                     "tool_policy_warn", "tool_policy_warn", "verify_start",
                                                     "verify_fail"]
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a" and attrs.get("class") == "mark-link"]
    assert links == [f"#ev-{seq}" for seq in range(1, 9)]
    assert 'data-stream="/api/runs/r1/events/stream"' in html
    fragment = client.get("/ui/runs/r1/live?since_seq=0").get_data(as_text=True)
    assert 'id="timeline"' in fragment and "<html" not in fragment


def test_a_long_run_links_marks_on_other_pages_to_their_page(client):
    post(client, "s1", lifecycle("r1", "run_created") + [{"type": "tool_call", "run_id": "r1"}] * 250)
    html = client.get("/ui/runs/r1").get_data(as_text=True)
    assert 'href="#ev-200"' in html
    assert 'href="/ui/runs/r1?since_seq=200#ev-201"' in html
    assert "data-stream" not in html
    assert 'id="ev-201"' in client.get("/ui/runs/r1?since_seq=200").get_data(as_text=True)


hostile_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=hostile_text, source=hostile_text.filter(lambda s: s.strip() == s and len(s) <= 64))
def test_whatever_a_payload_or_source_holds_is_shown_as_text(client, text, source):
    """Anything stored comes back out as text: no new tag or attribute, and the text itself is there."""
    stored = post(client, "hostile", [{"type": "user_message", "source": source, "payload": {text: text}}])[0]
    seq = stored["seq"]
    html = client.get(f"/ui/sessions/hostile?page={(seq - 1) // 200 + 1}").get_data(as_text=True)
    page = Page(html)
    assert {tag for tag, _ in page.tags} <= OUR_TAGS
    assert [attrs for tag, attrs in page.tags if tag == "script"] == [{"src": "/ui/static/console.js", "defer": None}]
    pretty = json.dumps({text: text}, ensure_ascii=False, indent=2)
    texts = "".join(page.texts)
    assert pretty.strip() in texts.replace("\r\n", "\n").replace("\r", "\n") or "\r" in text
    assert source in texts


# -- the rules the pages show ----------------------------------------------------------------

def event(seq: int, event_type: str, run_id: str | None = None, timestamp: str = "2026-01-01T00:00:00Z") -> dict:
    return {"seq": seq, "type": event_type, "run_id": run_id, "timestamp": timestamp}


@pytest.mark.parametrize(("types", "status", "verify"), [
    (["tool_call"], "unknown", None),
    (["run_created", "run_started", "run_waiting_input"], "waiting_input", None),
    (["run_started", "run_completed", "run_started"], "completed", None),
    (["run_started", "verify_start", "verify_fail"], "running", "failed"),
])
def test_session_and_run_pages_show_the_run_status_and_verify(client, types, status, verify):
    post(client, "s1", [{"type": name, "run_id": "r1"} for name in types])
    badges = (f'class="badge status-{status}" data-badge="status">{status.replace("_", " ")}<',
              f'class="badge verify-{verify or "none"}" data-badge="verify">{verify or "—"}<')
    session = client.get("/ui/sessions/s1").get_data(as_text=True)
    run = client.get("/ui/runs/r1").get_data(as_text=True).replace(' id="run-status"', "").replace(' id="run-verify"', "")
    for badge in badges:
        assert badge in session and badge in run


def test_timeline_bands_follow_phases_in_time():
    events = [event(1, "run_created", "r", "2026-01-01T00:00:00Z"), event(2, "run_started", "r", "2026-01-01T00:00:01Z"),
              event(3, "run_waiting_input", "r", "2026-01-01T00:00:05Z"),
              event(4, "run_resumed", "r", "2026-01-01T00:00:09Z"), event(5, "run_completed", "r", "2026-01-01T00:00:10Z"),
              event(6, "run_started", "r", "2026-01-01T00:00:10Z")]
    timeline = draw(events, href_for=lambda seq: f"#ev-{seq}")
    assert [band.phase for band in timeline.bands] == ["created", "running", "waiting_input", "running"]
    assert [round(band.width, 1) for band in timeline.bands] == [98.4, 393.6, 393.6, 98.4]
    assert [mark.seq for mark in timeline.marks] == [1, 2, 3, 4, 5]  # nothing after the terminal event


def test_timeline_of_events_at_one_instant_spreads_them_by_seq():
    events = [event(seq, name, "r") for seq, name in enumerate(["run_created", "tool_call", "tool_result"], 1)]
    xs = [mark.x for mark in draw(events, href_for=str).marks]
    assert xs == sorted(xs) and len(set(xs)) == 3


def test_a_session_with_many_runs_lists_the_first_ones(client, monkeypatch):
    from eventsvc.ui import views

    monkeypatch.setattr(views, "RUNS_SHOWN", 2)
    post(client, "s1", [{"type": "run_created", "run_id": f"r{n}"} for n in range(3)])
    html = client.get("/ui/sessions/s1").get_data(as_text=True)
    assert 'data-run-id="r1"' in html and 'data-run-id="r2"' not in html
    assert "The first 2 of 3 runs" in html


lifecycle_or_marks = st.sampled_from(["run_created", "run_started", "run_waiting_input", "run_resumed", "run_completed",
                                      "run_failed", "tool_call", "tool_result", "tool_policy_blocked",
                                      "tool_policy_warn", "verify_start", "verify_pass", "verify_fail", "state_update"])


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(lifecycle_or_marks, st.integers(0, 10**6)), max_size=40))
def test_timeline_stays_inside_its_picture_whatever_the_times(steps):
    """Any order of types and times (clocks can go backwards): every shape lies inside the SVG."""
    events = [event(seq, name, "r", f"2026-01-01T00:{offset // 60000 % 60:02d}:{offset // 1000 % 60:02d}."
                                    f"{offset % 1000:03d}Z") for seq, (name, offset) in enumerate(steps, 1)]
    timeline = draw(events, href_for=lambda seq: f"#ev-{seq}")
    for band in timeline.bands:
        assert 0 <= band.x and band.width > 0 and band.x + band.width <= timeline.width + 2
    for mark in timeline.marks:
        assert 0 <= mark.x <= timeline.width - mark.width and 0 <= mark.y <= timeline.height - mark.height
        assert mark.href == f"#ev-{mark.seq}" and mark.title.startswith(f"seq {mark.seq} · {mark.type}")
    assert {mark.type for mark in timeline.marks} <= {name for name, _ in steps}
