"""Access control: bearer tokens and their scopes, the open API, hardened JSON responses,
the refusal to serve an open API beyond loopback, and tokens kept out of the logs.

Tokens come from ``create_app({"API_TOKENS": ..., "READ_TOKENS": ..., "TOKENS_FILE": ...})``
and, in real gunicorn processes on 127.0.0.1, from the ``EVENTSVC_*`` environment.
Off-loopback binds use 0.0.0.0 and must be refused before the socket is bound; the one that
is allowed to start is stopped by PID at once and never sent traffic.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from eventsvc import config as settings
from eventsvc import create_app

from conftest import ROOT, free_port, start_server

RW, RO = "rw-token-Jq8d2k", "ro-token-Zp3x7m"
UNKNOWN = "not-a-configured-token"
SESSION_URL = "/api/sessions/s1/events"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_json_headers(response) -> None:
    assert response.headers["Content-Type"] == "application/json", response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff", response.headers


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert_json_headers(response)
    body = response.get_json()
    assert set(body) == {"error"}
    assert {"code", "message"} <= set(body["error"]) <= {"code", "message", "details", "request_id"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def assert_unauthorized(response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer"), response.headers


@pytest.fixture
def secured_app(data_dir: Path):
    app = create_app({"DATA_DIR": str(data_dir), "API_TOKENS": RW, "READ_TOKENS": RO})
    yield app
    app.extensions["eventsvc.store"].close()


@pytest.fixture
def secured(secured_app):
    """A test client of an app with one read-write and one read-only token; s1 holds one event."""
    client = secured_app.test_client()
    response = client.post(SESSION_URL, json={"type": "run_started", "run_id": "r1"}, headers=bearer(RW))
    assert response.status_code == 201, response.get_data()
    return client


# -- scopes ----------------------------------------------------------------------------------

def test_read_write_token_may_append_and_read(secured):
    posted = secured.post(SESSION_URL, json={"type": "status", "payload": {"n": 2}}, headers=bearer(RW))
    assert posted.status_code == 201
    assert posted.get_json()["seq"] == 2
    read = secured.get(SESSION_URL, headers=bearer(RW))
    assert read.status_code == 200
    assert [e["seq"] for e in read.get_json()["events"]] == [1, 2]


@pytest.mark.parametrize("url", [SESSION_URL, "/api/runs/r1/events", "/api/event-types",
                                 SESSION_URL + "?since_seq=0&limit=5"])
def test_read_only_token_may_read(secured, url):
    response = secured.get(url, headers=bearer(RO))
    assert response.status_code == 200, response.get_data()
    assert_json_headers(response)


@pytest.mark.parametrize("body", [{"type": "status"}, [{"type": "status"}, {"type": "status"}],
                                  {"type": "no_such_type"}, "not even an object"])
def test_read_only_token_on_a_write_is_403_forbidden_and_stores_nothing(secured, body):
    response = secured.post(SESSION_URL, json=body, headers=bearer(RO))
    assert_error(response, 403, "forbidden")
    events = secured.get(SESSION_URL, headers=bearer(RO)).get_json()["events"]
    assert [e["seq"] for e in events] == [1]


def test_read_only_token_on_a_new_session_creates_nothing(secured, data_dir):
    assert_error(secured.post("/api/sessions/fresh/events", json={"type": "status"}, headers=bearer(RO)),
                 403, "forbidden")
    assert not (data_dir / "segments" / "fresh").exists()
    assert_error(secured.get("/api/sessions/fresh/events", headers=bearer(RO)), 404, "not_found")


# -- missing, unknown and malformed credentials ------------------------------------------------

MALFORMED = [
    ("missing", None),
    ("empty", ""),
    ("scheme only", "Bearer"),
    ("scheme and space", "Bearer "),
    ("unknown token", f"Bearer {UNKNOWN}"),
    ("read-write token without scheme", RW),
    ("basic scheme", f"Basic {RW}"),
    ("token scheme", f"Token {RW}"),
    ("prefix of a token", f"Bearer {RW[:-1]}"),
    ("token with a suffix", f"Bearer {RW}x"),
    ("two tokens", f"Bearer {RW} {RO}"),
    ("token glued to the scheme", f"Bearer{RW}"),
    ("comma-joined tokens", f"Bearer {RW},{RO}"),
    ("digest of a token", f"Bearer sha256:{hashlib.sha256(RW.encode()).hexdigest()}"),
    ("non-ascii", "Bearer t\u00f6ken"),
]


@pytest.mark.parametrize(("name", "header"), MALFORMED, ids=[name for name, _ in MALFORMED])
@pytest.mark.parametrize(("method", "url"), [("GET", SESSION_URL), ("POST", SESSION_URL),
                                             ("GET", "/api/runs/r1/events"), ("GET", "/api/event-types"),
                                             ("GET", "/api/no-such-route"), ("DELETE", SESSION_URL)])
def test_missing_unknown_or_malformed_credentials_are_401(secured, data_dir, name, header, method, url):
    before = sorted(p.read_bytes() for p in (data_dir / "segments").rglob("*.jsonl"))
    headers = {} if header is None else {"Authorization": header}
    response = secured.open(url, method=method, headers=headers, json={"type": "status"})
    assert_unauthorized(response)
    assert sorted(p.read_bytes() for p in (data_dir / "segments").rglob("*.jsonl")) == before


def test_bearer_scheme_is_case_insensitive(secured):
    # RFC 7235: the auth-scheme is case-insensitive.
    assert secured.get(SESSION_URL, headers={"Authorization": f"bearer {RW}"}).status_code == 200
    assert secured.get(SESSION_URL, headers={"Authorization": f"BEARER {RO}"}).status_code == 200


def test_401_does_not_reveal_which_routes_or_sessions_exist(secured):
    # The same request id on all three, so that the bodies may be compared byte for byte.
    unknown_route = secured.get("/api/no-such-route", headers={"X-Request-ID": "r1"})
    unknown_session = secured.get("/api/sessions/nobody/events", headers={"X-Request-ID": "r1"})
    known_session = secured.get(SESSION_URL, headers={"X-Request-ID": "r1"})
    bodies = {r.get_data() for r in (unknown_route, unknown_session, known_session)}
    assert len(bodies) == 1
    for response in (unknown_route, unknown_session, known_session):
        assert_unauthorized(response)


def test_healthz_stays_open(secured):
    response = secured.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert_json_headers(response)
    assert secured.get("/healthz", headers=bearer(UNKNOWN)).status_code == 200


def test_with_no_token_the_api_is_open(client):
    posted = client.post(SESSION_URL, json={"type": "status"})
    assert posted.status_code == 201
    assert client.get(SESSION_URL).status_code == 200
    # A stray header on an open API does no harm.
    assert client.get(SESSION_URL, headers=bearer(UNKNOWN)).status_code == 200


def test_read_tokens_alone_secure_the_api(data_dir):
    app = create_app({"DATA_DIR": str(data_dir), "READ_TOKENS": RO})
    client = app.test_client()
    assert_unauthorized(client.post(SESSION_URL, json={"type": "status"}))
    assert_error(client.post(SESSION_URL, json={"type": "status"}, headers=bearer(RO)), 403, "forbidden")
    assert_error(client.get(SESSION_URL, headers=bearer(RO)), 404, "not_found")
    app.extensions["eventsvc.store"].close()


def test_comma_separated_tokens_are_trimmed_and_each_one_works(data_dir):
    app = create_app({"DATA_DIR": str(data_dir), "API_TOKENS": " alpha-1 , beta-2,,", "READ_TOKENS": "gamma-3 ,"})
    client = app.test_client()
    assert client.post(SESSION_URL, json={"type": "status"}, headers=bearer("alpha-1")).status_code == 201
    assert client.post(SESSION_URL, json={"type": "status"}, headers=bearer("beta-2")).status_code == 201
    assert_error(client.post(SESSION_URL, json={"type": "status"}, headers=bearer("gamma-3")), 403, "forbidden")
    assert client.get(SESSION_URL, headers=bearer("gamma-3")).status_code == 200
    assert_unauthorized(client.get(SESSION_URL, headers=bearer("")))
    assert_unauthorized(client.get(SESSION_URL, headers=bearer(" alpha-1 ,")))
    app.extensions["eventsvc.store"].close()


def test_tokens_from_the_environment(data_dir, monkeypatch):
    monkeypatch.setenv("EVENTSVC_API_TOKENS", RW)
    monkeypatch.setenv("EVENTSVC_READ_TOKENS", RO)
    app = create_app({"DATA_DIR": str(data_dir)})
    client = app.test_client()
    assert_unauthorized(client.post(SESSION_URL, json={"type": "status"}))
    assert client.post(SESSION_URL, json={"type": "status"}, headers=bearer(RW)).status_code == 201
    assert_error(client.post(SESSION_URL, json={"type": "status"}, headers=bearer(RO)), 403, "forbidden")
    assert client.get(SESSION_URL, headers=bearer(RO)).status_code == 200
    app.extensions["eventsvc.store"].close()


# -- the tokens file ---------------------------------------------------------------------------

def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


TOKENS_FILE = f"""\
# eventsvc tokens: one 'TOKEN SCOPE' per line
plain-writer rw
plain-reader ro   # trailing comment

