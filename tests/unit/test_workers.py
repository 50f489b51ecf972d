"""The gunicorn worker's pieces: the read deadline, and gunicorn's refusals as JSON."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import orjson
import pytest

from infra.workers import DeadlineSocket, json_error_response


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def test_reads_within_the_deadline_go_through(pair) -> None:
    server, client = pair
    reading = DeadlineSocket(server, seconds=30)
    client.sendall(b"GET / HTTP/1.1\r\n")
    assert reading.recv(1024) == b"GET / HTTP/1.1\r\n"
    # The socket's own timeout is left as it was.
    assert server.gettimeout() is None


def test_a_read_past_the_deadline_resets_the_connection(pair) -> None:
    server, client = pair
    reading = DeadlineSocket(server, seconds=0.05)
    client.sendall(b"G")
    assert reading.recv(1) == b"G"
    with pytest.raises(ConnectionResetError):
        reading.recv(1)  # nothing more comes


def test_each_request_gets_its_own_deadline(pair) -> None:
    server, client = pair
    reading = DeadlineSocket(server, seconds=0.05)
    with pytest.raises(ConnectionResetError):
        reading.recv(1)
    reading.new_request()
    client.sendall(b"x")
    assert reading.recv(1) == b"x"


def test_everything_but_reading_is_the_sockets_own(pair) -> None:
    server, _ = pair
    assert DeadlineSocket(server).fileno() == server.fileno()


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request"),
        (414, "uri_too_long"),
        (431, "headers_too_large"),
        (403, "permission_denied"),
        (500, "internal_error"),
        (999, "invalid_request"),
    ],
)
def test_gunicorns_refusals_become_the_apis_error_body(status: int, error_type: str) -> None:
    head, _, body = json_error_response(status).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert status_line.split()[1] == str(status if status != 999 else 400)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert int(headers["Content-Length"]) == len(body)
    assert orjson.loads(body)["error"]["type"] == error_type
