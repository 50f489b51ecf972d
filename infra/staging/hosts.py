"""Start, find and stop each staging host's programs inside its namespace.

PostgreSQL runs under Patroni on every database host, with an etcd member
beside it (Patroni's store): Patroni initialises the cluster on the
inventory's bootstrap host, clones the others, and from then on decides who
is the primary. Redis is driven by the same module as the local cluster
(``infra.redis_server``), only with a host's address, its rendered
configuration and its namespace. etcd, Patroni, Sentinel, the API, HAProxy
and keepalived are each a ``Daemon`` (``infra.daemons``): started in the foreground of the
host's namespace with a pid file and a log, so ``down`` stops exactly what
``up`` started.
"""

from __future__ import annotations

import os
import socket
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

import redis as redis_lib

from gridlink.project import VAR
from gridlink.settings import Settings
from infra import postgres, redis_server
from infra.binaries import Tools
from infra.daemons import START_TIMEOUT, Daemon
from infra.errors import ClusterError, Progress
from infra.files import give_to, make_folder_for, make_pg_dir, reachable_root, write_private
from infra.http_client import basic_auth
from infra.postgres import PgServer
from infra.processes import as_account, log_tail, port_answers, run, wait_until
from infra.redis_server import RedisServer
from infra.serving import ApiServer, environment_for, http_status, serve
from infra.staging import access, database_roles, network, render
from infra.staging.inventory import (
    ALERTMANAGER_PORT,
    API_PORT,
    ETCD_CLIENT_PORT,
    FLOATING_ADDRESS,
    LOAD_BALANCER_TLS_PORT,
    MONITORING,
    NODE_EXPORTER_PORT,
    POSTGRES_PORT,
    PROMETHEUS_PORT,
    REDIS,
    REDIS_EXPORTER_PORT,
    REDIS_PORT,
    REDIS_SERVICE,
    SENTINEL,
    SENTINEL_PORT,
    Host,
    Inventory,
)
from infra.staging.paths import Paths
from infra.staging.patroni import cluster_members, leader, patroni_role, patroni_venv
from infra.staging.redis_acl import MONITOR_USER, PASSWORD_OF, RedisAccess
from infra.staging.secrets import Secrets

# What a daemon given an environment of its own inherits: where to find programs.
_BASE_ENVIRONMENT = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def as_user(user: str) -> list[str]:
    """Return the prefix that runs a command as ``user`` (setpriv execs: the pid stays the same).

    With ``user``'s own environment (HOME above all: libpq looks for client
    certificates under ~/.postgresql, and root's home is closed to others).
    """
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--reset-env", "--"]


def web_login() -> dict[str, str]:
    """Return the header that logs into Prometheus's and Alertmanager's web (basic auth)."""
    return basic_auth(render.WEB_USER, access.secrets().password(render.WEB_PASSWORD_SECRET))


class HostDaemon(Daemon):
    """A program on one staging host: pid file and log in the host's data folder.

    One with a ``user`` runs as that user (root launches it and drops to it
    with ``setpriv``), and its log and pid file are that user's too.
    """

    user: str | None = None

    def __init__(
        self,
        paths: Paths,
        host: Host,
        command: list[str],
        *,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            f"{host.name} {self.program}",
            self._as_user(environment) + command,
            pid_file=paths.data(host) / f"{self.program}.pid",
            log=paths.data(host) / f"{self.program}.log",
            cwd=paths.root,
            netns=host.netns,
            environment=None if environment is None else {**_BASE_ENVIRONMENT, **environment},
        )
        self.host = host

    def _as_user(self, environment: Mapping[str, str] | None) -> list[str]:
        """The prefix that drops to ``user``: with its own environment, or with ``environment``
        (a secret a program reads only from there) when it is given one."""
        if self.user is None:
            return []
        return as_user(self.user) if environment is None else as_account(self.user)

    def launch(self) -> int:
        if self.user is None:
            return super().launch()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch(mode=0o640)
        give_to(self.log, self.user, 0o640)
        pid = super().launch()
        give_to(self.pid_file, self.user, 0o644)
        return pid


