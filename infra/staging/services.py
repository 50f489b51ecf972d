"""Start, find and stop each staging host's services inside its namespace.

PostgreSQL runs under Patroni on every database host, with an etcd member
beside it (Patroni's store): Patroni initialises the cluster on the
inventory's bootstrap host, clones the others, and from then on decides who
is the primary. Redis is driven by the same module as the local cluster
(``infra.redis_server``), only with a host's address, its rendered
configuration and its namespace. etcd, Patroni, the API (``gridlink serve``)
and HAProxy are started here, each with a pid file, so ``down`` stops exactly
what ``up`` started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis as redis_lib

from infra import postgres, redis_server
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
    ETCD_CLIENT_PORT,
    LOAD_BALANCER,
    PATRONI_PORT,
    POSTGRES_PORT,
    REDIS,
    REDIS_PORT,
    REDIS_SERVICE,
    SENTINEL,
    SENTINEL_PORT,
    Host,
    Inventory,
)
from infra.staging.patroni import patroni_bin

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


# Debian's PostgreSQL 15, what a real database host runs; `up` passes the one it found.
DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")


def write_configuration(inventory: Inventory, paths: Paths, pg_bin: Path = DEFAULT_PG_BIN) -> None:
    """Render every host's configuration files under var/staging/etc/<host>/."""
    for host in inventory.databases:
        _write(paths.etc(host) / "postgresql.conf", _pg_conf(paths, host))
        _write(paths.etc(host) / "pg_hba.conf", render.pg_hba_conf(host))
        _write(
            paths.etc(host) / "etcd.conf.yml",
            render.etcd_conf(inventory, host, _etcd_data(paths, host)),
        )
        files = render.PatroniFiles(
            data_dir=paths.data(host) / "pgdata",
            bin_dir=pg_bin,
            custom_conf=paths.etc(host) / "postgresql.conf",
            hba_file=paths.etc(host) / "pg_hba.conf",
            socket_dir=paths.data(host) / "run",
            pgpass=paths.data(host) / "pgpass",
        )
        _write(paths.etc(host) / "patroni.yml", render.patroni_yml(inventory, host, files))
    for redis_host in inventory.redis_hosts:
        _write(paths.etc(redis_host) / "redis.conf", render.redis_conf(redis_host))
    for sentinel in inventory.with_role(SENTINEL):
        directory = paths.data(sentinel)
        _write(
            paths.etc(sentinel) / "sentinel.conf",
            render.sentinel_conf(inventory, sentinel, directory),
        )
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


def redis(inventory: Inventory, paths: Paths, host: Host | None = None) -> RedisServer:
    """Return the Redis of ``host`` (default: the one the master starts on).

    The others start as its replicas; after that Sentinel decides who is the
    master and rewires the rest (a restarted old master included).
    """
    master = inventory.one(REDIS)
    host = master if host is None else host
    follow = () if host == master else ("--replicaof", master.address, str(REDIS_PORT))
    return RedisServer(
        host.name,
        host.address,
        REDIS_PORT,
        paths.data(host),
        config_file=paths.etc(host) / "redis.conf",
        settings=follow,
        netns=host.netns,
    )


def start_redis(tools: Tools, inventory: Inventory, paths: Paths, progress: Progress) -> None:
    """Start every Redis, then a Sentinel beside each (from a copy it may rewrite)."""
    for host in inventory.redis_hosts:
        redis_server.start(tools, redis(inventory, paths, host), progress)
    for host in inventory.with_role(SENTINEL):
        working = paths.data(host) / "sentinel.conf"
        if not working.exists():
            working.write_text((paths.etc(host) / "sentinel.conf").read_text())
        command = [tools.redis_server, str(working), "--sentinel"]
        _start_daemon(paths, host, "sentinel", command, progress)
    if not wait_until(lambda: redis_master(inventory) is not None, START_TIMEOUT):
        raise ClusterError("no Sentinel names a Redis master")


def redis_master(inventory: Inventory) -> str | None:
    """Return the address Sentinels give for the master ('host:port'), None if none answers."""
    for host in inventory.with_role(SENTINEL):
        client = redis_lib.Redis(host.address, SENTINEL_PORT, socket_timeout=1)
        try:
            answer = client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "get-master-addr-by-name", REDIS_SERVICE
            )
        except redis_lib.RedisError:
            continue
        finally:
            client.close()
        if answer:
            address, port = (part.decode() for part in answer)
            return f"{address}:{port}"
    return None


