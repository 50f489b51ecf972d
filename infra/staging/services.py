"""Start, find and stop each staging host's services inside its namespace.

PostgreSQL and Redis are driven by the same modules as the local cluster
(``infra.postgres``, ``infra.redis_server``), only with a host's address,
its rendered configuration and its namespace. The API (``gridlink serve``)
and HAProxy are started here, each with a pid file, so ``down`` stops exactly
what ``up`` started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from infra import postgres
from infra.binaries import Tools
from infra.errors import ClusterError, Progress
from infra.files import make_pg_dir
from infra.postgres import PgServer
from infra.processes import in_namespace, live_pid, log_tail, run, stop_process, wait_until
from infra.redis_server import RedisServer
from infra.staging import render
from infra.staging.inventory import (
    API,
    API_PORT,
    DATABASE,
    DATABASE_USER,
    LOAD_BALANCER,
    POSTGRES_PORT,
    REDIS,
    REDIS_PORT,
    Host,
    Inventory,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GRIDLINK = Path(sys.executable).with_name("gridlink")
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Paths:
    """Where staging keeps each host's rendered configuration, data and logs."""

    root: Path  # var/staging

    @property
    def inventory_file(self) -> Path:
        return self.root / "inventory.json"

    def etc(self, host: Host) -> Path:
        """Return the host's rendered configuration files (what real hosts get in /etc)."""
        return self.root / "etc" / host.name

    def data(self, host: Host) -> Path:
        """Return the host's data, pid files and logs."""
        return self.root / "hosts" / host.name


# --------------------------------------------------------------------------- rendering


def write_configuration(inventory: Inventory, paths: Paths) -> None:
    """Render every host's configuration files under var/staging/etc/<host>/."""
    for host in inventory.databases:
        _write(paths.etc(host) / "postgresql.conf", _pg_conf(paths, host))
        _write(paths.etc(host) / "pg_hba.conf", render.pg_hba_conf(host))
    redis_host = inventory.one(REDIS)
    _write(paths.etc(redis_host) / "redis.conf", render.redis_conf(redis_host))
    lb = inventory.one(LOAD_BALANCER)
    _write(paths.etc(lb) / "haproxy.cfg", render.haproxy_cfg(inventory, _stats_socket(paths)))
    for host in inventory.with_role(API):
        _write(paths.etc(host) / "api.env", render.api_env(inventory, host, _mail_dir(paths, host)))
        _write(paths.etc(host) / "gridlink-api.service", render.api_unit(host))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _pg_conf(paths: Paths, host: Host) -> str:
    return render.postgresql_conf(host, paths.data(host) / "run")


def _mail_dir(paths: Paths, host: Host) -> Path:
    return paths.data(host) / "mail"


def _stats_socket(paths: Paths) -> Path:
    # Beside the hosts' folders: a unix socket path may not be longer than 107 bytes.
    return paths.root / "hosts" / "haproxy-stats.sock"


# --------------------------------------------------------------------------- PostgreSQL, Redis


def pg_server(paths: Paths, host: Host) -> PgServer:
    """Return the PostgreSQL server of a database host, configured from its rendered files."""
    return PgServer(
        name=host.name,
        host=host.address,
        port=POSTGRES_PORT,
        data_dir=paths.data(host) / "pgdata",
        conf=(paths.etc(host) / "postgresql.conf").read_text(),
        hba=(paths.etc(host) / "pg_hba.conf").read_text(),
        socket_dir=paths.data(host) / "run",
        netns=host.netns,
    )


def redis(inventory: Inventory, paths: Paths) -> RedisServer:
    host = inventory.one(REDIS)
    return RedisServer(
        host.name,
        host.address,
        REDIS_PORT,
        paths.data(host),
        config_file=paths.etc(host) / "redis.conf",
        netns=host.netns,
    )


def start_databases(tools: Tools, inventory: Inventory, paths: Paths, progress: Progress) -> None:
    """Start the primary (initdb the first time), the app database, then each replica."""
    primary = pg_server(paths, inventory.primary)
    for host in inventory.databases:
        make_pg_dir(paths.data(host), 0o755)
        make_pg_dir(paths.data(host) / "run", 0o755)
    postgres.ensure(tools, primary, "initdb", postgres.initdb_command(tools), progress)
    postgres.ensure_app_database(primary, DATABASE, DATABASE_USER, progress)
    for host in inventory.replicas:
        replica = pg_server(paths, host)
        build = postgres.basebackup_command(tools, primary, replica)
        postgres.ensure(tools, replica, "pg_basebackup (in its namespace)", build, progress)


# --------------------------------------------------------------------------- the API


def _api_pid_file(paths: Paths, host: Host) -> Path:
    return paths.data(host) / "gunicorn.pid"


def api_pid(paths: Paths, host: Host) -> int | None:
    return live_pid(_api_pid_file(paths, host), "gunicorn")