sha256:{sha256_hex("hashed-writer")} rw
   sha256:{sha256_hex("hashed-reader").upper()}    ro
# commented-out rw
"""


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKENS_FILE, encoding="utf-8")
    path.chmod(0o600)
    return path


FILE_CASES = [
    ("plain-writer", 201),
    ("plain-reader", 403),
    ("hashed-writer", 201),
    ("hashed-reader", 403),
    (f"sha256:{sha256_hex('hashed-writer')}", 401),  # the digest is not itself a token
    ("commented-out", 401),
    ("#", 401),
    ("rw", 401),
]


@pytest.mark.parametrize(("token", "post_status"), FILE_CASES, ids=[token[:20] for token, _ in FILE_CASES])
@pytest.mark.parametrize("via", ["config", "environment"])
def test_tokens_file_plain_digests_comments_and_scopes(data_dir, tokens_file, monkeypatch, via, token, post_status):
    if via == "environment":
        monkeypatch.setenv("EVENTSVC_TOKENS_FILE", str(tokens_file))
        app = create_app({"DATA_DIR": str(data_dir)})
    else:
        app = create_app({"DATA_DIR": str(data_dir), "TOKENS_FILE": str(tokens_file)})
    client = app.test_client()
    posted = client.post(SESSION_URL, json={"type": "status"}, headers=bearer(token))
    read = client.get("/api/event-types", headers=bearer(token))
    if post_status == 201:
        assert posted.status_code == 201, posted.get_data()
        assert read.status_code == 200
    elif post_status == 403:
        assert_error(posted, 403, "forbidden")
        assert read.status_code == 200
    else:
        assert_unauthorized(posted)
        assert_unauthorized(read)
    app.extensions["eventsvc.store"].close()


def test_tokens_file_adds_to_the_token_variables(data_dir, tokens_file):
    app = create_app({"DATA_DIR": str(data_dir), "TOKENS_FILE": str(tokens_file), "API_TOKENS": RW})
    client = app.test_client()
    assert client.post(SESSION_URL, json={"type": "status"}, headers=bearer(RW)).status_code == 201
    assert client.post(SESSION_URL, json={"type": "status"}, headers=bearer("plain-writer")).status_code == 201
    app.extensions["eventsvc.store"].close()


@pytest.mark.parametrize("line", ["token-without-scope", "token admin", "two tokens rw", "token RW"])
def test_tokens_file_with_a_bad_line_refuses_to_start(data_dir, tmp_path, line):
    path = tmp_path / "tokens"
    path.write_text(f"good rw\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r":2\b"):
        create_app({"DATA_DIR": str(data_dir), "TOKENS_FILE": str(path)})


# -- JSON responses are hardened -----------------------------------------------------------------

def hardened_cases(client, data_dir: Path) -> list[tuple[str, object, int]]:
    post = lambda body, **kw: client.post(SESSION_URL, json=body, **kw)  # noqa: E731
    first = post({"type": "status", "event_id": "e-1"})
    return [
        ("201 append", first, 201),
        ("200 resend", post({"type": "status", "event_id": "e-1"}), 200),
        ("201 batch", post([{"type": "status"}, {"type": "run_started", "run_id": "r1"}]), 201),
        ("200 session", client.get(SESSION_URL), 200),
        ("200 run", client.get("/api/runs/r1/events"), 200),
        ("200 event types", client.get("/api/event-types"), 200),
        ("200 healthz", client.get("/healthz"), 200),
        ("400 malformed", client.post(SESSION_URL, data=b"{", content_type="application/json"), 400),
        ("404 route", client.get("/no/such/route"), 404),
        ("404 api route", client.get("/api/no/such/route"), 404),
        ("404 session", client.get("/api/sessions/nobody/events"), 404),
        ("404 run", client.get("/api/runs/nobody/events"), 404),
        ("405 method", client.delete(SESSION_URL), 405),
        ("405 put", client.put("/api/event-types"), 405),
        ("409 seq", post({"type": "status", "seq": 99}), 409),
        ("409 event id", post({"type": "user_message", "event_id": "e-1"}), 409),
        ("413 event", post({"type": "status", "payload": {"x": "y" * 5000}}), 413),
        ("413 request", client.post(SESSION_URL, data=b"[" + b" " * 70_000 + b"]",
                                    content_type="application/json"), 413),
        ("415 media type", client.post(SESSION_URL, data=b"{}", content_type="text/plain"), 415),
        ("415 no media type", client.post(SESSION_URL, data=b"{}"), 415),
        ("422 validation", post({"type": "status", "bogus": 1}), 422),
        ("422 query", client.get(SESSION_URL + "?limit=0"), 422),
    ]


def test_every_json_response_is_application_json_with_nosniff(data_dir):
    app = create_app({"DATA_DIR": str(data_dir), "MAX_EVENT_BYTES": 4096, "MAX_REQUEST_BYTES": 65536})
    client = app.test_client()
    for name, response, status in hardened_cases(client, data_dir):
        assert response.status_code == status, (name, response.get_data())
        assert response.headers.get("Content-Type") == "application/json", (name, dict(response.headers))
        assert response.headers.get("X-Content-Type-Options") == "nosniff", (name, dict(response.headers))
        response.get_json()  # parses
    app.extensions["eventsvc.store"].close()


def test_auth_errors_are_application_json_with_nosniff(secured):
    assert_unauthorized(secured.get(SESSION_URL))
    assert_error(secured.post(SESSION_URL, json={"type": "status"}, headers=bearer(RO)), 403, "forbidden")


def test_error_messages_are_json_escaped_not_echoed_raw(client):
    hostile = "<script>alert(1)</script>"
    response = client.post(SESSION_URL, data=b"{}", content_type=f"text/html; x={hostile}")
    assert_error(response, 415, "unsupported_media_type")
    response = client.post(SESSION_URL, json={"type": hostile})
    assert_error(response, 422, "validation_error")
    assert response.get_json()["error"]["details"]


# -- real gunicorn: tokens from the environment, the warning, the access log -------------------

def test_real_server_takes_tokens_from_the_environment_and_never_logs_them(tmp_path, tokens_file):
    hashed_only = "hashed-writer"
    log_path = tmp_path / "gunicorn.log"
    server = start_server(tmp_path / "data", log_path, env={
        "EVENTSVC_API_TOKENS": RW, "EVENTSVC_READ_TOKENS": RO, "EVENTSVC_TOKENS_FILE": str(tokens_file),
        "EVENTSVC_LOG_LEVEL": "debug"})
    try:
        url = f"{server.url}/api/sessions/s1/events"
        with requests.Session() as http:
            assert http.post(url, json={"type": "status"}, headers=bearer(RW), timeout=10).status_code == 201
            assert http.post(url, json={"type": "status"}, headers=bearer(hashed_only), timeout=10).status_code == 201
            assert http.get(url, headers=bearer(RO), timeout=10).status_code == 200
            assert http.get(url, headers=bearer("plain-reader"), timeout=10).status_code == 200
            forbidden = http.post(url, json={"type": "status"}, headers=bearer(RO), timeout=10)
            assert forbidden.status_code == 403
            assert forbidden.headers["Content-Type"] == "application/json"
            assert forbidden.headers["X-Content-Type-Options"] == "nosniff"
            assert forbidden.json()["error"]["code"] == "forbidden"
            for response in (http.get(url, timeout=10), http.get(url, headers=bearer(UNKNOWN), timeout=10)):
                assert response.status_code == 401
                assert response.json()["error"]["code"] == "unauthorized"
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert http.get(f"{server.url}/healthz", timeout=10).status_code == 200
            # Also a token where it does not belong: in a query string.
            http.get(url, params={"access_token": RW}, headers=bearer(RW), timeout=10)
            http.get(f"{server.url}/api/no-such-route", headers=bearer(RW), timeout=10)
    finally:
        server.stop()
    log = log_path.read_text(errors="replace")
    assert '"POST /api/sessions/s1/events" 201' in log  # the access log is written...
    assert '"GET /api/sessions/s1/events" 401' in log
    for secret in (RW, RO, UNKNOWN, hashed_only, "plain-reader", "Bearer", "Authorization"):
        assert secret not in log, f"{secret!r} is in the gunicorn log"  # ...and carries no credential
    # Tokens are configured: no "the API is open" warning.
    assert "open to anyone" not in log


def test_real_server_without_tokens_warns_once_that_the_api_is_open(tmp_path):
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=2,
                          env={"EVENTSVC_API_TOKENS": "", "EVENTSVC_READ_TOKENS": "", "EVENTSVC_TOKENS_FILE": ""})
    try:
        assert requests.post(f"{server.url}{SESSION_URL}", json={"type": "status"}, timeout=10).status_code == 201
    finally:
        server.stop()
    warnings = [line for line in server.log().splitlines() if "EVENTSVC_API_TOKENS" in line]
    assert len(warnings) == 1, warnings
    assert "WARNING" in warnings[0]


# -- refusing to serve an open API beyond loopback ---------------------------------------------

def _clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTSVC_")}
    env.pop("GUNICORN_CMD_ARGS", None)
    return {**env, **extra}


def _listening(port: int) -> bool:
    """Whether anything listens on ``port``, from /proc/net (no packet is sent)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _run_until_exit_or_listening(command: list[str], env: dict[str, str], port: int,
                                 log_path: Path, timeout: float = 20.0) -> tuple[int | None, bool, str]:
    """Start ``command``; returns (exit code or None, whether it listened on ``port``, its output).

    A process that starts listening is stopped at once by its PID (its process group).
    """
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    listened = False
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _listening(port):
                listened = True
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            code = None
        else:
            code = process.returncode
    return code, listened, log_path.read_text(errors="replace")


