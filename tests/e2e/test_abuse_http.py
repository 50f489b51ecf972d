"""Abuse at the HTTP level, against real gunicorn with ``infra/gunicorn.conf.py``.

Body limits are proved over raw sockets (the answer must come before the
client has sent the body); slow clients trickle real bytes; browser headers
are read as gunicorn sends them.
"""

from __future__ import annotations

import runpy
import secrets
import socket
import threading
from collections.abc import Iterator

import falcon.testing
import orjson
import pytest

from gridlink.settings import Settings
from infra.serving import GUNICORN_CONF
from infra.workers import REQUEST_READ_SECONDS
from tests.support.abuse import assert_clean_error
from tests.support.api import ApiUser, sign_up
from tests.support.servers import Reply, fetch, raw_exchange, server_environment, serving
from tests.support.sockets import read_by_server
from tests.support.waiting import wait_for

ALLOWED_ORIGIN = "https://app.example"
THREADS = int(runpy.run_path(str(GUNICORN_CONF))["threads"])


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    """One gunicorn server of one worker (so its threads are all there is), for the module."""
    environment = server_environment(
        settings, GRIDLINK_CORS_ORIGINS=f"{ALLOWED_ORIGIN},http://localhost:3000"
    )
    with serving(settings, workers=1, environment=environment) as [started]:
        yield started.address


@pytest.fixture(scope="module")
def author(client: falcon.testing.TestClient) -> ApiUser:
    return sign_up(client, "http")


def post_head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gridlink", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_json_error(reply: Reply, status: int, error_type: str) -> None:
    assert assert_clean_error(reply.status, reply.body, status) == error_type
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


# --- body limits ----------------------------------------------------------------------------


def test_a_body_announced_over_64_kib_is_refused_before_it_is_sent(server):
    # 10 MB announced, 1 KiB sent: the 413 must come without the rest.
    reply = raw_exchange(server, post_head("/api/grids/", "Content-Length: 10000000") + b"{" * 1024)
    assert_json_error(reply, 413, "payload_too_large")


def test_a_chunked_body_over_64_kib_is_refused_without_its_end(server):
    chunk = b" " * 8192
    chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 9  # 72 KiB, and no last chunk
    reply = raw_exchange(
        server, post_head("/api/auth/login/", "Transfer-Encoding: chunked") + chunks
    )
    assert_json_error(reply, 413, "payload_too_large")


def test_a_chunked_json_body_is_read_like_any_other(server):
    body = orjson.dumps({"username": f"nobody_{secrets.token_hex(4)}", "password": "whatever"})
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    reply = raw_exchange(
        server,
        post_head("/api/auth/login/", "Transfer-Encoding: chunked", "Connection: close") + chunked,
    )
    # Read and checked: wrong credentials, not "not valid JSON".
    assert_json_error(reply, 401, "unauthenticated")


MALFORMED_HTTP = {
    "a malformed chunk": post_head("/api/auth/login/", "Transfer-Encoding: chunked")
    + b"zz\r\nabc\r\n0\r\n\r\n",
    "a negative content length": post_head("/api/auth/login/", "Content-Length: -1"),
    "two content lengths": post_head("/api/auth/login/", "Content-Length: 2", "Content-Length: 3")
    + b"{}",
    "an unknown transfer coding": post_head("/api/auth/login/", "Transfer-Encoding: gzip"),
    "a header over 8 KiB": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"a" * 9000
    + b"\r\n\r\n",
    "a request line over 4 KiB": b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "bytes that are not a request line": b"GET /api/users/\xff\x00/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "an unknown protocol": b"GET / SPDY/9\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED_HTTP.values(), ids=MALFORMED_HTTP.keys())
def test_malformed_http_gets_a_4xx_in_the_error_format(server, request_bytes):
    reply = raw_exchange(server, request_bytes)
    assert 400 <= reply.status < 500
    assert_clean_error(reply.status, reply.body)
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert b"<html" not in reply.body


def test_refusals_before_the_app_carry_api_md_types(server):
    too_long = raw_exchange(server, MALFORMED_HTTP["a request line over 4 KiB"])
    assert assert_clean_error(too_long.status, too_long.body, 414) == "uri_too_long"