class Etcd(HostDaemon):
    """An etcd member as the etcd user, TLS only (clients and peers show a certificate)."""

    program = "etcd"
    user = "etcd"

    def __init__(self, paths: Paths, host: Host) -> None:
        config = paths.etc(host) / "etcd.conf.yml"
        self.data_dir = paths.etcd_data(host)
        super().__init__(paths, host, ["etcd", "--config-file", str(config)])

    def launch(self) -> int:
        folder = self.data_dir.parent  # the member's data (and its WAL), the etcd user's alone
        folder.mkdir(parents=True, exist_ok=True)
        for directory, _folders, files in os.walk(folder):
            give_to(Path(directory), self.user, 0o700)
            for name in files:
                give_to(Path(directory) / name, self.user, 0o600)
        return super().launch()

    def answers(self) -> bool:
        address = f"{self.host.address}:{ETCD_CLIENT_PORT}"
        return access.https_status(address, "/health", client_certificate=True) == 200


class Patroni(HostDaemon):
    """Patroni as the postgres user (PostgreSQL refuses root); it runs the host's PostgreSQL."""

    program = "patroni"
    user = "postgres"

    def __init__(self, paths: Paths, host: Host) -> None:
        patroni = str(patroni_venv() / "bin" / "patroni")  # `staging up` installs it first
        super().__init__(paths, host, [patroni, str(paths.etc(host) / "patroni.yml")])


class Sentinel(HostDaemon):
    """A Redis Sentinel as redis, run from a copy of its rendered file (Sentinel rewrites it).

    The copy is made once: after that it holds what Sentinel learnt (the
    master of the moment, the other Sentinels) and its users' passwords.
    """

    program = "sentinel"
    user = render.REDIS_ACCOUNT

    def __init__(self, paths: Paths, host: Host, redis_server_binary: str = "redis-server") -> None:
        self.working_config = paths.data(host) / "sentinel.conf"
        self.rendered_config = paths.etc(host) / "sentinel.conf"
        command = [redis_server_binary, str(self.working_config), "--sentinel"]
        super().__init__(paths, host, command)

    def launch(self) -> int:
        make_folder_for(self.working_config.parent, render.REDIS_ACCOUNT)
        if not self.working_config.exists():
            text = self.rendered_config.read_text()
            write_private(self.working_config, text, render.REDIS_ACCOUNT)
        return super().launch()


class HAProxy(HostDaemon):
    """HAProxy in the foreground (``-db``), once ``haproxy -c`` accepts the rendered file."""

    program = "haproxy"

    def __init__(self, paths: Paths, host: Host, haproxy_binary: str = "haproxy") -> None:
        self.config = paths.etc(host) / "haproxy.cfg"
        self.binary = haproxy_binary
        super().__init__(paths, host, [haproxy_binary, "-f", str(self.config), "-db"])

    def launch(self) -> int:
        checked = run([self.binary, "-c", "-q", "-f", str(self.config)], self.cwd, timeout=30)
        if checked.returncode != 0:
            raise ClusterError(f"haproxy refuses {self.config}:\n{checked.stderr.strip()}")
        return super().launch()

    def answers(self) -> bool:
        return port_answers(LOAD_BALANCER_TLS_PORT, self.host.address)


class Keepalived(HostDaemon):
    """keepalived's VRRP side in the foreground, holding the floating address with the other LBs.

    Its own pid files are named apart from ours: keepalived removes them when it stops.
    """

    program = "keepalived"

    def __init__(self, paths: Paths, host: Host, keepalived_binary: str = "keepalived") -> None:
        self.config = paths.etc(host) / "keepalived.conf"
        self.textfiles = paths.textfiles(host)  # where its notify script writes its state
        self.binary = keepalived_binary
        data = paths.data(host)
        # keepalived's own pid files: a killed keepalived leaves them behind, and one
        # naming a pid reused since makes a new keepalived think it already runs.
        self.own_pid_files = (data / "keepalived-main.pid", data / "keepalived-vrrp.pid")
        super().__init__(
            paths,
            host,
            [
                keepalived_binary,
                "--dont-fork",
                "--log-console",
                "--no-syslog",
                "--vrrp",
                "--use-file",
                str(self.config),
                "--pid",
                str(self.own_pid_files[0]),
                "--vrrp_pid",
                str(self.own_pid_files[1]),
            ],
        )

    def launch(self) -> int:
        checked = run([self.binary, "--config-test", "-f", str(self.config)], self.cwd, timeout=30)
        if checked.returncode != 0:
            raise ClusterError(f"keepalived refuses {self.config}:\n{checked.stderr.strip()}")
        self.textfiles.mkdir(parents=True, exist_ok=True)
        for stale in self.own_pid_files:  # not running (start checked): left by a killed one
            stale.unlink(missing_ok=True)
        return super().launch()

    def answers(self) -> bool:
        """Tell whether its VRRP process started: it writes its pid file then."""
        return self.own_pid_files[1].exists()


