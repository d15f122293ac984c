"""The console's type filter in a real headless Chromium against gunicorn: it narrows a session
and a run across pages (every match once, nothing else), and live pages follow the same filter.

Screenshots go to test-screenshots/ (git-ignored) like test_ui_browser.py's, whose harness this
reuses (and whose skip, without Chromium, applies here too).
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from conftest import Server, start_server
# browser and visit are fixtures: imported so that this module's tests can ask for them by name.
from test_ui_browser import LIVE_MS, QUICK_KEEPALIVE, append, browser, sync_api, visit, wait_for  # noqa: F401

pytestmark = pytest.mark.slow
COMMON = ["user_message", "assistant_message", "tool_call", "tool_result", "state_update", "status"]
SESSION_EVENTS = 2300
RARE_EVERY = 11  # ``error`` at every 11th event: 209 of 2,300, two filtered pages of 200


def rare(n: int) -> bool:
    return n % RARE_EVERY == 3


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("console-filter")
    running = start_server(folder / "data", folder / "gunicorn.log", env=QUICK_KEEPALIVE)
    try:
        events = [{"type": "error" if rare(n) else COMMON[n % len(COMMON)], "payload": {"n": n}}
                  for n in range(SESSION_EVENTS)]
        for start in range(0, SESSION_EVENTS, 1000):
            append(running.url, "filter-1", events[start:start + 1000])
        run = [{"type": "run_created", "run_id": "run-f"}, {"type": "run_started", "run_id": "run-f"}]
        run += [{"type": "tool_policy_blocked" if n % 13 == 5 else ("tool_call", "tool_result")[n % 2],
                 "run_id": "run-f", "payload": {"n": n}} for n in range(450)]
        append(running.url, "filter-2", run + [{"type": "run_completed", "run_id": "run-f"}])
        yield running
    finally:
        running.stop()


def shown_rows(page) -> list[tuple[int, str]]:
    return [(int(row.get_attribute("id")[3:]), row.get_attribute("data-type"))
            for row in page.locator("#event-rows tr").all()]


def test_filter_to_a_rare_type_shows_every_match_once_across_pages(site, visit):
    seen = visit(f"{site.url}/ui/sessions/filter-1")
    page = seen.page
    assert page.locator("nav.pager span").first.inner_text() == "Page 1 of 12"
    page.locator("#type-filter summary").click()
    page.locator("[data-filter-none]").click()
    assert page.locator("#filter-apply").is_disabled()  # a filter of no type at all is not offered
    page.locator("#type-filter input[value=error]").check()
    seen.shot("session-filter-form-1280")
    page.locator("#filter-apply").click()
    page.wait_for_url(f"{site.url}/ui/sessions/filter-1?types=error")  # the form's types=error, spelled once
    assert page.locator("#filter-state").inner_text().startswith("Only error events: 200 on this page.")
    seen.shot("session-filtered-1280")
    shown = shown_rows(page)
    page.locator("nav.pager a[rel=next]").first.click()
    page.wait_for_url(re.compile(r"since_seq=\d+&types=error$"))
    shown += shown_rows(page)
    assert page.locator("a[rel=next]").count() == 0
    expected = [n + 1 for n in range(SESSION_EVENTS) if rare(n)]
    assert [seq for seq, _ in shown] == expected  # each once, in seq order, across both pages
    assert {event_type for _, event_type in shown} == {"error"}
    assert page.locator("#filter-state").inner_text().startswith(f"Only error events: {len(expected) - 200} ")
    wait_for(page, "#live-state[data-state=live]", LIVE_MS * 5)  # the list's last page follows the stream
    page.locator("#filter-clear").click()
    page.wait_for_url(f"{site.url}/ui/sessions/filter-1")
    assert page.locator("#event-rows tr").count() == 200
    narrow = visit(f"{site.url}/ui/sessions/filter-1?types=error", width=390)
    narrow.page.locator("#type-filter summary").click()
    narrow.shot("session-filtered-390")


def test_a_type_badge_narrows_a_run_to_its_type(site, visit):
    seen = visit(f"{site.url}/ui/runs/run-f")
    page = seen.page
    assert page.locator("#event-rows tr").count() == 200
    page.locator("#event-rows a.type", has_text="tool_policy_blocked").first.click()
    page.wait_for_url(f"{site.url}/ui/runs/run-f?types=tool_policy_blocked")
    expected = [n + 3 for n in range(450) if n % 13 == 5]  # spread over three unfiltered pages
    assert shown_rows(page) == [(seq, "tool_policy_blocked") for seq in expected]
    assert page.locator("#live-state").inner_text().startswith("Stream ended")
    # The timeline still draws the whole run; a mark of a type the filter hides links to its page.
    hidden = page.locator("svg a:has(rect[data-type=tool_call])").first.get_attribute("href")
    assert re.fullmatch(r"/ui/runs/run-f\?since_seq=\d+#ev-\d+", hidden)
    seen.shot("run-filtered-1280")


def test_a_filtered_live_page_shows_new_matching_events_only(site, visit):
    append(site.url, "live-filter-1", [{"type": "user_message"}, {"type": "error", "payload": {"at": "start"}}])
    seen = visit(f"{site.url}/ui/sessions/live-filter-1?types=error")
    page = seen.page
    wait_for(page, "#live-state[data-state=live]", LIVE_MS * 5)
    assert shown_rows(page) == [(2, "error")]
    (other,) = append(site.url, "live-filter-1", [{"type": "assistant_message"}])
    (match,) = append(site.url, "live-filter-1", [{"type": "error", "payload": {"at": "live"}}])
    wait_for(page, f"#ev-{match['seq']}", LIVE_MS)
    # The stream is in seq order: had the earlier, non-matching event come, it would be here by now.
    assert shown_rows(page) == [(2, "error"), (match["seq"], "error")]
    assert page.locator(f"#ev-{other['seq']}").count() == 0
    assert page.locator("#shown-count").inner_text() == "2"
    # An event named "error" is not the stream failing: the page stays live.
    assert page.locator("#live-state").get_attribute("data-state") == "live"
    seen.shot("session-filtered-live-1280")


def test_a_filtered_live_run_page_ends_with_its_run(site, visit):
    append(site.url, "live-filter-2", [{"type": "run_created", "run_id": "run-lf"},
                                       {"type": "run_started", "run_id": "run-lf"}])
    seen = visit(f"{site.url}/ui/runs/run-lf?types=tool_call")
    page = seen.page
    wait_for(page, "#live-state[data-state=live]", LIVE_MS * 5)
    assert page.locator("#no-events").is_visible()
    result, call = append(site.url, "live-filter-2", [{"type": "tool_result", "run_id": "run-lf"},
                                                      {"type": "tool_call", "run_id": "run-lf"}])
    wait_for(page, f"#ev-{call['seq']}", LIVE_MS)
    assert page.locator(f"#ev-{result['seq']}").count() == 0
    assert page.locator("#no-events").count() == 0
    # run_completed is filtered out, yet the stream ends with the run and the header follows it.
    append(site.url, "live-filter-2", [{"type": "run_completed", "run_id": "run-lf"}])
    wait_for(page, "#live-state[data-state=ended]", LIVE_MS * 2)
    sync_api.expect(page.locator("#run-status")).to_have_text("completed", timeout=LIVE_MS)
    assert shown_rows(page) == [(call["seq"], "tool_call")]
    seen.shot("run-filtered-live-ended-1280")


def test_an_unregistered_type_in_the_url_is_a_readable_page(site, visit):
    seen = visit(f"{site.url}/ui/sessions/filter-1?types=no_such_type", quiet_network=True)
    assert seen.page.locator("h1").inner_text() == "400 · Unknown event type"
    seen.shot("unknown-type-1280")
    seen.page.locator("#error-link").click()
    seen.page.wait_for_url(f"{site.url}/ui/sessions/filter-1")
    assert seen.errors == [] or all("400" in error for error in seen.errors)