def test_head_sends_gets_headers_and_not_one_byte_of_body(server, author):
    host, port = server.rsplit(":", 1)
    for path in ("/healthz", f"/api/users/{author.username}/", "/api/openapi.json"):
        get = fetch(server, "GET", path)
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            # A HEAD, then a GET on the same connection: a body after the HEAD's
            # headers would be read as the start of the second answer.
            connection.sendall(
                f"HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n"
                f"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
            )
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), (path, head)
        lines = head.decode().split("\r\n")[1:]
        headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
        assert int(headers["content-length"]) == len(get.body), path
        assert headers["content-type"] == get.headers["Content-Type"], path
        assert rest.startswith(b"HTTP/1.1 200 "), (path, rest[:80])


# --- slow clients -----------------------------------------------------------------------------


class Trickler:
    """A client that sends the start of a request, then one more byte a second."""

    def __init__(self, address: str, start: bytes, drip: bytes) -> None:
        host, port = address.rsplit(":", 1)
        self.connection = socket.create_connection((host, int(port)), timeout=60)
        self.connection.sendall(start)
        self._drip = drip
        self._stop = threading.Event()
        self.dropped = threading.Event()
        self.answer = b""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1):
            try:
                self.connection.sendall(self._drip)
            except OSError:
                break
        self.dropped.set()

    def read_answer(self) -> bytes:
        """What the server said before closing the connection."""
        received = b""
        try:
            while chunk := self.connection.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # closed with our unread bytes still in its buffer: a reset, after the answer
        return received

    def stop(self) -> None:
        self._stop.set()
        self.connection.close()


@pytest.fixture
def tricklers() -> Iterator[list[Trickler]]:
    started: list[Trickler] = []
    yield started
    for trickler in started:
        trickler.stop()