class Prometheus(HostDaemon):
    """Prometheus (Debian's) on the monitoring host, with the alert rules beside its file."""

    program = "prometheus"
    user = render.PROMETHEUS_ACCOUNT

    def __init__(self, paths: Paths, host: Host, binary: str = "prometheus") -> None:
        self.storage = paths.data(host) / "prometheus"
        super().__init__(
            paths,
            host,
            [
                binary,
                f"--config.file={paths.etc(host) / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.storage}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address={host.address}:{PROMETHEUS_PORT}",
                f"--web.config.file={paths.etc(host) / 'prometheus-web.yml'}",
            ],
        )

    def launch(self) -> int:
        make_folder_for(self.storage, render.PROMETHEUS_ACCOUNT)
        return super().launch()

    def answers(self) -> bool:
        address = f"https://{self.host.address}:{PROMETHEUS_PORT}"
        return http_status(address, "/-/ready", headers=web_login()) == 200


class Alertmanager(HostDaemon):
    """Alertmanager (Debian's prometheus-alertmanager), alone: no cluster of them."""

    program = "alertmanager"
    user = render.PROMETHEUS_ACCOUNT

    def __init__(self, paths: Paths, host: Host, binary: str = "prometheus-alertmanager") -> None:
        self.storage = paths.data(host) / "alertmanager"
        super().__init__(
            paths,
            host,
            [
                binary,
                f"--config.file={paths.etc(host) / 'alertmanager.yml'}",
                f"--storage.path={self.storage}",
                f"--web.listen-address={host.address}:{ALERTMANAGER_PORT}",
                f"--web.config.file={paths.etc(host) / 'alertmanager-web.yml'}",
                "--cluster.listen-address=",
            ],
        )

    def launch(self) -> int:
        make_folder_for(self.storage, render.PROMETHEUS_ACCOUNT)
        return super().launch()

    def answers(self) -> bool:
        address = f"https://{self.host.address}:{ALERTMANAGER_PORT}"
        return http_status(address, "/-/ready", headers=web_login()) == 200


class RedisExporter(HostDaemon):
    """redis_exporter on the monitoring host: Prometheus names each Redis or Sentinel to scrape."""

    program = "redis-exporter"
    user = render.PROMETHEUS_ACCOUNT

    def __init__(self, paths: Paths, host: Host, binary: str = "prometheus-redis-exporter") -> None:
        secrets = Secrets(paths.secrets)
        names = [host.address, host.name]
        served = secrets.certificate(host.name, "redis-exporter", names, render.PROMETHEUS_ACCOUNT)
        super().__init__(
            paths,
            host,
            [
                binary,
                f"-web.listen-address={host.address}:{REDIS_EXPORTER_PORT}",
                # No Redis of its own (-redis.addr ""): only the targets of /scrape?target=,
                # each over TLS verified against the CA, as `monitor`.
                "-redis.addr=",
                f"-redis.user={MONITOR_USER}",
                f"-tls-ca-cert-file={secrets.ca_certificate}",
                f"-tls-server-cert-file={served.certificate}",
                f"-tls-server-key-file={served.key}",
            ],
            # The password in its environment (never its command line: `ps` shows that).
            environment={"REDIS_PASSWORD": secrets.password(PASSWORD_OF[MONITOR_USER])},
        )

    def answers(self) -> bool:
        return http_status(f"https://{self.host.address}:{REDIS_EXPORTER_PORT}", "/") == 200


