"""`gridlink staging up|status|down|fault`: staging's hosts on this machine, from the inventory.

``up`` is idempotent: it renders the configuration, creates what is missing
of the network, starts what is stopped, migrates, seeds when asked and waits
until the load balancer finds every API host healthy. ``down`` stops every
service by its pid file, kills whatever else still runs in a namespace, and
removes the namespaces and the bridge; ``--purge`` deletes the data too.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gridlink.db.urls import sqlalchemy_url
from gridlink.ops.migrate import migrate
from gridlink.ops.text_table import align_rows
from infra import binaries, http_client, redis_server
from infra.errors import ClusterError, Progress
from infra.files import check_postgres_can_enter, make_folder_for
from infra.monitoring import query
from infra.processes import run, wait_until
from infra.seeding import Seeded, ensure_seeded
from infra.serving import http_status
from infra.staging import (
    access,
    database_roles,
    faults,
    hosts,
    network,
    patroni,
    render,
    rotation,
)
from infra.staging.inventory import (
    API,
    BRIDGE,
    FLOATING_ADDRESS,
    LOAD_BALANCER_TLS_PORT,
    MONITORING,
    OWNER_ROLE,
    STAGING,
    DatabaseLogin,
    Host,
    Inventory,
)
from infra.staging.paths import Paths
from infra.staging.secrets import Secrets
from infra.status import database_rows

STAGING_ROOT = access.STAGING_ROOT
READY_TIMEOUT = 60.0
_ABSENT = "host not up"
SEED_SHAPE = (4, 5)  # grids per user, links per grid: `make loadtest`'s profiles
# Debian's packages: Prometheus and Alertmanager on the monitoring host, the Redis
# exporter beside them, a node exporter on each load balancer (keepalived's state).
MONITORING_PACKAGES = (
    ("prometheus", "prometheus"),
    ("prometheus-alertmanager", "prometheus-alertmanager"),
    ("prometheus-redis-exporter", "prometheus-redis-exporter"),
    ("prometheus-node-exporter", "prometheus-node-exporter"),
)  # grids per user, links per grid: `make loadtest`'s profiles


def default_paths() -> Paths:
    return Paths(access.default_root())


def seed_state(paths: Paths) -> Path:
    return paths.root / "seeded.json"


def _require_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise ClusterError(
            "Staging runs its hosts in network namespaces: run it as root on a machine "
            "with `ip` (iproute2)."
        )


def operate(paths: Paths, inventory: Inventory = STAGING) -> None:
    """Act as the operator of the staging under ``paths`` from now on, in this process.

    Its services are reached as ``infra.staging.access`` says (this staging's
    secrets); HTTPS is verified against its CA; Prometheus and Alertmanager are
    logged into with their web password. Nothing is made here: before the
    first ``up`` there is nothing to trust yet.
    """
    access.use(paths.root)
    secrets = Secrets(paths.secrets)
    if access.ca_file().exists():
        http_client.trust(access.ca_file())
    if secrets.has(render.WEB_PASSWORD_SECRET):
        login = hosts.web_login()
        for address in (inventory.prometheus_address, inventory.alertmanager_address):
            http_client.remember_login(address, login)


def ensure_account(name: str, progress: Progress) -> None:
    """Make the system user ``name`` (no home, no login shell) unless it exists."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    made = run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        Path("/"),
        timeout=30,
    )
    if made.returncode != 0:
        raise ClusterError(f"useradd {name} failed: {made.stderr.strip()}")
    progress(f"made the system user {name}")