def trickle_headers(address: str) -> Trickler:
    return Trickler(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-A: b\r\n")


def wait_until_each_has_a_thread(address: str, tricklers: list[Trickler]) -> None:
    """Wait until the server has read what each trickler sent: a thread reads its headers.

    gthread hands a connection to a thread once bytes arrive, and the thread
    then reads until the headers end (never, here) or the read deadline.
    """
    port = int(address.rsplit(":", 1)[1])
    wait_for(
        lambda: all(read_by_server(port, trickler.connection) for trickler in tricklers),
        REQUEST_READ_SECONDS / 2,
        "a thread reading each trickler",
    )


def profile_status(address: str, username: str, timeout: float) -> int:
    return fetch(address, "GET", f"/api/users/{username}/", timeout=timeout).status


def test_with_all_but_one_thread_held_by_slow_clients_requests_are_served(
    server, author, tricklers
):
    tricklers.extend(trickle_headers(server) for _ in range(THREADS - 1))
    wait_until_each_has_a_thread(server, tricklers)
    for _ in range(3):
        assert profile_status(server, author.username, timeout=5) == 200


def test_slow_clients_holding_every_thread_are_cut_off_and_requests_served_again(
    server, author, tricklers
):
    # Without a read deadline these would hold every thread for as long as they like,
    # and the profile read below would never be answered.
    tricklers.extend(trickle_headers(server) for _ in range(THREADS))
    wait_until_each_has_a_thread(server, tricklers)
    assert profile_status(server, author.username, timeout=REQUEST_READ_SECONDS + 20) == 200
    for trickler in tricklers:
        assert trickler.read_answer() == b""  # closed, no answer: the request never came whole


def test_a_body_trickled_too_slowly_gets_a_408(server, tricklers):
    slow = Trickler(server, post_head("/api/auth/login/", "Content-Length: 60000"), b" ")
    tricklers.append(slow)
    answer = slow.read_answer()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert assert_clean_error(408, body, 408) == "request_timeout"


# --- browser headers --------------------------------------------------------------------------

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def answers(server: str, author: ApiUser) -> dict[str, tuple[Reply, int, str]]:
    """One answer of each kind: (reply, expected status, expected Cache-Control)."""
    token = {"Authorization": f"Token {author.token}"}
    json_type = {"Content-Type": "application/json"}
    profile = fetch(server, "GET", f"/api/users/{author.username}/")
    etag = profile.headers["ETag"]
    return {
        "a public read": (profile, 200, "no-cache"),
        "not modified": (
            fetch(server, "GET", f"/api/users/{author.username}/", headers={"If-None-Match": etag}),
            304,
            "no-cache",
        ),
        "an authenticated read": (
            fetch(server, "GET", "/api/grids/", headers=token),
            200,
            "private, no-cache",
        ),
        # Me carries the account's email: no cache may keep it (API.md).
        "the caller's own account": (
            fetch(server, "GET", "/api/users/me/", headers=token),
            200,
            "no-store",
        ),
        "a write": (
            fetch(server, "POST", "/api/grids/", b'{"title": "t"}', {**token, **json_type}),
            201,
            "no-store",
        ),
        "not found": (fetch(server, "GET", "/api/nothing/"), 404, "no-store"),
        "unauthenticated": (fetch(server, "GET", "/api/users/me/"), 401, "no-store"),
        "a bad token": (
            fetch(server, "GET", "/api/users/me/", headers={"Authorization": "Token x"}),
            401,
            "no-store",
        ),
        "method not allowed": (fetch(server, "DELETE", "/healthz"), 405, "no-store"),
        "invalid json": (
            fetch(server, "POST", "/api/auth/login/", b"{", json_type),
            400,
            "no-store",
        ),
        "too large": (
            fetch(server, "POST", "/api/auth/login/", b" " * (65 * 1024), json_type),
            413,
            "no-store",
        ),
    }


def test_every_answer_carries_the_security_headers_and_no_server_version(server, author):
    for kind, (reply, status, cache_control) in answers(server, author).items():
        assert reply.status == status, (kind, reply.body)
        for name, value in SECURITY_HEADERS.items():
            assert reply.headers[name] == value, (kind, name)
        assert reply.headers["Cache-Control"] == cache_control, kind
        server_header = reply.headers.get("Server", "")
        assert not any(character.isdigit() for character in server_header), server_header
        assert "/" not in server_header


def test_the_etag_contract_holds_with_the_cache_headers(server, author):
    profile = fetch(server, "GET", f"/api/users/{author.username}/")
    assert profile.headers["ETag"]
    again = fetch(
        server,
        "GET",
        f"/api/users/{author.username}/",
        headers={"If-None-Match": profile.headers["ETag"]},
    )
    assert (again.status, again.body) == (304, b"")


def preflight(server: str, origin: str, path: str = "/api/grids/") -> Reply:
    return fetch(
        server,
        "OPTIONS",
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


def test_a_preflight_from_an_allowed_origin_is_answered(server):
    reply = preflight(server, ALLOWED_ORIGIN)
    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert set(reply.headers["Access-Control-Allow-Methods"].split(", ")) >= {"GET", "POST"}
    allowed = {name.lower() for name in reply.headers["Access-Control-Allow-Headers"].split(", ")}
    assert allowed == {
        "authorization",
        "content-type",
        "idempotency-key",
        "if-none-match",
        "x-request-id",
    }
    assert "Access-Control-Allow-Credentials" not in reply.headers
    assert int(reply.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "https://app.example.evil.example", "null", "http://app.example"],
)
def test_a_preflight_from_any_other_origin_gets_no_cors_headers(server, origin):
    reply = preflight(server, origin)
    assert not [name for name in reply.headers if name.lower().startswith("access-control-")]


def test_answers_to_an_allowed_origin_expose_the_api_headers_errors_included(server, author):
    origin = {"Origin": ALLOWED_ORIGIN}
    for reply in [
        fetch(server, "GET", f"/api/users/{author.username}/", headers=origin),
        fetch(server, "GET", "/api/users/me/", headers=origin),  # 401
    ]:
        assert reply.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        exposed = set(reply.headers["Access-Control-Expose-Headers"].split(", "))
        assert exposed == {
            "ETag",
            "Location",
            "X-Request-Id",
            "X-Gridlink-Read-Source",
            "Retry-After",
        }
        assert "Origin" in reply.headers["Vary"]
        assert "Access-Control-Allow-Credentials" not in reply.headers


def test_nothing_is_allowed_when_no_origin_is_configured(settings, client):
    # The in-process app runs with the default settings: no origin at all.
    for result in [
        client.simulate_options(
            "/api/grids/",
            headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"},
        ),
        client.simulate_get("/healthz", headers={"Origin": ALLOWED_ORIGIN}),
    ]:
        assert not [name for name in result.headers if name.lower().startswith("access-control-")]