def stop_redis(inventory: Inventory, paths: Paths, progress: Progress) -> None:
    for host in inventory.with_role(SENTINEL):
        log = paths.data(host) / "sentinel.log"
        pid = daemon_pid(paths, host, "sentinel")
        stop_process(f"{host.name} sentinel", pid, signal.SIGTERM, "sentinel", log, progress)
    for host in inventory.redis_hosts:
        redis_server.stop(redis(inventory, paths, host), progress)


def start_databases(inventory: Inventory, paths: Paths, progress: Progress) -> Host:
    """Start etcd and Patroni on every database host; wait for a leader and return it.

    Patroni initialises the cluster on the bootstrap host the first time (it
    starts first), clones it onto the others, and restarts whatever was
    running before. The application's role and database are then made on
    whichever host leads.
    """
    for host in inventory.databases:
        make_pg_dir(paths.data(host), 0o755)
        make_pg_dir(paths.data(host) / "run", 0o755)
        _etcd_data(paths, host).parent.mkdir(parents=True, exist_ok=True)
    for host in inventory.databases:
        start_etcd(paths, host, progress)
    if not wait_until(
        lambda: all(etcd_answers(host) for host in inventory.databases), START_TIMEOUT
    ):
        raise ClusterError(
            f"etcd did not answer on every database host within {START_TIMEOUT:.0f} s; see "
            f"{paths.data(inventory.primary) / 'etcd.log'}"
        )
    for host in [inventory.primary, *inventory.replicas]:  # the bootstrap host first
        start_patroni(paths, host, progress)
        if host == inventory.primary:
            wait_for_leader(inventory, paths)
    if not wait_until(
        lambda: all(patroni_role(host) is not None for host in inventory.databases),
        3 * START_TIMEOUT,
    ):
        raise ClusterError(
            "Patroni did not bring every database host up within "
            f"{3 * START_TIMEOUT:.0f} s: {[(h.name, patroni_role(h)) for h in inventory.databases]}"
        )
    leader = wait_for_leader(inventory, paths)
    postgres.ensure_app_database(pg_server(paths, leader), DATABASE, DATABASE_USER, progress)
    progress(
        f"patroni: {leader.name} leads; "
        + ", ".join(f"{host.name} {patroni_role(host)}" for host in inventory.databases)
    )
    return leader


def _etcd_data(paths: Paths, host: Host) -> Path:
    return paths.data(host) / "etcd" / "data"


def etcd_answers(host: Host) -> bool:
    return http_status(f"{host.address}:{ETCD_CLIENT_PORT}", "/health") == 200


def patroni_role(host: Host) -> str | None:
    """Return 'primary' or 'replica' as Patroni's REST API says, None if it does not answer."""
    address = f"{host.address}:{PATRONI_PORT}"
    if http_status(address, "/primary", timeout=1.0) == 200:
        return "primary"
    if http_status(address, "/replica", timeout=1.0) == 200:
        return "replica"
    return None


def sync_standby(inventory: Inventory) -> Host | None:
    """Return the synchronous standby (the one Patroni may promote), as the leader sees it.

    The leader's ``/cluster`` rather than each member's own ``/synchronous``:
    a member learns that it became the standby a loop later, and the leader's
    view is the one ``failover_ready`` trusts too.
    """
    members = _cluster_members(inventory)
    names = [m.get("name") for m in members if m.get("role") == "sync_standby"]
    return next((host for host in inventory.databases if host.name in names), None)


def _cluster_members(inventory: Inventory) -> list[dict[str, Any]]:
    """Return the members of the leader's ``/cluster`` answer (none without a leader)."""
    host = leader(inventory)
    cluster = None if host is None else _patroni_json(host, "/cluster")
    members = [] if cluster is None else cluster.get("members", [])
    return [m for m in members if isinstance(m, dict)]


def failover_ready(inventory: Inventory) -> bool:
    """Tell whether staging is whole: one failover could happen now and nothing is still healing.

    Patroni's own view (the leader's ``/cluster``): a leader, a synchronous
    standby (in synchronous mode only it may be promoted), and every other
    member streaming on the leader's timeline. A member still rewinding or
    restarting is not: a second fault then would be two at once. And a
    Redis master.
    """
    members = _cluster_members(inventory)
    leaders = [m for m in members if m.get("role") == "leader"]
    if len(leaders) != 1 or len(members) != len(inventory.databases):
        return False
    timeline = leaders[0].get("timeline")
    standbys = [m for m in members if m.get("role") != "leader"]
    return (
        all(m.get("state") == "streaming" and m.get("timeline") == timeline for m in standbys)
        and any(m.get("role") == "sync_standby" for m in standbys)
        and redis_master(inventory) is not None
    )


