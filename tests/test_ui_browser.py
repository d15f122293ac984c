"""The console in a real headless Chromium (Debian's package, driven by Playwright) against gunicorn.

Every page is opened at 1280 px and 390 px and saved to test-screenshots/ (git-ignored) for a
reviewer to look at. Skipped, with one line saying why, where no Chromium is installed.
"""
from __future__ import annotations

import re
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from conftest import ROOT, Server, start_server

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("browser tests need Debian's chromium (apt-get install chromium; .ci/run installs it as root)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")

pytestmark = pytest.mark.slow
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "test-screenshots"
WIDTHS = (1280, 390)
LIVE_MS = 2000
# A stream's thread notices a browser that went away at its next keepalive: keep them short so
# stopping a server does not wait on streams of pages already closed.
QUICK_KEEPALIVE = {"EVENTSVC_SSE_KEEPALIVE": "1"}
XSS = ["<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "javascript:alert(1)"]


@dataclass
class Visit:
    """A page with what it said: console errors, uncaught exceptions, dialogs that opened."""

    page: object
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def visit(browser) -> Iterator:
    """Open a URL in a fresh browser context; every page must end with no console error and no dialog."""
    contexts, visits = [], []

    def _visit(url: str, *, width: int = 1280, context=None, quiet_network: bool = False) -> Visit:
        if context is None:
            context = browser.new_context(viewport={"width": width, "height": 900})
            contexts.append(context)
        page = context.new_page()
        seen = Visit(page)
        page.on("console", lambda message: message.type == "error" and seen.errors.append(message.text))
        page.on("pageerror", lambda error: seen.errors.append(str(error)))
        page.on("dialog", lambda dialog: (seen.dialogs.append(dialog.message), dialog.dismiss()))
        if not quiet_network:
            visits.append(seen)
        page.goto(url)
        return seen

    yield _visit
    for seen in visits:
        assert seen.dialogs == []
        assert seen.errors == []
    for context in contexts:
        context.close()


def wait_for(page, selector: str, timeout: float) -> None:
    """Wait for ``selector``; on a timeout, say what the page showed instead."""
    try:
        page.wait_for_selector(selector, timeout=timeout)
    except sync_api.TimeoutError:
        state = page.locator("#live-state").text_content() if page.locator("#live-state").count() else None
        rows = [row.get_attribute("id") for row in page.locator("#event-rows tr").all()]
        raise AssertionError(f"{selector!r} not within {timeout:.0f} ms; live state {state!r}, rows {rows}") from None


def append(server_url: str, session_id: str, events: list[dict], token: str | None = None) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.post(f"{server_url}/api/sessions/{session_id}/events", json=events, headers=headers,
                             timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["events"]


def seed(url: str) -> None:
    append(url, "support-chat-7", [
        {"type": "session_created", "source": "gateway"},
        {"type": "user_message", "payload": {"text": "Please refund order 1142"}},
        {"type": "run_created", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:00Z"},
        {"type": "run_started", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:01Z"},
        {"type": "tool_call", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:02Z",
         "payload": {"tool": "orders.lookup", "args": {"order": 1142}}},
        {"type": "tool_result", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:03Z",
         "payload": {"tool": "orders.lookup", "ok": True}},
        {"type": "tool_policy_warn", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:04Z",
         "payload": {"tool": "payments.refund", "reason": "amount above 100"}},
        {"type": "run_waiting_input", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:05Z"},
        {"type": "run_resumed", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:09Z"},
        {"type": "tool_policy_blocked", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:10Z",
         "payload": {"tool": "shell.exec"}},
        {"type": "verify_start", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:11Z"},
        {"type": "verify_pass", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:12Z"},
        {"type": "run_completed", "run_id": "run-refund-1", "timestamp": "2026-12-01T09:00:13Z"},
        {"type": "assistant_message", "payload": {"text": "Refunded."}},
        {"type": "run_created", "run_id": "run-followup-2"},
        {"type": "run_started", "run_id": "run-followup-2"},
    ])
    append(url, "hostile-1", [
        {"type": "user_message", "source": XSS[1], "payload": {"text": XSS[0], "html": XSS[1], "link": XSS[2]}},
        {"type": "run_created", "run_id": "javascript:alert", "payload": {XSS[1]: XSS[0]}},
    ])


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("console")
    running = start_server(folder / "data", folder / "gunicorn.log", env=QUICK_KEEPALIVE)
    try:
        seed(running.url)
        yield running
    finally:
        running.stop()


def test_each_page_renders_its_data_at_both_widths(site, visit):
    for width in WIDTHS:
        listing = visit(f"{site.url}/ui/", width=width)
        rows = listing.page.locator("table.sessions tbody tr")
        assert rows.count() == 2
        assert "support-chat-7" in rows.nth(0).inner_text() or "support-chat-7" in rows.nth(1).inner_text()
        listing.shot(f"sessions-{width}")

        session = visit(f"{site.url}/ui/sessions/support-chat-7", width=width)
        assert session.page.locator("#event-rows tr").count() == 16
        refund = session.page.locator("#run-rows tr[data-run-id='run-refund-1']")
        assert refund.locator("[data-badge=status]").inner_text() == "completed"
        assert refund.locator("[data-badge=verify]").inner_text() == "passed"
        follow_up = session.page.locator("#run-rows tr[data-run-id='run-followup-2'] [data-badge=status]")
        assert follow_up.inner_text() == "running"
        assert session.page.locator("#ev-5 .type").inner_text() == "tool_call"
        assert "cat-legacy" in session.page.locator("#ev-5 .type").get_attribute("class")
        assert "cat-tool_policy" in session.page.locator("#ev-7 .type").get_attribute("class")
        session.shot(f"session-{width}")
        session.page.locator("#ev-5 td.id a").click()
        session.page.wait_for_url(re.compile(r"/ui/runs/run-refund-1$"))

        run = visit(f"{site.url}/ui/runs/run-refund-1", width=width)
        page = run.page
        assert page.locator("#run-status").inner_text() == "completed"
        assert page.locator("#run-verify").inner_text() == "passed"
        facts = page.locator("dl.facts").inner_text()
        assert "1 blocked" in facts and "1 warned" in facts and "13.0 s" in facts
        assert "2026-12-01 09:00:00 UTC" in facts and "2026-12-01 09:00:13 UTC" in facts
        assert page.locator("#live-state").inner_text().startswith("Stream ended")
        assert {band.get_attribute("class") for band in page.locator("svg .band").all()} == {
            "band band-created", "band band-running", "band band-waiting_input"}
        marks = {mark.get_attribute("data-type"): mark for mark in page.locator("svg rect.mark").all()}
        for kind in ("tool_call", "tool_result", "tool_policy_blocked", "tool_policy_warn",
                     "verify_start", "verify_pass"):
            assert kind in marks
        blocked = marks["tool_policy_blocked"]
        assert blocked.locator("title").text_content().startswith("seq 10 · tool_policy_blocked")
        blocked.hover()
        assert page.locator("svg a:has(rect[data-seq='10'])").get_attribute("href") == "#ev-10"
        page.locator("svg a:has(rect[data-seq='10'])").click()
        page.wait_for_url(re.compile("#ev-10$"))
        assert page.locator("#event-rows tr").count() == 11
        run.shot(f"run-{width}")


def test_unknown_session_and_run_are_readable_404_pages(site, visit):
    for path in ("/ui/sessions/nobody", "/ui/runs/no-such-run", "/ui/nothing-here"):
        seen = visit(f"{site.url}{path}", quiet_network=True)
        assert seen.page.locator("h1").inner_text().startswith("404")
        assert seen.page.locator("a[href='/ui/']").count() >= 1
    seen.shot("not-found-1280")


def test_payload_preview_expands_to_pretty_json(site, visit):
    seen = visit(f"{site.url}/ui/sessions/support-chat-7")
    row = seen.page.locator("#ev-5")
    assert row.locator("summary").inner_text() == '{"tool":"orders.lookup","args":{"order":1142}}'
    assert row.locator("pre").is_hidden()
    row.locator("summary").click()
    assert row.locator("pre").is_visible()
    assert row.locator("pre").inner_text() == '{\n  "tool": "orders.lookup",\n  "args": {\n    "order": 1142\n  }\n}'
    seen.shot("payload-expanded-1280")


def test_hostile_payloads_render_as_text_and_open_no_dialog(site, visit):
    for path in ("/ui/sessions/hostile-1", "/ui/runs/javascript:alert", "/ui/"):
        seen = visit(f"{site.url}{path}")
        page = seen.page
        assert page.locator("img").count() == 0
        assert page.locator("[onerror]").count() == 0
        assert page.locator("a[href^='javascript']").count() == 0
        assert page.locator("body script").count() == 0
    session = visit(f"{site.url}/ui/sessions/hostile-1")
    text = session.page.locator("#ev-1").inner_text()
    assert XSS[1] in text and XSS[0] in text
    session.page.locator("#ev-1 summary").click()
    assert XSS[2] in session.page.locator("#ev-1 pre").inner_text()
    # Live too: a hostile event arriving over the stream is text as well.
    session.page.wait_for_selector("#live-state[data-state=live]", timeout=LIVE_MS * 3)
    append(site.url, "hostile-1", [{"type": "assistant_message", "source": XSS[0], "payload": {"x": XSS[1]}}])
    session.page.wait_for_selector("#ev-3", timeout=LIVE_MS)
    assert XSS[0] in session.page.locator("#ev-3 td.source").inner_text()
    assert session.page.locator("img").count() == 0
    session.shot("hostile-1280")


def test_live_event_appears_and_run_completed_turns_the_badge(site, visit):
    append(site.url, "live-1", [{"type": "run_created", "run_id": "run-live-1"},
                                {"type": "run_started", "run_id": "run-live-1"}])
    seen = visit(f"{site.url}/ui/runs/run-live-1")
    page = seen.page
    wait_for(page, "#live-state[data-state=live]", LIVE_MS * 5)
    assert page.locator("#run-status").inner_text() == "running"
    call = append(site.url, "live-1", [{"type": "tool_call", "run_id": "run-live-1", "payload": {"tool": "grep"}}])
    wait_for(page, f"#ev-{call[0]['seq']}", LIVE_MS)
    page.wait_for_selector(f"svg rect[data-seq='{call[0]['seq']}']", timeout=LIVE_MS)
    done = append(site.url, "live-1", [{"type": "run_completed", "run_id": "run-live-1"}])
    wait_for(page, f"#ev-{done[0]['seq']}", LIVE_MS)
    page.wait_for_function("document.getElementById('run-status').textContent === 'completed'", timeout=LIVE_MS)
    page.wait_for_selector("#live-state[data-state=ended]", timeout=LIVE_MS)
    assert page.locator("#event-rows tr").count() == 4
    seen.shot("run-live-ended-1280")


def test_sign_in_with_a_token_and_a_cookie_only_post_is_refused(tmp_path, visit, browser):
    token, reader = "console-secret-token-1234", "reader-token-5678"
    running = start_server(tmp_path / "data", tmp_path / "gunicorn.log",
                           env={"EVENTSVC_API_TOKENS": token, "EVENTSVC_READ_TOKENS": reader, **QUICK_KEEPALIVE})
    try:
        append(running.url, "private-1", [{"type": "run_created", "run_id": "run-p"},
                                          {"type": "run_started", "run_id": "run-p"}], token=token)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        seen = visit(f"{running.url}/ui/runs/run-p", context=context)
        page = seen.page
        assert page.url.startswith(f"{running.url}/ui/signin")
        seen.shot("signin-1280")
        page.fill("#token", "wrong-token")
        page.click("button[type=submit]")
        assert "not valid" in page.locator("p.error").inner_text()
        assert page.locator("#token").input_value() == ""
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{running.url}/ui/runs/run-p")
        (cookie,) = context.cookies()
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Strict", False)
        assert token not in page.content() and token not in page.url
        page.wait_for_selector("#live-state[data-state=live]", timeout=LIVE_MS * 3)  # the stream took the cookie
        # A write carrying only the cookie, from the page itself and from outside: refused, nothing stored.
        status = context.request.post(f"{running.url}/api/sessions/private-1/events",
                                      data={"type": "user_message"}).status  # the browser's own cookie jar
        assert status == 401
        outside = requests.post(f"{running.url}/api/sessions/private-1/events", json={"type": "user_message"},
                                cookies={cookie["name"]: cookie["value"]}, timeout=10)
        assert outside.status_code == 401
        events = requests.get(f"{running.url}/api/sessions/private-1/events",
                              headers={"Authorization": f"Bearer {reader}"}, timeout=10).json()["events"]
        assert [event["type"] for event in events] == ["run_created", "run_started"]
        page.click("text=Sign out")
        page.wait_for_url(f"{running.url}/ui/signin")
        assert context.cookies() == []
        page.goto(f"{running.url}/ui/")
        assert page.url.startswith(f"{running.url}/ui/signin")
        page.close()
    finally:
        running.stop()
    assert token not in running.log() and reader not in running.log()


def test_server_restart_under_an_open_run_page_shows_every_event_once(tmp_path, visit):
    data, log = tmp_path / "data", tmp_path / "gunicorn.log"
    running = start_server(data, log, env=QUICK_KEEPALIVE)
    port = int(running.url.rsplit(":", 1)[1])
    try:
        append(running.url, "restart-1", [{"type": "run_created", "run_id": "run-r"},
                                          {"type": "run_started", "run_id": "run-r"}])
        seen = visit(f"{running.url}/ui/runs/run-r", quiet_network=True)
        page = seen.page
        wait_for(page, "#live-state[data-state=live]", LIVE_MS * 5)
        append(running.url, "restart-1", [{"type": "tool_call", "run_id": "run-r"}])
        wait_for(page, "#ev-3", LIVE_MS * 5)
        running.stop(signal.SIGKILL)  # a crash: no goodbye on the open stream
        wait_for(page, "#live-state[data-state=reconnecting]", LIVE_MS * 5)
        seen.shot("run-reconnecting-1280")
        running = start_server(data, log, env=QUICK_KEEPALIVE, port=port)
        append(running.url, "restart-1", [{"type": "tool_result", "run_id": "run-r"},
                                          {"type": "tool_call", "run_id": "run-r"}])
        wait_for(page, "#live-state[data-state=live]", LIVE_MS * 5)
        append(running.url, "restart-1", [{"type": "run_completed", "run_id": "run-r"}])
        wait_for(page, "#live-state[data-state=ended]", LIVE_MS * 5)
        shown = [row.get_attribute("id") for row in page.locator("#event-rows tr").all()]
        assert shown == ["ev-1", "ev-2", "ev-3", "ev-4", "ev-5", "ev-6"]
        assert page.locator("#run-status").inner_text() == "completed"
        assert seen.dialogs == []
        # The stop cuts the open stream and refuses the first reconnects: network errors, and only those.
        assert [error for error in seen.errors if "net::ERR_" not in error] == []
    finally:
        running.stop()