def up(
    paths: Paths,
    seed_users: int | None = None,
    progress: Progress = print,
    inventory: Inventory = STAGING,
) -> Seeded | None:
    """Bring every host of staging up (idempotent); seed ``seed_users`` users when asked."""
    _require_root()
    access.use(paths.root)
    tools = binaries.tools(progress)
    haproxy = binaries.program("haproxy", "haproxy", progress)
    keepalived = binaries.program("keepalived", "keepalived", progress)
    curl = binaries.program("curl", "curl", progress)  # keepalived's check of HAProxy
    for program, package in MONITORING_PACKAGES:
        binaries.program(program, package, progress)
    binaries.program("tc", "iproute2", progress)
    paths.root.mkdir(parents=True, exist_ok=True)
    check_postgres_can_enter(paths.root.resolve())
    patroni.patroni_bin(progress)
    binaries.program("etcd", "etcd-server", progress)
    ensure_account(render.API_ACCOUNT, progress)
    render.write_configuration(inventory, paths, Path(tools.initdb).parent, curl)
    database_roles.write_operator_passfile(Secrets(paths.secrets))  # before any connection
    operate(paths, inventory)
    inventory.write(paths.inventory_file)
    progress(f"configuration rendered under {paths.root / 'etc'}; hosts in {paths.inventory_file}")
    network.create(inventory.hosts, progress)
    leader = hosts.start_databases(inventory, paths, progress)
    hosts.start_redis(tools, inventory, paths, progress)
    # The leader itself, not the multi-host URL: a host booting again may
    # accept a connection and close it while it starts, and libpq gives up there.
    # Migrations and seeding as the owner of the database's objects, not as the API;
    # `gridlink seed` gets the owner's URL, password included, in its environment alone.
    secrets = Secrets(paths.secrets)
    password = secrets.password(database_roles.OWNER_SECRET)
    owner = DatabaseLogin(OWNER_ROLE, secrets.ca_certificate, password=password)
    migrate(sqlalchemy_url(inventory.database_url(leader, owner)))
    progress("migrated the primary")
    seeded = None
    if seed_users is not None:
        shape = (seed_users, *SEED_SHAPE)
        settings = render.staging_settings(inventory, owner, secrets)
        seeded = ensure_seeded(settings, seed_state(paths), shape, progress)
    for host in inventory.with_role(API):
        make_folder_for(paths.mail(host), render.API_ACCOUNT)
        make_folder_for(paths.data(host) / "home", render.API_ACCOUNT)
        hosts.api_server(paths, host).start(progress)
    for lb in inventory.load_balancers:
        hosts.HAProxy(paths, lb, haproxy).start(progress)
    for lb in inventory.load_balancers:  # each checks its own HAProxy, which answers by now
        hosts.Keepalived(paths, lb, keepalived).start(progress)
    if not wait_until(lambda: lb_ready(inventory, paths), READY_TIMEOUT):
        balancers = inventory.load_balancers
        raise ClusterError(
            "the load balancers did not find every API host healthy, or none took the floating "
            f"address, within {READY_TIMEOUT:.0f} s: "
            + ", ".join(f"{lb.name} {hosts.lb_servers(paths, lb)}" for lb in balancers)
            + f"; holders: {[lb.name for lb in hosts.floating_address_holders(inventory)]}"
        )
    for daemon in hosts.monitoring_daemons(paths, inventory):
        daemon.start(progress)
    progress(
        f"staging is up: {inventory.load_balancer_url} (CA: {access.ca_file()}); "
        f"Prometheus: {inventory.prometheus_address} (user {render.WEB_USER}, its password in "
        f"{Secrets(paths.secrets).root / 'passwords' / render.WEB_PASSWORD_SECRET})"
    )
    return seeded


def lb_ready(inventory: Inventory, paths: Paths) -> bool:
    """Tell whether the load balancers are whole: keepalived runs on each, each HAProxy finds
    every API host UP, one holds the floating address, and through it the API is ready."""
    apis = {host.name for host in inventory.with_role(API)}
    for lb in inventory.load_balancers:
        if hosts.Keepalived(paths, lb).pid() is None:
            return False  # one load balancer short: the next fault would leave no holder
        states = hosts.lb_servers(paths, lb)
        if not all(states.get(name) == "UP" for name in apis):
            return False
    return len(hosts.floating_address_holders(inventory)) == 1 and (
        http_status(inventory.load_balancer_address, "/readyz") == 200
    )


@dataclass(frozen=True)
class HostStatus:
    """One line of `gridlink staging status`: a host's service and how it is doing."""

    host: Host
    service: str
    pid: int | None
    health: str
    lag: str = "-"