def api_answers(host: Host, path: str = "/healthz") -> int | None:
    """Return the HTTP status of ``path`` on the host's API, or None if it does not answer."""
    return http_status(f"{host.address}:{API_PORT}", path)


def http_status(address: str, path: str, timeout: float = 3.0) -> int | None:
    """Return the HTTP status of ``path`` at ``address`` (host:port), or None if no answer."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)
    except OSError:
        return None


def start_api(paths: Paths, host: Host, progress: Progress) -> None:
    """Run `gridlink serve` in the host's namespace with its rendered environment."""
    running = api_pid(paths, host)
    if running is not None:
        progress(f"{host.name}: gridlink serve already running (pid {running})")
        return
    settings = render.parse_env((paths.etc(host) / "api.env").read_text())
    _mail_dir(paths, host).mkdir(parents=True, exist_ok=True)
    log = paths.data(host) / "gunicorn.log"
    bind, workers = settings["GRIDLINK_BIND"], settings["GRIDLINK_WORKERS"]
    serve = [str(GRIDLINK), "serve", "--bind", bind, "--workers", workers]
    command = in_namespace(host.netns, serve)
    # Only what a real host's unit would have: its env file, no GRIDLINK_* of ours.
    base = {key: value for key, value in os.environ.items() if not key.startswith("GRIDLINK_")}
    with log.open("ab") as output:
        server = subprocess.Popen(  # `ip netns exec` execs: this pid is gunicorn's master
            command,
            cwd=PROJECT_ROOT,
            env={**base, **settings},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _api_pid_file(paths, host).write_text(f"{server.pid}\n")
    if not wait_until(lambda: server.poll() is not None or api_answers(host) == 200, START_TIMEOUT):
        raise ClusterError(
            f"{host.name}: gridlink serve did not answer; {log} ends with:\n{log_tail(log)}"
        )
    if server.poll() is not None:
        raise ClusterError(f"{host.name}: gridlink serve exited; {log} ends with:\n{log_tail(log)}")
    progress(f"{host.name}: gridlink serve on {settings['GRIDLINK_BIND']} (pid {server.pid})")


def stop_api(paths: Paths, host: Host, progress: Progress) -> None:
    log = paths.data(host) / "gunicorn.log"
    stop_process(host.name, api_pid(paths, host), signal.SIGTERM, "gunicorn", log, progress)


# --------------------------------------------------------------------------- the load balancer


def _lb_pid_file(paths: Paths, host: Host) -> Path:
    return paths.data(host) / "haproxy.pid"


def lb_pid(paths: Paths, host: Host) -> int | None:
    return live_pid(_lb_pid_file(paths, host), "haproxy")


def start_lb(haproxy: str, paths: Paths, host: Host, progress: Progress) -> None:
    """Check the rendered haproxy.cfg, then run HAProxy in the load balancer's namespace."""
    running = lb_pid(paths, host)
    if running is not None:
        progress(f"{host.name}: haproxy already running (pid {running})")
        return
    paths.data(host).mkdir(parents=True, exist_ok=True)
    config = paths.etc(host) / "haproxy.cfg"
    checked = run([haproxy, "-c", "-q", "-f", str(config)], cwd=paths.root, timeout=30)
    if checked.returncode != 0:
        raise ClusterError(f"haproxy refuses {config}:\n{checked.stderr.strip()}")
    pid_file = _lb_pid_file(paths, host)
    command = in_namespace(host.netns, [haproxy, "-f", str(config), "-D", "-p", str(pid_file)])
    started = run(command, cwd=paths.root, timeout=30)
    if started.returncode != 0 or lb_pid(paths, host) is None:
        raise ClusterError(f"{host.name}: haproxy did not start: {started.stderr.strip()}")
    progress(f"{host.name}: haproxy on {host.address} (pid {lb_pid(paths, host)})")


def stop_lb(paths: Paths, host: Host, progress: Progress) -> None:
    log = paths.data(host) / "haproxy.log"  # none: the error names where one would be
    stop_process(host.name, lb_pid(paths, host), signal.SIGTERM, "haproxy", log, progress)


def lb_servers(paths: Paths) -> dict[str, str]:
    """Return HAProxy's view of each API host: 'UP', 'DOWN', ... (empty if it cannot say)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stats:
            stats.settimeout(2)
            stats.connect(str(_stats_socket(paths)))
            stats.sendall(b"show stat\n")
            answer = b""
            while chunk := stats.recv(65536):
                answer += chunk
    except OSError:
        return {}
    states = {}
    for line in answer.decode().splitlines():
        fields = line.split(",")
        # haproxy.cfg's backend is named "api"; column 17 is each server's status.
        if len(fields) > 17 and fields[0] == "api" and fields[1] not in ("FRONTEND", "BACKEND"):
            states[fields[1]] = fields[17]
    return states
