"""Render staging's configuration files from the inventory and the templates beside this module.

The files are the real ones: a host in a namespace runs with exactly what a
real host would get copied into /etc (each template names its place there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from gridlink.db.urls import sqlalchemy_url
from gridlink.settings import PRODUCTION, MailBackend, Settings, TrustedProxies
from infra.monitoring import ALERT_RULES
from infra.staging.access import PATRONI_USER, api_login
from infra.staging.inventory import (
    ALERTMANAGER_PORT,
    API,
    API_LOGINS,
    API_METRICS_PORT,
    API_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    FLOATING_ADDRESS,
    LOAD_BALANCER_HEALTH_PORT,
    LOAD_BALANCER_PORT,
    LOCUST_MASTER_PORT,
    MONITORING,
    NODE_EXPORTER_PORT,
    PATRONI_PORT,
    POSTGRES_PORT,
    REDIS,
    REDIS_EXPORTER_PORT,
    REDIS_PORT,
    REDIS_SERVICE,
    REPLICATION_ROLE,
    REWIND_ROLE,
    SENTINEL,
    SENTINEL_PORT,
    SUBNET,
    SUPERUSER_ROLE,
    VRRP_ROUTER_ID,
    DatabaseLogin,
    Host,
    Inventory,
    operator_login,
)
from infra.staging.paths import Paths
from infra.staging.secrets import KeyPair, Secrets, write_private

TEMPLATES = Path(__file__).resolve().parent / "templates"
API_WORKERS = 2  # per API host: two hosts share this machine's two cores


@dataclass(frozen=True)
class Swarm:
    """What a swarm runs: users, spawn rate, run time, workers and where reports go."""

    users: int
    spawn_rate: int
    run_time: str
    workers: int
    locustfile: Path
    reports: Path


def render(template: str, **values: object) -> str:
    """Fill one template; a placeholder without a value is an error, not an empty string."""
    return Template((TEMPLATES / template).read_text()).substitute(
        {key: str(value) for key, value in values.items()}
    )


def postgresql_conf(host: Host, socket_dir: Path, tls: KeyPair) -> str:
    return render(
        "postgresql.conf",
        host=host.name,
        roles=", ".join(host.roles),
        address=host.address,
        port=POSTGRES_PORT,
        socket_dir=socket_dir,
        ssl_cert=tls.certificate,
        ssl_key=tls.key,
    )


def pg_hba_conf(host: Host) -> str:
    return render("pg_hba.conf", host=host.name, subnet=SUBNET, replication_role=REPLICATION_ROLE)


def pg_ident_conf(host: Host) -> str:
    return render("pg_ident.conf", host=host.name)


def sentinel_conf(inventory: Inventory, host: Host, directory: Path) -> str:
    return render(
        "sentinel.conf",
        host=host.name,
        address=host.address,
        port=SENTINEL_PORT,
        directory=directory,
        service=REDIS_SERVICE,
        master_address=inventory.one(REDIS).address,
        master_port=REDIS_PORT,
    )


def etcd_conf(inventory: Inventory, host: Host, data_dir: Path, tls: KeyPair, ca: Path) -> str:
    members = ",".join(
        f"{db.name}=https://{db.address}:{ETCD_PEER_PORT}" for db in inventory.databases
    )
    return render(
        "etcd.conf.yml",
        host=host.name,
        address=host.address,
        data_dir=data_dir,
        peer_port=ETCD_PEER_PORT,
        client_port=ETCD_CLIENT_PORT,
        initial_cluster=members,
        cert=tls.certificate,
        key=tls.key,
        ca=ca,
    )


@dataclass(frozen=True)
class PatroniFiles:
    """Where Patroni on one host finds its PostgreSQL: data, binaries, the rendered files, TLS."""

    data_dir: Path
    bin_dir: Path
    custom_conf: Path
    hba_file: Path
    ident_file: Path
    socket_dir: Path
    pgpass: Path  # Patroni writes one for its replicas; $HOME may not be the postgres user's
    rest: KeyPair  # its REST API's certificate
    etcd_client: KeyPair  # what it shows etcd
    ca: Path


def patroni_yml(inventory: Inventory, host: Host, files: PatroniFiles, secrets: Secrets) -> str:
    """Return Patroni's file on ``host``: it holds passwords (write it 0600, owned by postgres)."""
    return render(
        "patroni.yml",
        host=host.name,
        address=host.address,
        rest_port=PATRONI_PORT,
        port=POSTGRES_PORT,
        etcd_hosts=inventory.etcd_hosts,
        data_dir=files.data_dir,
        bin_dir=files.bin_dir,
        custom_conf=files.custom_conf,
        hba_file=files.hba_file,
        ident_file=files.ident_file,
        socket_dir=files.socket_dir,
        pgpass=files.pgpass,
        ca=files.ca,
        rest_cert=files.rest.certificate,
        rest_key=files.rest.key,
        rest_user=PATRONI_USER,
        rest_password=secrets.password("patroni-restapi"),
        etcd_cert=files.etcd_client.certificate,
        etcd_key=files.etcd_client.key,
        superuser=SUPERUSER_ROLE,
        superuser_password=secrets.password("postgres-superuser"),
        replication_user=REPLICATION_ROLE,
        replication_password=secrets.password("postgres-replication"),
        rewind_user=REWIND_ROLE,
        rewind_password=secrets.password("postgres-rewind"),
    )