def status(paths: Paths, inventory: Inventory = STAGING) -> list[HostStatus]:
    """Report each host's service, pid and health (databases: replication state and lag).

    Only hosts whose namespace is on the bridge are asked anything: without
    the bridge, 10.77.0.0/24 would go out by the machine's default route.
    """
    operate(paths, inventory)
    up = set(network.namespaces()) if network.link_exists(BRIDGE) else set()
    rows = []
    if _configured(paths, inventory) and all(host.netns in up for host in inventory.databases):
        # The leader first: lag is measured against it, wherever Patroni put it.
        leader = patroni.leader(inventory) or inventory.primary
        databases = [leader, *(host for host in inventory.databases if host != leader)]
        servers = [hosts.pg_server(paths, host) for host in databases]
        for host, row in zip(databases, database_rows(servers[0], servers[1:]), strict=True):
            health = row.state or ("running" if row.running else "stopped")
            lag = "-" if row.lag_seconds is None else f"{row.lag_seconds:.1f} s, {row.lag_bytes} B"
            role = patroni.patroni_role(host) or "no answer"
            service = f"postgresql ({row.role}), patroni: {role}"
            rows.append(HostStatus(host, service, row.pid, health, lag))
    else:
        rows += [HostStatus(host, "postgresql", None, _ABSENT) for host in inventory.databases]
    master = hosts.redis_master(inventory) if up else None
    for redis_host in inventory.redis_hosts:
        redis = hosts.redis(inventory, paths, redis_host)
        redis_health = _ABSENT
        if redis_host.netns in up:
            answering = redis_server.answers(redis.host, redis.port, redis.client_options)
            redis_health = "ok" if answering else "no answer"
        role = "master" if master == f"{redis.host}:{redis.port}" else "replica"
        service = f"redis ({role}), sentinel"
        rows.append(HostStatus(redis_host, service, redis_server.pid(redis), redis_health))
    lb_states = {lb.name: hosts.lb_servers(paths, lb) for lb in inventory.load_balancers}
    for host in inventory.with_role(API):
        health = _ABSENT
        if host.netns in up:
            ready = hosts.api_answers(host, "/readyz")
            seen = "/".join(states.get(host.name, "?") for states in lb_states.values())
            health = f"readyz {ready or 'no answer'}, lbs: {seen}"
        api_pid = hosts.api_server(paths, host).pid() if _configured(paths, inventory) else None
        rows.append(HostStatus(host, "gridlink serve", api_pid, health))
    holders = hosts.floating_address_holders(inventory) if up else []
    for lb in inventory.load_balancers:
        health = _ABSENT
        if lb.netns in up:
            ready = http_status(f"https://{lb.address}:{LOAD_BALANCER_TLS_PORT}", "/readyz")
            health = f"readyz {ready or 'no answer'}"
        holds = f", holds {FLOATING_ADDRESS}" if lb in holders else ""
        keepalived = "keepalived" if hosts.Keepalived(paths, lb).pid() else "keepalived down"
        service = f"haproxy, {keepalived}{holds}"
        rows.append(HostStatus(lb, service, hosts.HAProxy(paths, lb).pid(), health))
    for monitor in inventory.with_role(MONITORING):
        prometheus = hosts.Prometheus(paths, monitor)
        health = _ABSENT
        if monitor.netns in up:
            firing = query.firing(inventory.prometheus_address)
            health = (
                "no answer" if firing is None else f"alerts firing: {', '.join(firing) or 'none'}"
            )
        service = "prometheus, alertmanager, redis exporter"
        rows.append(HostStatus(monitor, service, prometheus.pid(), health))
    return rows


def _configured(paths: Paths, inventory: Inventory) -> bool:
    return all((paths.etc(host) / "postgresql.conf").exists() for host in inventory.databases)


def format_status(rows: Sequence[HostStatus]) -> str:
    header = ("HOST", "NAMESPACE", "ADDRESS", "LINK", "SERVICE", "PID", "HEALTH", "LAG")
    table = [header] + [
        (
            row.host.name,
            row.host.netns,
            row.host.address,
            _link(row.host),
            row.service,
            "-" if row.pid is None else str(row.pid),
            row.health,
            row.lag,
        )
        for row in rows
    ]
    return "\n".join(align_rows(table))


