"""Real gunicorn servers for end-to-end tests, and a small HTTP client for them.

Every end-to-end test (accounts across servers, faults, fuzzing, the admin
page, the load test) starts the API the way production does: gunicorn with
``infra/gunicorn.conf.py``, in a process of its own, against a test cluster.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec

import pytest

from gridlink.cli import GUNICORN_CONF, PROJECT_ROOT
from gridlink.settings import Settings
from infra.relay_supervisor import RELAY_COMMAND

GUNICORN = Path(sys.executable).with_name("gunicorn")
START_TIMEOUT_SECONDS = 30
P = ParamSpec("P")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, headers (names in any case) and raw body."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes


def fetch(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    """Send one request to ``host:port`` and return the whole answer."""
    connection = http.client.HTTPConnection(address, timeout=timeout)
    try:
        connection.request(method, path, body, dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def api_request(
    address: str,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    """Send one API request (``body`` as JSON, ``token`` as the caller); return the whole answer."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Token {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    return fetch(address, method, path, data, sent, timeout)


def json_body(reply: Reply) -> Any:
    """Return the answer's JSON body (None if empty; raw bytes if it is not JSON)."""
    content_type = reply.headers.get("Content-Type") or ""
    if reply.body and content_type.startswith("application/json"):
        return json.loads(reply.body)
    return reply.body or None


def _status_and_json(send: Callable[P, Reply]) -> Callable[P, tuple[int, Any]]:
    def call(*args: P.args, **kwargs: P.kwargs) -> tuple[int, Any]:
        reply = send(*args, **kwargs)
        return reply.status, json_body(reply)

    return call


# call(address, method, path, body=None, token=None, headers=None, timeout=10): like
# api_request, for the many tests that want only the status and the JSON body.
call = _status_and_json(api_request)


def sign_up_at(address: str, username: str) -> str:
    """Sign ``username`` up on the server at ``address``; return its first token."""
    status, body = call(
        address,
        "POST",
        "/api/auth/signup/",
        {"username": username, "email": f"{username}@example.com", "password": "a password!"},
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
    """The environment that points a gunicorn server at ``settings``' cluster."""
    environment = {
        **os.environ,
        "GRIDLINK_DATABASE_URL": settings.database_url,
        "GRIDLINK_REPLICA_URLS": ",".join(settings.replica_urls),
        "GRIDLINK_REDIS_URL": settings.redis_url,
        "GRIDLINK_MAX_REPLICA_LAG_SECONDS": str(settings.max_replica_lag_seconds),
        # Explicit, as a server outside development needs it.
        "GRIDLINK_MAIL_BACKEND": settings.mail_backend.variable,
        "GRIDLINK_SIGNUPS_PER_ADDRESS": str(settings.signups_per_address),
        "GRIDLINK_SIGNUPS_PER_MINUTE": str(settings.signups_per_minute),
    }
    environment.update(extra)
    return environment


def use_settings_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Point the ``gridlink`` command, run in this process, at ``settings``' cluster."""
    for name, value in server_environment(settings).items():
        if name.startswith("GRIDLINK_"):
            monkeypatch.setenv(name, value)


@dataclass
class Server:
    """A running gunicorn master: its address (``host:port``) and its process."""

    address: str
    process: subprocess.Popen[bytes]

    def worker_pids(self) -> list[int]:
        """The pids of the master's live workers, read from /proc."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()]
        return [pid for pid in pids if _is_alive(pid)]

    def relay_pid(self) -> int | None:
        """The pid of the change relay the master supervises.

        A thread of the master starts it, so it is that thread's child, not
        the main thread's (``worker_pids`` never lists it).
        """
        tasks = Path(f"/proc/{self.process.pid}/task")
        pids = [pid for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
        for pid in pids:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if RELAY_COMMAND[1:] == tuple(part.decode() for part in command[1:4]):
                return int(pid)
        return None

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                if call(self.address, "GET", "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"gunicorn on {self.address} did not answer in {START_TIMEOUT_SECONDS} s"
        )

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _is_alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (PID 1 here does not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def start_server(
    settings: Settings,
    workers: int = 1,
    environment: Mapping[str, str] | None = None,
    log: Path | None = None,
    *,
    app: str | None = None,
    options: Sequence[str] = (),
) -> Server:
    """Start gunicorn on a free port (not yet answering: see ``Server.wait_until_serving``).

    The server's log (stderr: one JSON object per line) is appended to ``log``
    when given, else dropped. ``app`` serves another WSGI app
    (``module:callable()``) under the same configuration; ``options`` are more
    gunicorn options (the benchmark tunes with them).
    """
    port = free_port()
    command = [str(GUNICORN), "-c", str(GUNICORN_CONF), "--bind", f"127.0.0.1:{port}"]
    with open(log or os.devnull, "ab") as log_file:
        process = subprocess.Popen(
            [*command, "--workers", str(workers), *options, *([app] if app else [])],
            cwd=PROJECT_ROOT,
            env=dict(environment) if environment is not None else server_environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    return Server(f"127.0.0.1:{port}", process)


@contextmanager
def serving(
    settings: Settings,
    count: int = 1,
    workers: int = 1,
    environment: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[list[Server]]:
    """Run ``count`` gunicorn servers of ``workers`` workers each; stop them afterwards."""
    started: list[Server] = []
    try:
        for _ in range(count):
            started.append(start_server(settings, workers, environment, log))
        for server in started:
            server.wait_until_serving()
        yield started
    finally:
        for server in started:
            server.stop()