class NodeExporter(HostDaemon):
    """A node exporter serving only the host's textfiles (keepalived's state on a load balancer)."""

    program = "node-exporter"
    user = render.PROMETHEUS_ACCOUNT

    def __init__(self, paths: Paths, host: Host, binary: str = "prometheus-node-exporter") -> None:
        self.textfiles = paths.textfiles(host)
        super().__init__(
            paths,
            host,
            [
                binary,
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={paths.textfiles(host)}",
                f"--web.listen-address={host.address}:{NODE_EXPORTER_PORT}",
                f"--web.config.file={paths.etc(host) / 'node-exporter-web.yml'}",
            ],
        )

    def launch(self) -> int:
        self.textfiles.mkdir(parents=True, exist_ok=True)
        return super().launch()

    def answers(self) -> bool:
        return http_status(f"https://{self.host.address}:{NODE_EXPORTER_PORT}", "/metrics") == 200


def monitoring_daemons(paths: Paths, inventory: Inventory) -> list[HostDaemon]:
    """Return what the monitoring host runs, and the node exporters of the load balancers."""
    daemons: list[HostDaemon] = [NodeExporter(paths, lb) for lb in inventory.load_balancers]
    for host in inventory.with_role(MONITORING):
        daemons += [RedisExporter(paths, host), Alertmanager(paths, host), Prometheus(paths, host)]
    return daemons


def api_server(paths: Paths, host: Host) -> ApiServer:
    """Return the host's API server, serving with its rendered environment file.

    Only what a real host's unit would have: its env file, no GRIDLINK_* of ours.
    """
    variables = render.parse_env((paths.etc(host) / "api.env").read_text())
    settings = Settings.from_env(variables)
    home = paths.data(host) / "home"  # the gridlink user's, for what gunicorn keeps there
    server = serve(
        settings,
        pid_file=paths.data(host) / "gunicorn.pid",
        log=paths.data(host) / "gunicorn.log",
        netns=host.netns,
        # Every variable of the file, as systemd's EnvironmentFile passes them.
        environment={**environment_for(settings, **variables), "HOME": str(home)},
    )
    _, *gunicorn = server.command  # [this interpreter, -m, gunicorn, ...]
    python = api_python(paths)
    server.command = [*as_account(render.API_ACCOUNT), str(python), *gunicorn]
    return server


def api_python(paths: Paths) -> Path:
    """Return the interpreter the API hosts run: the machine's Python with this checkout's
    packages, in a folder the gridlink user can reach (as /opt/gridlink/.venv on a real host).

    The checkout's own virtualenv may be built on an interpreter only root can
    reach (pyenv under /root); the gridlink user could not run it, nor start the
    change relay with it. A virtualenv of the machine's Python (same minor
    version) that adds the checkout's site-packages runs the same code.
    """
    packages = Path(sysconfig.get_paths()["purelib"])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = Path(f"/usr/bin/python{version}")
    if not system.exists():
        raise ClusterError(f"the API hosts run {system} (this checkout's Python {version})")
    venv = reachable_root(VAR / "tools") / f"api-python-{version}"
    python = venv / "bin" / "python"
    link = venv / "lib" / f"python{version}" / "site-packages" / "gridlink-checkout.pth"
    wanted = f"import site; site.addsitedir({str(packages)!r})\n"
    if not (python.exists() and link.exists() and link.read_text() == wanted):
        made = run([str(system), "-m", "venv", "--without-pip", str(venv)], Path("/"), timeout=60)
        if made.returncode != 0:
            raise ClusterError(f"making {venv} failed: {made.stderr.strip()}")
        link.write_text(wanted)
    return python


# --------------------------------------------------------------------------- PostgreSQL, Redis