def _link(host: Host) -> str:
    if host.netns not in network.namespaces():
        return "absent"
    if not network.link_up(host):
        return "down"
    delay = network.delay_of(host)
    return "up" if delay is None else f"up +{delay}"


def down(
    paths: Paths, purge: bool = False, progress: Progress = print, inventory: Inventory = STAGING
) -> None:
    """Stop every service, kill what is left in the namespaces, remove the network; purge data.

    Purging removes the staging's secrets with its data: the next one makes its own.
    """
    _require_root()
    operate(paths, inventory)
    for host in inventory.hosts:
        if host.netns in network.namespaces():
            network.set_link(host, up=True)  # a cut link must not hold up a clean shutdown
    for daemon in reversed(hosts.monitoring_daemons(paths, inventory)):
        daemon.stop(progress)
    for lb in inventory.load_balancers:
        hosts.Keepalived(paths, lb).stop(progress)  # it gives the floating address up
        hosts.HAProxy(paths, lb).stop(progress)
    if _configured(paths, inventory):
        for host in inventory.with_role(API):
            hosts.api_server(paths, host).stop(progress)
        hosts.stop_databases(inventory, paths, progress)
    hosts.stop_redis(inventory, paths, progress)
    for host in inventory.hosts:
        if host.netns in network.namespaces():
            left = faults.kill_host(host)
            if left:
                progress(f"{host.name}: killed {len(left)} leftover processes")
    network.destroy(progress)
    if purge and paths.root.exists():
        shutil.rmtree(paths.root)
        progress(f"removed {paths.root}")


def rotate_secrets(
    paths: Paths, progress: Progress = print, inventory: Inventory = STAGING
) -> None:
    """Replace the API's passwords and the token cache's key without a failed request."""
    _require_root()
    operate(paths, inventory)
    if not lb_ready(inventory, paths):
        raise ClusterError("staging is not whole (`gridlink staging status`): rotate once it is.")
    rotation.rotate_secrets(paths, inventory, progress)


FAULTS = ("kill", "cut", "restore", "delay")


def switchover(
    paths: Paths,
    candidate_name: str | None = None,
    progress: Progress = print,
    inventory: Inventory = STAGING,
) -> None:
    """Hand the primary over to ``candidate_name`` (default: the synchronous standby)."""
    _require_root()
    operate(paths, inventory)
    leader = patroni.leader(inventory)
    if leader is None:
        raise ClusterError("no database host answers as Patroni's leader; nothing to hand over.")
    candidate = (
        patroni.sync_standby(inventory)
        if candidate_name is None
        else inventory.named(candidate_name)
    )
    if candidate is None:
        raise ClusterError("no synchronous standby to hand over to; name one with --to.")
    patroni.switchover(paths.etc(leader) / "patroni.yml", leader, candidate, READY_TIMEOUT)
    progress(f"switchover: {candidate.name} leads (was {leader.name})")


def fault(
    paths: Paths,
    action: str,
    host_names: Sequence[str],
    delay: str = "1ms",
    progress: Progress = print,
    inventory: Inventory = STAGING,
) -> None:
    """Inject or undo a host fault on each named host ('all': every host)."""
    _require_root()
    operate(paths, inventory)
    hosts = (
        list(inventory.hosts)
        if list(host_names) == ["all"]
        else [inventory.named(n) for n in host_names]
    )
    missing = [host.name for host in hosts if host.netns not in network.namespaces()]
    if missing:
        raise ClusterError(
            f"{', '.join(missing)}: not up (no namespace); run `gridlink staging up` first."
        )
    for host in hosts:
        if action == "kill":
            killed = faults.kill_host(host)
            progress(f"{host.name}: killed {len(killed)} processes")
        elif action == "cut":
            faults.cut_link(host)
            progress(f"{host.name}: link down")
        elif action == "restore":
            faults.restore_link(host)
            faults.remove_latency(host)
            progress(f"{host.name}: link up, no added latency")
        elif action == "delay":
            faults.add_latency(host, delay)
            progress(f"{host.name}: every packet it sends waits {delay}")
        else:
            raise ClusterError(f"Unknown fault {action!r}; use one of {', '.join(FAULTS)}.")