def redis_conf(host: Host) -> str:
    return render("redis.conf", host=host.name, address=host.address, port=REDIS_PORT)


def haproxy_cfg(inventory: Inventory, lb: Host, stats_socket: Path) -> str:
    servers = "".join(
        f"    server {api.name} {api.address}:{API_PORT} check\n"
        for api in inventory.with_role(API)
    )
    return render(
        "haproxy.cfg",
        host=lb.name,
        address=lb.address,
        port=LOAD_BALANCER_PORT,
        health_port=LOAD_BALANCER_HEALTH_PORT,
        servers=servers,
        stats_socket=stats_socket,
    )


def keepalived_conf(
    inventory: Inventory, lb: Host, curl: str = "/usr/bin/curl", notify: Path | None = None
) -> str:
    """Return the load balancer's keepalived file: one VRRP instance, unicast to the others."""
    balancers = inventory.load_balancers
    # Distinct priorities, the first host highest: the first election has one winner.
    priority = 150 - 10 * balancers.index(lb)
    peers = "".join(f"        {peer.address}\n" for peer in balancers if peer != lb)
    return render(
        "keepalived.conf",
        host=lb.name,
        address=lb.address,
        health_port=LOAD_BALANCER_HEALTH_PORT,
        curl=curl,
        router_id=VRRP_ROUTER_ID,
        priority=priority,
        peers=peers,
        floating_address=FLOATING_ADDRESS,
        prefix=SUBNET.prefixlen,
        notify="" if notify is None else f'notify "{notify}"',
    )


def keepalived_notify(lb: Host, textfile_dir: Path) -> str:
    return render("keepalived-notify.sh", host=lb.name, textfile_dir=textfile_dir)


def prometheus_yml(inventory: Inventory, host: Host, rules: Path, ca: Path) -> str:
    """Return the monitoring host's Prometheus file: every job the alert rules read."""

    def targets(hosts: list[Host], port: int, scheme: str = "") -> str:
        return ", ".join(f'"{scheme}{each.address}:{port}"' for each in hosts)

    return render(
        "prometheus.yml",
        host=host.name,
        rules=rules,
        ca=ca,
        alertmanager=f"{host.address}:{ALERTMANAGER_PORT}",
        patroni_targets=targets(inventory.databases, PATRONI_PORT),
        haproxy_targets=targets(inventory.load_balancers, LOAD_BALANCER_HEALTH_PORT),
        keepalived_targets=targets(inventory.load_balancers, NODE_EXPORTER_PORT),
        api_targets=targets(inventory.with_role(API), API_METRICS_PORT),
        redis_targets=targets(inventory.redis_hosts, REDIS_PORT, "redis://"),
        sentinel_targets=targets(inventory.with_role(SENTINEL), SENTINEL_PORT, "redis://"),
        redis_exporter=f"{host.address}:{REDIS_EXPORTER_PORT}",
    )


def alertmanager_yml(host: Host) -> str:
    return render("alertmanager.yml", host=host.name)


def staging_settings(inventory: Inventory, login: DatabaseLogin | None = None) -> Settings:
    """Return the settings that point a process at staging's servers (migrate, seed, the API).

    As ``login`` (default: the operator, as the API's login in use, its
    password in the operator's passfile); verify-full on every URL.
    """
    login = login or operator_login()
    return Settings(
        # Every database host: libpq keeps the one that accepts writes (Patroni's leader),
        # and the router finds each one's role by asking it.
        database_url=sqlalchemy_url(inventory.write_url_for(login)),
        replica_urls=tuple(inventory.database_url(host, login) for host in inventory.databases),
        redis_url=inventory.redis_url,
        redis_sentinels=inventory.sentinels,
        redis_service=REDIS_SERVICE,
    )


def api_settings(
    inventory: Inventory, host: Host, mail_dir: Path, login: DatabaseLogin
) -> Settings:
    """Return the settings an API host serves with (as ``login``, the API's in use)."""
    return staging_settings(inventory, login).replace(
        bind=f"{host.address}:{API_PORT}",
        # /metrics for the monitoring host, on the host's own address; not behind the LBs.
        metrics_bind=f"{host.address}:{API_METRICS_PORT}",
        workers=API_WORKERS,
        # Per-address limits must see the client, not the load balancer.
        trusted_proxies=TrustedProxies.parse(
            ",".join(lb.address for lb in inventory.load_balancers)
        ),
        environment=PRODUCTION,
        mail_backend=MailBackend("file", directory=mail_dir),
    )


def api_env(inventory: Inventory, host: Host, mail_dir: Path, login: DatabaseLogin) -> str:
    """Return the API host's environment file: every setting, as ``Settings.to_environ`` has it.

    It holds the database password: write it 0600.
    """
    variables = api_settings(inventory, host, mail_dir, login).to_environ()
    return render("api.env", host=host.name) + "".join(
        f"{name}={value}\n" for name, value in variables.items()
    )