def pg_server(paths: Paths, host: Host) -> PgServer:
    """Return the PostgreSQL server of a database host, configured from its rendered files.

    Asked as the superuser over verified TLS, its password from the operator's passfile.
    """
    return PgServer(
        name=host.name,
        host=host.address,
        port=POSTGRES_PORT,
        data_dir=paths.data(host) / "pgdata",
        conf=(paths.etc(host) / "postgresql.conf").read_text(),
        hba=(paths.etc(host) / "pg_hba.conf").read_text(),
        socket_dir=paths.data(host) / "run",
        netns=host.netns,
        client_options=tuple(access.libpq_options().items()),
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
        tls=True,
        client_options=monitor_access().client_options(),
        account=render.REDIS_ACCOUNT,
    )


def monitor_access() -> RedisAccess:
    """How ``gridlink staging`` asks Redis and Sentinel anything: TLS, as ``monitor``."""
    return RedisAccess.of(access.secrets(), MONITOR_USER)


def start_redis(tools: Tools, inventory: Inventory, paths: Paths, progress: Progress) -> None:
    """Start every Redis, then a Sentinel beside each, all as the redis user."""
    for host in inventory.redis_hosts:
        make_folder_for(paths.data(host), render.REDIS_ACCOUNT)
        redis_server.start(tools, redis(inventory, paths, host), progress)
    for host in inventory.with_role(SENTINEL):
        Sentinel(paths, host, tools.redis_server).start(progress)
    if not wait_until(lambda: redis_master(inventory) is not None, START_TIMEOUT):
        raise ClusterError("no Sentinel names a Redis master")


def redis_master(inventory: Inventory) -> str | None:
    """Return the address Sentinels give for the master ('host:port'), None if none answers."""
    options = monitor_access().client_options()
    for host in inventory.with_role(SENTINEL):
        client = redis_lib.Redis(host.address, SENTINEL_PORT, socket_timeout=1, **options)
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
        Sentinel(paths, host, "redis-server").stop(progress)
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
        paths.etcd_data(host).parent.mkdir(parents=True, exist_ok=True)
    members = [Etcd(paths, host) for host in inventory.databases]
    for etcd in members:  # a member answers only once a quorum has formed: start all first
        etcd.start(progress, wait=False)
    for etcd in members:
        etcd.wait_until_answering()
    for host in [inventory.primary, *inventory.replicas]:  # the bootstrap host first
        Patroni(paths, host).start(progress)
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
    found = wait_for_leader(inventory, paths)
    database_roles.ensure(found, Secrets(paths.secrets), progress)
    progress(
        f"patroni: {found.name} leads; "
        + ", ".join(f"{host.name} {patroni_role(host)}" for host in inventory.databases)
    )
    return found


def failover_ready(inventory: Inventory) -> bool:
    """Tell whether staging is whole: one failover could happen now and nothing is still healing.

    Patroni's own view (the leader's ``/cluster``): a leader, a synchronous
    standby (in synchronous mode only it may be promoted), and every other
    member streaming on the leader's timeline. A member still rewinding or
    restarting is not: a second fault then would be two at once. And a
    Redis master.
    """
    members = cluster_members(inventory)
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


def stop_databases(inventory: Inventory, paths: Paths, progress: Progress) -> None:
    """Stop Patroni (it stops its PostgreSQL) on every host, then etcd."""
    for host in inventory.databases:
        Patroni(paths, host).stop(progress)
    for host in inventory.databases:
        postgres.stop(pg_server(paths, host), progress)  # a PostgreSQL Patroni left behind
    for host in inventory.databases:
        Etcd(paths, host).stop(progress)


# --------------------------------------------------------------------------- the API and the LB


def api_answers(host: Host, path: str = "/healthz") -> int | None:
    """Return the HTTP status of ``path`` on the host's API (https), or None if no answer."""
    return http_status(f"https://{host.address}:{API_PORT}", path)


def floating_address_holders(inventory: Inventory) -> list[Host]:
    """Return the load balancers whose interface has the floating address now (one, normally)."""
    up = set(network.namespaces())
    return [
        lb
        for lb in inventory.load_balancers
        if lb.netns in up and FLOATING_ADDRESS in network.addresses(lb)
    ]


def lb_servers(paths: Paths, lb: Host) -> dict[str, str]:
    """Return ``lb``'s HAProxy's view of each API host: 'UP', 'DOWN', ... (empty: no answer)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stats:
            stats.settimeout(2)
            stats.connect(str(paths.stats_socket(lb)))
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