GUNICORN = [str(Path(sys.executable).with_name("gunicorn")), "--config", "python:eventsvc.gunicorn_conf"]


@pytest.mark.parametrize("bind", ["0.0.0.0:{port}", "[::]:{port}", "127.0.0.1:{other},0.0.0.0:{port}"])
def test_open_api_bound_beyond_loopback_refuses_to_start(tmp_path, bind):
    port, other = free_port(), free_port()
    env = _clean_env(EVENTSVC_BIND=bind.format(port=port, other=other), EVENTSVC_DATA_DIR=str(tmp_path / "data"))
    code, listened, output = _run_until_exit_or_listening([*GUNICORN, "wsgi:app"], env, port, tmp_path / "out.log")
    assert not listened, output
    assert code is not None and code != 0, output
    assert "EVENTSVC_API_TOKENS" in output
    assert "Listening at" not in output


@pytest.mark.parametrize("how", ["gunicorn --bind", "eventsvc serve --bind", "GUNICORN_CMD_ARGS"])
def test_open_api_bound_beyond_loopback_on_the_command_line_refuses_to_start(tmp_path, how):
    port = free_port()
    address = f"0.0.0.0:{port}"
    env = _clean_env(EVENTSVC_DATA_DIR=str(tmp_path / "data"))
    if how == "gunicorn --bind":
        command = [*GUNICORN, "--bind", address, "wsgi:app"]
    elif how == "eventsvc serve --bind":
        command = [str(Path(sys.executable).with_name("eventsvc")), "serve", "--bind", address]
    else:
        env["GUNICORN_CMD_ARGS"] = f"--bind={address}"
        command = [*GUNICORN, "wsgi:app"]
    code, listened, output = _run_until_exit_or_listening(command, env, port, tmp_path / "out.log")
    assert not listened, f"an open API listened on {address}:\n{output}"
    assert code is not None and code != 0, output
    assert "EVENTSVC_API_TOKENS" in output