def _patroni_json(host: Host, path: str) -> dict[str, Any] | None:
    """Return the JSON object Patroni's REST API answers at ``path``, None if it does not."""
    try:
        with urllib.request.urlopen(
            f"http://{host.address}:{PATRONI_PORT}{path}", timeout=2.0
        ) as answer:
            document = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def leader(inventory: Inventory) -> Host | None:
    """Return the database host Patroni made the primary, if one answers as it."""
    for host in inventory.databases:
        if patroni_role(host) == "primary":
            return host
    return None


def wait_for_leader(inventory: Inventory, paths: Paths) -> Host:
    found: list[Host] = []

    def has_leader() -> bool:
        host = leader(inventory)
        if host is not None:
            found.append(host)
        return host is not None

    if not wait_until(has_leader, 3 * START_TIMEOUT):
        log = paths.data(inventory.primary) / "patroni.log"
        raise ClusterError(f"Patroni elected no primary; {log} ends with:\n{log_tail(log)}")
    return found[-1]


def _daemon_pid_file(paths: Paths, host: Host, program: str) -> Path:
    return paths.data(host) / f"{program}.pid"


def daemon_pid(paths: Paths, host: Host, program: str) -> int | None:
    """Return the pid of the host's etcd or patroni, if it runs."""
    return live_pid(_daemon_pid_file(paths, host, program), program)


def _start_daemon(
    paths: Paths, host: Host, program: str, command: list[str], progress: Progress
) -> None:
    running = daemon_pid(paths, host, program)
    if running is not None:
        progress(f"{host.name}: {program} already running (pid {running})")
        return
    log = paths.data(host) / f"{program}.log"
    with log.open("ab") as output:
        started = subprocess.Popen(  # `ip netns exec` and setpriv exec: this pid is the program's
            in_namespace(host.netns, command),
            cwd=paths.root,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _daemon_pid_file(paths, host, program).write_text(f"{started.pid}\n")
    progress(f"{host.name}: {program} started (pid {started.pid}, log {log})")


def start_etcd(paths: Paths, host: Host, progress: Progress) -> None:
    config = paths.etc(host) / "etcd.conf.yml"
    _start_daemon(paths, host, "etcd", ["etcd", "--config-file", str(config)], progress)


def start_patroni(paths: Paths, host: Host, progress: Progress) -> None:
    """Run Patroni as the postgres user (PostgreSQL refuses root) in the host's namespace."""
    config = paths.etc(host) / "patroni.yml"
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    patroni = str(patroni_bin(progress) / "patroni")
    _start_daemon(paths, host, "patroni", [*as_postgres, patroni, str(config)], progress)


def switchover(paths: Paths, leader: Host, candidate: Host) -> None:
    """Hand the primary over from ``leader`` to ``candidate`` with ``patronictl switchover``."""
    config = paths.etc(leader) / "patroni.yml"
    patronictl = str(patroni_bin(lambda _line: None) / "patronictl")
    command = [patronictl, "-c", str(config), "switchover", "--leader", leader.name]
    done = run([*command, "--candidate", candidate.name, "--force"], paths.root, START_TIMEOUT)
    if done.returncode != 0:
        raise ClusterError(f"patronictl switchover failed: {(done.stderr or done.stdout).strip()}")


def stop_databases(inventory: Inventory, paths: Paths, progress: Progress) -> None:
    """Stop Patroni (it stops its PostgreSQL) on every host, then etcd."""
    for host in inventory.databases:
        log = paths.data(host) / "patroni.log"
        pid = daemon_pid(paths, host, "patroni")
        stop_process(f"{host.name} patroni", pid, signal.SIGTERM, "patroni", log, progress)
    for host in inventory.databases:
        postgres.stop(pg_server(paths, host), progress)  # a PostgreSQL Patroni left behind
    for host in inventory.databases:
        log = paths.data(host) / "etcd.log"
        pid = daemon_pid(paths, host, "etcd")
        stop_process(f"{host.name} etcd", pid, signal.SIGTERM, "etcd", log, progress)


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
