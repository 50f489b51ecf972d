"""Start, stop, freeze and thaw one Redis server, local or on a staging host."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from infra.binaries import Tools
from infra.errors import ClusterError, Progress
from infra.processes import (
    as_account,
    ensure_port_free,
    in_namespace,
    launch,
    live_pid,
    stop_process,
)

START_TIMEOUT = 30.0
# The cache evicts under memory pressure rather than refuse writes (README: "The change stream").
REDIS_MAXMEMORY = "1gb"
REDIS_MAXMEMORY_POLICY = "allkeys-lru"


@dataclass(frozen=True)
class RedisServer:
    """Name one Redis server: its folder, address, extra settings and namespace."""

    name: str
    host: str
    port: int
    directory: Path  # pid file, log file and (if a test saves one) dump.rdb
    config_file: Path | None = None  # read first; the command line's options win
    settings: Sequence[str] = field(default=())  # more `--option value` arguments
    netns: str | None = None
    # TLS only (`port 0`, `tls-port`): the config file names the certificate and key.
    tls: bool = False
    # How to ask it anything (TLS, user, password), when it wants more than a connection.
    client_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # The user it runs as (setpriv), when started as root; None: this process's.
    account: str | None = None

    @property
    def pid_file(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"


def pid(server: RedisServer) -> int | None:
    return live_pid(server.pid_file, "redis")


def answers(host: str, port: int, client_options: Mapping[str, Any] | None = None) -> bool:
    client = redis.Redis(
        host=host, port=port, socket_timeout=1, socket_connect_timeout=1, **(client_options or {})
    )
    try:
        client.ping()  # answers LOADING (an error) while a dump.rdb is being read
        return True
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start(tools: Tools, server: RedisServer, progress: Progress) -> None:
    """Start Redis unless it runs, and wait until it answers PING."""
    running = pid(server)
    if running is not None:
        progress(f"{server.name}: already running on {server.port} (pid {running})")
        return
    ensure_port_free(server.port, server.name, server.host)
    server.directory.mkdir(parents=True, exist_ok=True)
    ports = ["--port", "0", "--tls-port"] if server.tls else ["--port"]
    # No persistence by default, but --dir stays set so a dump.rdb saved by a test
    # (SHUTDOWN SAVE) is loaded again on the next start.
    command = in_namespace(
        server.netns,
        [
            *as_account(server.account),
            tools.redis_server,
            *([] if server.config_file is None else [str(server.config_file)]),
            *ports,
            str(server.port),
            "--bind",
            server.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            REDIS_MAXMEMORY,
            "--maxmemory-policy",
            REDIS_MAXMEMORY_POLICY,
            "--daemonize",
            "yes",
            "--pidfile",
            str(server.pid_file),
            "--logfile",
            str(server.log_file),
            "--dir",
            str(server.directory),
            *server.settings,
        ],
    )
    launch(
        server.name,
        f"{server.host}:{server.port}",
        command,
        cwd=server.directory,
        timeout=START_TIMEOUT,
        answers=lambda: answers(server.host, server.port, server.client_options),
        log=server.log_file,
    )
    progress(f"{server.name}: started on {server.port} (pid {pid(server)})")


def stop(server: RedisServer, progress: Progress) -> None:
    # SIGTERM makes Redis shut down cleanly; with --save "" it writes no dump on the way.
    stop_process(server.name, pid(server), signal.SIGTERM, "redis", server.log_file, progress)


def set_frozen(server: RedisServer, frozen: bool) -> None:
    """Freeze (SIGSTOP) or thaw (SIGCONT) the running Redis.

    A frozen Redis keeps its sockets open but answers nothing: clients meet
    timeouts rather than refused connections, as with a hung host. Thawed, it
    carries on with its data and its run_id, as if it had never left.
    """
    running = pid(server)
    if running is None:
        raise ClusterError(f"{server.name} is not running.")
    os.kill(running, signal.SIGSTOP if frozen else signal.SIGCONT)
