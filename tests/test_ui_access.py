"""The console's sign-in and its cookie: reads only, never a write; no token in a URL, page or header echo.

Through Flask's test client on a real store; the browser flow is in test_ui_browser.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from eventsvc import create_app
from eventsvc.tokens import COOKIE_NAME

RW, RO = "rw-console-Qe81x", "ro-console-Lm42c"
EVENTS_URL = "/api/sessions/s1/events"


@pytest.fixture
def secured_app(data_dir: Path):
    app = create_app({"DATA_DIR": str(data_dir), "API_TOKENS": RW, "READ_TOKENS": RO})
    client = app.test_client()
    assert client.post(EVENTS_URL, json={"type": "run_created", "run_id": "r1"},
                       headers={"Authorization": f"Bearer {RW}"}).status_code == 201
    yield app
    app.extensions["eventsvc.store"].close()


@pytest.fixture
def browser(secured_app):
    """A client that keeps cookies, like a browser."""
    return secured_app.test_client()


def sign_in(client, token: str, **form: str):
    return client.post("/ui/signin", data={"token": token, **form})


def stored_types(app) -> list[str]:
    return [event["type"] for event in app.extensions["eventsvc.store"].get_events_by_session("s1")]


def test_pages_ask_for_sign_in_and_remember_the_page(browser):
    response = browser.get("/ui/runs/r1?since_seq=0")
    assert response.status_code == 303
    assert response.headers["Location"] == "/ui/signin?next=%2Fui%2Fruns%2Fr1%3Fsince_seq%3D0"
    form = browser.get(response.headers["Location"])
    assert form.status_code == 200 and b'type="password"' in form.data
    assert b'value="/ui/runs/r1?since_seq=0"' in form.data


@pytest.mark.parametrize(("token",), [(RW,), (RO,)])
def test_sign_in_sets_an_http_only_strict_cookie_and_goes_back(browser, token):
    response = sign_in(browser, token, next="/ui/runs/r1")
    assert response.status_code == 303 and response.headers["Location"] == "/ui/runs/r1"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    page = browser.get("/ui/runs/r1")
    assert page.status_code == 200
    assert token.encode() not in page.data


def test_cookie_is_secure_over_https(secured_app):
    client = secured_app.test_client()
    response = client.post("/ui/signin", data={"token": RO}, base_url="https://console.example")
    assert "Secure" in response.headers["Set-Cookie"]


@pytest.mark.parametrize(("token",), [("",), ("wrong",), (RW + "x",), ("x" * 5000,)])
def test_a_bad_token_gets_the_form_again_without_a_cookie_or_an_echo(browser, token):
    response = sign_in(browser, token)
    assert response.status_code == 200
    assert b"not valid" in response.data
    assert "Set-Cookie" not in response.headers
    assert token.encode() not in response.data or not token
    assert browser.get("/ui/").status_code == 303


@pytest.mark.parametrize(("next_path",), [("//evil.example/ui/",), ("https://evil.example/",), ("/api/x",),
                                          ("/ui/\\evil",), ("/ui//evil.example",), ("javascript:alert(1)",)])
def test_sign_in_never_sends_the_browser_to_another_site(browser, next_path):
    assert sign_in(browser, RO, next=next_path).headers["Location"] == "/ui/"


def test_a_form_posted_from_another_site_cannot_sign_in(browser):
    response = browser.post("/ui/signin", data={"token": RO}, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers


def test_the_cookie_authorises_api_reads_and_streams(browser):
    sign_in(browser, RO)
    assert browser.get(EVENTS_URL).status_code == 200
    assert browser.get("/api/runs/r1/events").status_code == 200
    stream = browser.get("/api/runs/r1/events/stream?until_seq=1")
    assert stream.status_code == 200 and b"event: run_created" in stream.data


@pytest.mark.parametrize(("token",), [(RW,), (RO,), ("unknown",)])
def test_a_write_carrying_only_the_cookie_is_refused_whatever_it_holds(secured_app, token):
    client = secured_app.test_client()
    client.set_cookie(COOKIE_NAME, token)
    for body in ({"type": "user_message"}, [{"type": "user_message"}]):
        response = client.post(EVENTS_URL, json=body)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert stored_types(secured_app) == ["run_created"]


def test_a_bad_header_is_not_rescued_by_a_good_cookie(secured_app):
    client = secured_app.test_client()
    client.set_cookie(COOKIE_NAME, RW)
    assert client.get(EVENTS_URL, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post(EVENTS_URL, json={"type": "status"}, headers={"Authorization": f"Bearer {RW}"}).status_code == 201


def test_an_unknown_cookie_authorises_nothing(secured_app):
    client = secured_app.test_client()
    client.set_cookie(COOKIE_NAME, "unknown")
    assert client.get(EVENTS_URL).status_code == 401
    assert client.get("/ui/").status_code == 303


def test_sign_out_clears_the_cookie(browser):
    sign_in(browser, RO)
    assert browser.get("/ui/").status_code == 200
    response = browser.post("/ui/signout")
    assert response.status_code == 303 and response.headers["Location"] == "/ui/signin"
    assert f"{COOKIE_NAME}=;" in response.headers["Set-Cookie"]
    assert browser.get("/ui/").status_code == 303
    assert browser.get(EVENTS_URL).status_code == 401


def test_without_tokens_there_is_no_sign_in(client):
    assert client.get("/ui/").status_code == 200
    assert client.get("/ui/signin").status_code == 404
    assert client.post("/ui/signin", data={"token": "x"}).status_code == 404
    assert client.post("/ui/signout").status_code == 404