def test_allow_anonymous_starts_an_open_api_beyond_loopback(tmp_path):
    port = free_port()
    env = _clean_env(EVENTSVC_BIND=f"0.0.0.0:{port}", EVENTSVC_ALLOW_ANONYMOUS="1", EVENTSVC_WORKERS="1",
                     EVENTSVC_DATA_DIR=str(tmp_path / "data"))
    code, listened, output = _run_until_exit_or_listening([*GUNICORN, "wsgi:app"], env, port, tmp_path / "out.log")
    assert listened, output
    assert code is None, output  # still running when it was stopped
    assert "refusing" not in output


def test_a_token_allows_binding_beyond_loopback_without_allow_anonymous():
    base = settings.load({"BIND": "0.0.0.0:8000"}, environ={})
    assert settings.bind_refusal(base, open_api=True) is not None
    assert "EVENTSVC_API_TOKENS" in settings.bind_refusal(base, open_api=True)
    assert settings.bind_refusal(base, open_api=False) is None
    assert settings.bind_refusal({**base, "ALLOW_ANONYMOUS": True}, open_api=True) is None


@pytest.mark.parametrize(("bind", "refused"), [
    ("127.0.0.1:8000", False),
    ("localhost:8000", False),
    ("[::1]:8000", False),
    ("127.0.0.2:8000", False),
    ("unix:/tmp/eventsvc.sock", False),
    ("0.0.0.0:8000", True),
    ("0.0.0.0", True),
    ("[::]:8000", True),
    ("192.168.1.10:8000", True),
    ("example.com:8000", True),
    ("127.0.0.1:8000,0.0.0.0:8001", True),
    (":8000", True),
    ("127.0.0.1.example.com:8000", True),  # a host name that merely starts like a loopback address
])
def test_bind_refusal_table(bind, refused):
    config = settings.load({"BIND": bind}, environ={})
    assert (settings.bind_refusal(config, open_api=True) is not None) is refused