def api_unit(host: Host) -> str:
    return render("gridlink-api.service", host=host.name)


def locust_master_conf(inventory: Inventory, host: Host, swarm: Swarm) -> str:
    return render(
        "locust-master.conf",
        host=host.name,
        address=host.address,
        master_port=LOCUST_MASTER_PORT,
        locustfile=swarm.locustfile,
        target=inventory.load_balancer_url,
        workers=swarm.workers,
        users=swarm.users,
        spawn_rate=swarm.spawn_rate,
        run_time=swarm.run_time,
        reports=swarm.reports,
    )


def locust_worker_conf(host: Host, swarm: Swarm) -> str:
    return render(
        "locust-worker.conf",
        host=host.name,
        address=host.address,
        master_port=LOCUST_MASTER_PORT,
        locustfile=swarm.locustfile,
    )


def parse_env(text: str) -> dict[str, str]:
    """Read an env file as systemd's EnvironmentFile does (KEY=value lines, # comments)."""
    variables = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            variables[key.strip()] = value.strip()
    return variables


# Debian's PostgreSQL 15, what a real database host runs; `up` passes the one it found.
DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")


def write_configuration(
    inventory: Inventory,
    paths: Paths,
    pg_bin: Path = DEFAULT_PG_BIN,
    curl: str = "/usr/bin/curl",
) -> None:
    """Render every host's configuration files under var/staging/etc/<host>/.

    Certificates and passwords come from the staging's secrets (made the first
    time); a file holding a password is written 0600 for the user that reads it.
    """
    secrets = Secrets(paths.secrets)
    ca = secrets.ca_certificate
    for host in inventory.databases:
        names = [host.address, host.name]
        server = secrets.certificate(host.name, "postgres", names, owner="postgres")
        socket_dir = paths.data(host) / "run"
        _write(paths.etc(host) / "postgresql.conf", postgresql_conf(host, socket_dir, server))
        _write(paths.etc(host) / "pg_hba.conf", pg_hba_conf(host))
        _write(paths.etc(host) / "pg_ident.conf", pg_ident_conf(host))
        etcd = secrets.certificate(host.name, "etcd", names, owner="etcd")
        etcd_file = etcd_conf(inventory, host, paths.etcd_data(host), etcd, ca)
        _write(paths.etc(host) / "etcd.conf.yml", etcd_file)
        files = PatroniFiles(
            data_dir=paths.data(host) / "pgdata",
            bin_dir=pg_bin,
            custom_conf=paths.etc(host) / "postgresql.conf",
            hba_file=paths.etc(host) / "pg_hba.conf",
            ident_file=paths.etc(host) / "pg_ident.conf",
            socket_dir=socket_dir,
            pgpass=paths.data(host) / "pgpass",
            rest=secrets.certificate(host.name, "patroni", names, owner="postgres"),
            etcd_client=secrets.certificate(host.name, "etcd-client", names, owner="postgres"),
            ca=ca,
        )
        patroni_file = patroni_yml(inventory, host, files, secrets)
        write_private(paths.etc(host) / "patroni.yml", patroni_file, owner="postgres")
    for redis_host in inventory.redis_hosts:
        _write(paths.etc(redis_host) / "redis.conf", redis_conf(redis_host))
    for sentinel in inventory.with_role(SENTINEL):
        _write(
            paths.etc(sentinel) / "sentinel.conf",
            sentinel_conf(inventory, sentinel, paths.data(sentinel)),
        )
    for lb in inventory.load_balancers:
        _write(paths.etc(lb) / "haproxy.cfg", haproxy_cfg(inventory, lb, paths.stats_socket(lb)))
        notify = paths.etc(lb) / "keepalived-notify.sh"
        _write(notify, keepalived_notify(lb, paths.textfiles(lb)))
        notify.chmod(0o755)
        _write(paths.etc(lb) / "keepalived.conf", keepalived_conf(inventory, lb, curl, notify))
    for monitor in inventory.with_role(MONITORING):
        rules = paths.etc(monitor) / "alerts.yml"  # /etc/prometheus/alerts.yml on a real host
        _write(rules, ALERT_RULES.read_text())
        prometheus = prometheus_yml(inventory, monitor, rules, ca)
        _write(paths.etc(monitor) / "prometheus.yml", prometheus)
        _write(paths.etc(monitor) / "alertmanager.yml", alertmanager_yml(monitor))
    login = api_database_login(secrets)
    for host in inventory.with_role(API):
        write_private(
            paths.etc(host) / "api.env", api_env(inventory, host, paths.mail(host), login)
        )
        _write(paths.etc(host) / "gridlink-api.service", api_unit(host))


def api_database_login(secrets: Secrets) -> DatabaseLogin:
    """Return the API's database login in use, with its password (what api.env holds)."""
    role = api_login() or API_LOGINS[0]
    return DatabaseLogin(role, secrets.ca_certificate, password=secrets.password(api_secret(role)))


def api_secret(role: str) -> str:
    """Return the name of the secret holding an API login's password (postgres-api-a, -b)."""
    return f"postgres-api-{role.rsplit('_', 1)[-1]}"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
