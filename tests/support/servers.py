"""Real gunicorn servers for end-to-end tests, and a small HTTP client for them.

Every end-to-end test (accounts across servers, faults, fuzzing, the admin
page, the load test) starts the API the way production does, through
``infra.serving.serve``: gunicorn with ``infra/gunicorn.conf.py``, in a
process of its own, against a test cluster.
"""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec

import pytest

from gridlink.settings import Settings
from infra.http_client import Reply, api_request, fetch, json_body
from infra.processes import free_port
from infra.serving import ApiServer, environment_for, serve

__all__ = [
    "Reply",
    "api_request",
    "call",
    "fetch",
    "json_body",
    "raw_exchange",
    "server_environment",
    "serving",
    "sign_up_at",
    "start_server",
    "use_settings_environment",
]

START_TIMEOUT_SECONDS = 30
P = ParamSpec("P")
_PID_FILES = Path(tempfile.mkdtemp(prefix="gridlink-test-servers-"))
_numbers = itertools.count()


def _status_and_json(send: Callable[P, Reply]) -> Callable[P, tuple[int, Any]]:
    def call(*args: P.args, **kwargs: P.kwargs) -> tuple[int, Any]:
        reply = send(*args, **kwargs)
        return reply.status, json_body(reply)

    return call


# call(address, method, path, body=None, token=None, headers=None, timeout=10): like
# api_request, for the many tests that want only the status and the JSON body.
call = _status_and_json(api_request)


SERVER_PASSWORD = "a server password"


def sign_up_at(address: str, username: str, password: str = SERVER_PASSWORD) -> str:
    """Sign ``username`` up on the server at ``address``; return its first token."""
    status, body = call(
        address,
        "POST",
        "/api/auth/signup/",
        {"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert status == 201, body
    token: str = body["token"]
    return token


def raw_exchange(address: str, data: bytes, timeout: float = 10) -> Reply:
    """Send ``data`` as it is (a whole request, or only its start) and read the one answer.

    Nothing more is sent: an answer to a request sent only in part proves the
    server answered without waiting for the rest.
    """
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(data)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return Reply(response.status, response.headers, response.read())


def server_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that points a server (or any ``gridlink`` command) at ``settings``."""
    return environment_for(settings, **extra)


def use_settings_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Point the ``gridlink`` command, run in this process, at ``settings``' cluster."""
    for name, value in settings.to_environ().items():
        monkeypatch.setenv(name, value)


def start_server(
    settings: Settings,
    workers: int = 1,
    environment: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> ApiServer:
    """Start gunicorn on a free port (not yet answering: see ``wait_until_answering``).

    The server's log (one JSON object per line) is appended to ``log`` when
    given, else dropped.
    """
    server = serve(
        settings,
        bind=f"127.0.0.1:{free_port()}",
        workers=workers,
        environment=environment,
        pid_file=_PID_FILES / f"gunicorn-{os.getpid()}-{next(_numbers)}.pid",
        log=log or Path(os.devnull),
    )
    server.launch()
    return server


@contextmanager
def serving(
    settings: Settings,
    count: int = 1,
    workers: int = 1,
    environment: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[list[ApiServer]]:
    """Run ``count`` gunicorn servers of ``workers`` workers each; stop them afterwards."""
    started: list[ApiServer] = []
    try:
        for _ in range(count):
            started.append(start_server(settings, workers, environment, log))
        for server in started:
            server.wait_until_answering(START_TIMEOUT_SECONDS)
        yield started
    finally:
        for server in started:
            server.stop(lambda _line: None)