# -- token settings never fail open --------------------------------------------------------------

blank_lists = st.text(alphabet=" ,\t", min_size=1, max_size=8)
comment_files = st.lists(st.sampled_from(["", "   ", "# a comment", "#rw", "  # token rw"]), max_size=5).map("\n".join)


@settings_(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(api=st.none() | st.text(max_size=12), read=st.none() | st.text(max_size=12),
       file_text=st.none() | comment_files | st.text(max_size=30))
def test_any_token_settings_either_refuse_to_start_or_require_a_token(tmp_path_factory, api, read, file_text):
    """Over the whole input space: a token setting that is given never leaves the API open."""
    root = tmp_path_factory.mktemp("tokens")
    config = {"DATA_DIR": str(root / "data")}
    if api is not None:
        config["API_TOKENS"] = api
    if read is not None:
        config["READ_TOKENS"] = read
    if file_text is not None:
        (root / "tokens").write_text(file_text, encoding="utf-8", errors="surrogatepass")
        config["TOKENS_FILE"] = str(root / "tokens")
    try:
        app = create_app(config)
    except ValueError as exc:
        assert "EVENTSVC_" in str(exc)
        return
    try:
        response = app.test_client().get(SESSION_URL)
        if api or read or file_text is not None:
            assert_unauthorized(response)
        else:
            assert response.status_code == 404
    finally:
        app.extensions["eventsvc.store"].close()


@pytest.mark.parametrize(("name", "value"), [("API_TOKENS", ","), ("API_TOKENS", " , "), ("READ_TOKENS", ",,"),
                                             ("API_TOKENS", " ")])
def test_a_token_setting_without_a_token_is_a_configuration_error(data_dir, name, value):
    with pytest.raises(ValueError, match=f"EVENTSVC_{name} is set but holds no token"):
        create_app({"DATA_DIR": str(data_dir), name: value})


def test_a_tokens_file_of_comments_only_is_a_configuration_error(data_dir, tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# no tokens yet\n\n   # still none\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no token"):
        create_app({"DATA_DIR": str(data_dir), "TOKENS_FILE": str(path)})
    with pytest.raises(ValueError, match="cannot be read"):
        create_app({"DATA_DIR": str(data_dir), "TOKENS_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize("setting", [("EVENTSVC_API_TOKENS", ","), ("EVENTSVC_API_TOKENS", " , "),
                                     ("EVENTSVC_TOKENS_FILE", "comments")])
def test_gunicorn_refuses_to_start_on_a_token_setting_without_a_token(tmp_path, setting):
    name, value = setting
    if value == "comments":
        value = str(tmp_path / "tokens")
        Path(value).write_text("# nothing here\n", encoding="utf-8")
    port = free_port()
    env = _clean_env(EVENTSVC_BIND=f"0.0.0.0:{port}", EVENTSVC_DATA_DIR=str(tmp_path / "data"), **{name: value})
    code, listened, output = _run_until_exit_or_listening([*GUNICORN, "wsgi:app"], env, port, tmp_path / "out.log")
    assert not listened, output
    assert code == 2, output
    assert "configuration error" in output and name in output
    assert "Traceback" not in output


def test_an_inherited_socket_counts_as_loopback_only_when_it_is_bound_there(tmp_path):
    base = settings.load({}, environ={})
    wide, local = socket.socket(), socket.socket()
    unix = socket.socket(socket.AF_UNIX)
    try:
        wide.bind(("0.0.0.0", 0))
        local.bind(("127.0.0.1", 0))
        unix.bind(str(tmp_path / "sock"))
        assert settings.bind_refusal(base, [f"fd://{wide.fileno()}"], open_api=True) is not None
        assert settings.bind_refusal(base, [f"fd://{local.fileno()}"], open_api=True) is None
        assert settings.bind_refusal(base, [f"fd://{unix.fileno()}"], open_api=True) is None
        closed = os.open(os.devnull, os.O_RDONLY)
        os.close(closed)
        for address in (f"fd://{closed}", "fd://x", "fd://", "fd://99999999999"):
            assert settings.bind_refusal(base, [address], open_api=True) is not None, address
        wide.getsockname()  # still open: checking it did not close the caller's socket
    finally:
        wide.close(), local.close(), unix.close()


def test_a_tokens_file_with_a_byte_order_mark_reads_its_first_token(data_dir, tmp_path):
    path = tmp_path / "tokens"
    path.write_bytes(b"\xef\xbb\xbf" + f"{RW} rw\r\n{RO} ro\r\n".encode())
    app = create_app({"DATA_DIR": str(data_dir), "TOKENS_FILE": str(path)})
    client = app.test_client()
    assert client.post(SESSION_URL, json={"type": "status"}, headers=bearer(RW)).status_code == 201
    assert_error(client.post(SESSION_URL, json={"type": "status"}, headers=bearer(RO)), 403, "forbidden")
    app.extensions["eventsvc.store"].close()


def test_checking_an_inherited_socket_leaves_no_descriptor_behind():
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    base = settings.load({}, environ={})
    try:
        before = len(os.listdir("/proc/self/fd"))
        for address in [f"fd://{listening.fileno()}", f"fd://{os.open(os.devnull, os.O_RDONLY)}"] * 20:
            settings.bind_refusal(base, [address], open_api=True)
        after = len(os.listdir("/proc/self/fd"))
        assert after - before <= 20  # only the 20 devnull descriptors this test opened itself
    finally:
        listening.close()
