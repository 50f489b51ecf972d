"""Accounts over real HTTP, across two gunicorn servers sharing the test cluster.

Two servers of one worker each make "another server process" certain: a token
revoked through one must be refused by the other on its very next request.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridlink.cli import GUNICORN_CONF, PROJECT_ROOT
from gridlink.settings import Settings
from tests.conftest import random_username

GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def call(
    address: str, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """Send one request to ``host:port``; return the status and the JSON body (None if empty)."""
    headers = {} if token is None else {"Authorization": f"Token {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection(address, timeout=10)
    try:
        connection.request(method, path, data, headers)
        response = connection.getresponse()
        status, raw = response.status, response.read()
    finally:
        connection.close()
    return status, json.loads(raw) if raw else None


def wait_until_serving(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.returncode}")
        try:
            if call(base, "GET", "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn on {base} did not answer in 30 s")


@pytest.fixture(scope="module")
def servers(settings: Settings, mail_dir: Path) -> Iterator[list[str]]:
    """Start two gunicorn servers with one worker each; stop them after the module."""
    environment = {
        **os.environ,
        "GRIDLINK_DATABASE_URL": settings.database_url,
        "GRIDLINK_REPLICA_URLS": ",".join(settings.replica_urls),
        "GRIDLINK_REDIS_URL": settings.redis_url,
        "GRIDLINK_MAIL_BACKEND": f"file:{mail_dir}",
    }
    started: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for _ in range(2):
            port = free_port()
            command = [str(GUNICORN), "-c", str(GUNICORN_CONF), "--bind", f"127.0.0.1:{port}"]
            started.append(
                subprocess.Popen(
                    [*command, "--workers", "1"],
                    cwd=PROJECT_ROOT,
                    env=environment,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            bases.append(f"127.0.0.1:{port}")
        for base, server in zip(bases, started, strict=True):
            wait_until_serving(base, server)
        yield bases
    finally:
        for server in started:
            server.terminate()
        for server in started:
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def test_a_user_signs_up_logs_in_and_out_across_two_servers(servers):
    first, second = servers
    username = random_username("e2e")
    password = "an e2e password"
    status, signed_up = call(
        first,
        "POST",
        "/api/auth/signup/",
        {"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert status == 201, signed_up
    # Issued by one server, accepted at once by the other.
    status, me = call(second, "GET", "/api/users/me/", token=signed_up["token"])
    assert (status, me["username"]) == (200, username)

    status, logged_in = call(
        second, "POST", "/api/auth/login/", {"username": username, "password": password}
    )
    assert status == 200, logged_in
    token = logged_in["token"]
    assert call(first, "GET", "/api/users/me/", token=token)[0] == 200

    # A body-less logout, as curl sends it; then the other server refuses the token.
    assert call(first, "POST", "/api/auth/logout/", token=token)[0] == 204
    status, refused = call(second, "GET", "/api/users/me/", token=token)
    assert (status, refused["error"]["type"]) == (401, "unauthenticated")
    assert call(second, "GET", "/api/users/me/", token=signed_up["token"])[0] == 200

    assert call(second, "POST", "/api/auth/logout-all/", token=signed_up["token"])[0] == 204
    assert call(first, "GET", "/api/users/me/", token=signed_up["token"])[0] == 401
