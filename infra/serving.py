"""Serve the API: the one way every caller starts gunicorn with Gridlink's configuration.

``gridlink serve`` (``make run``, a staging API host, a real host's unit),
the tests' servers, the load test and the benchmarks all build the same
command here: gunicorn with ``infra/gunicorn.conf.py``, pointed at a cluster
by the environment ``Settings.to_environ()`` gives, nothing inherited.
"""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gridlink.project import PROJECT_ROOT
from gridlink.settings import Settings
from infra.daemons import Daemon
from infra.http_client import HTTPS, fetch
from infra.processes import process_alive
from infra.relay_supervisor import RELAY_COMMAND

GUNICORN_CONF = PROJECT_ROOT / "infra" / "gunicorn.conf.py"


def gunicorn_command(
    bind: str, workers: int | None = None, *, app: str | None = None, options: Sequence[str] = ()
) -> list[str]:
    """Return the command that serves ``app`` (default: Gridlink's) on ``bind``."""
    command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", bind]
    if workers:
        command += ["--workers", str(workers)]
    return [*command, *options, *([app] if app else [])]


def environment_for(settings: Settings, **extra: str) -> dict[str, str]:
    """Return the environment of a child process that runs with ``settings``.

    This process's environment without any ``GRIDLINK_*`` variable, then every
    setting (``Settings.to_environ``), then ``extra``: the child sees exactly
    these settings, whatever the caller's shell had set.
    """
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("GRIDLINK_")}
    return {**inherited, **settings.to_environ(), **extra}


def http_status(
    address: str, path: str, timeout: float = 3.0, headers: Mapping[str, str] | None = None
) -> int | None:
    """Return the HTTP status of ``path`` at ``address`` (host:port, or https://host:port,
    verified: ``infra.http_client``), or None if no answer. Redirects are not followed."""
    try:
        return fetch(address, "GET", path, headers=headers, timeout=timeout).status
    except (OSError, http.client.HTTPException):
        return None


class ApiServer(Daemon):
    """A gunicorn master serving the API on ``address``; it answers once /healthz says 200."""

    program = "gunicorn"

    def __init__(
        self,
        address: str,
        command: Sequence[str],
        *,
        pid_file: Path,
        log: Path,
        netns: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            f"gunicorn on {address}",
            command,
            pid_file=pid_file,
            log=log,
            cwd=PROJECT_ROOT,
            netns=netns,
            environment=environment,
        )
        self.address = address

    def answers(self) -> bool:
        return http_status(self.address, "/healthz", timeout=2) == 200

    def worker_pids(self) -> list[int]:
        """The pids of the master's live workers, read from /proc."""
        master = self.pid()
        if master is None:
            return []
        children = Path(f"/proc/{master}/task/{master}/children")
        return [
            int(pid)
            for pid in children.read_text().split()
            if process_alive(int(pid), self.program)
        ]

    def relay_pid(self) -> int | None:
        """The pid of the change relay the master supervises.

        A thread of the master starts it, so it is that thread's child, not
        the main thread's (``worker_pids`` never lists it).
        """
        master = self.pid()
        if master is None:
            return None
        tasks = Path(f"/proc/{master}/task")
        pids = [pid for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
        for pid in pids:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if RELAY_COMMAND[1:] == tuple(part.decode() for part in command[1:4]):
                return int(pid)
        return None


def serve(
    settings: Settings,
    *,
    pid_file: Path,
    log: Path,
    bind: str | None = None,
    workers: int | None = None,
    netns: str | None = None,
    environment: Mapping[str, str] | None = None,
    app: str | None = None,
    options: Sequence[str] = (),
) -> ApiServer:
    """Return the API server for ``settings`` (not started: call ``start``).

    ``bind`` and ``workers`` default to the settings' (``GRIDLINK_BIND``,
    ``GRIDLINK_WORKERS``); ``environment`` replaces ``environment_for(settings)``
    when a caller needs variables beyond the settings; ``app`` serves another
    WSGI app (``module:callable()``) under the same configuration and
    ``options`` are more gunicorn options (the benchmark tunes with them).
    """
    address = bind or settings.bind
    # The internal metrics listener, when set, is one more socket of the same server.
    internal = ["--bind", settings.metrics_bind] if settings.metrics_bind else []
    command = gunicorn_command(
        address, workers or settings.workers, app=app, options=[*internal, *options]
    )
    return ApiServer(
        f"{HTTPS}{address}" if settings.tls_certificate else address,
        command,
        pid_file=pid_file,
        log=log,
        netns=netns,
        environment=environment if environment is not None else environment_for(settings),
    )
