"""Render staging's configuration files from the inventory and the templates beside this module.

The files are the real ones: a host in a namespace runs with exactly what a
real host would get copied into /etc (each template names its place there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

import bcrypt

from gridlink.db.urls import sqlalchemy_url
from gridlink.settings import PRODUCTION, MailBackend, Settings, TrustedProxies
from infra.files import make_folder_for, write_private
from infra.monitoring import ALERT_RULES
from infra.staging.access import PATRONI_USER, api_login
from infra.staging.inventory import (
    ALERTMANAGER_PORT,
    API,
    API_LOGINS,
    API_METRICS_PORT,
    API_PORT,
    BRIDGE_ADDRESS,
    DATABASE,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    FLOATING_ADDRESS,
    LOAD_BALANCER_HEALTH_PORT,
    LOAD_BALANCER_PORT,
    LOAD_BALANCER_TLS_PORT,
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
from infra.staging.redis_acl import (
    API_USER,
    ON_REDIS,
    ON_SENTINEL,
    PASSWORD_OF,
    REPLICA_USER,
    SENTINEL_USER,
    user_lines,
)
from infra.staging.secrets import KeyPair, Secrets

TEMPLATES = Path(__file__).resolve().parent / "templates"
API_WORKERS = 2  # per API host: two hosts share this machine's two cores
# The users the daemons run as (Debian's packages make the first three; `staging up`
# makes `gridlink`): each one's keys and secret-bearing files are its own, 0600.
REDIS_ACCOUNT = "redis"
HAPROXY_ACCOUNT = "haproxy"
PROMETHEUS_ACCOUNT = "prometheus"
API_ACCOUNT = "gridlink"
API_CERTIFICATE = "api"  # the API hosts' certificate, in Secrets


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


def pg_hba_conf(inventory: Inventory, host: Host) -> str:
    return render("pg_hba.conf", host=host.name, network_rules=pg_hba_network_rules(inventory))


def pg_hba_network_rules(inventory: Inventory) -> str:
    """Who may connect over TLS, and from where: the operator, the members, the API hosts."""

    def rule(kind: str, database: str, roles: Sequence[str], address: object) -> str:
        return f"{kind:<9} {database:<12} {','.join(roles):<12} {address}/32 scram-sha-256"

    members = (SUPERUSER_ROLE, REPLICATION_ROLE, REWIND_ROLE)
    lines = [
        "# The operator (the machine's side of the bridge): staging up, migrations, checks.",
        rule("hostssl", "all", ["all"], BRIDGE_ADDRESS),
        "# The database hosts: streaming, pg_rewind and Patroni's own connections.",
    ]
    for member in inventory.databases:
        lines.append(rule("hostssl", "replication", [REPLICATION_ROLE], member.address))
        lines.append(rule("hostssl", "all", members, member.address))
    lines.append("# The API hosts: the API's logins, to its database alone.")
    for api in inventory.with_role(API):
        lines.append(rule("hostssl", DATABASE, API_LOGINS, api.address))
    return "\n".join(lines)


def pg_ident_conf(host: Host) -> str:
    return render("pg_ident.conf", host=host.name)


def redis_tls(secrets: Secrets, host: Host) -> dict[str, Path]:
    """Return the TLS files Redis and Sentinel on ``host`` name: its certificate, its key
    (owned by redis) and the CA they verify peers with."""
    pair = secrets.certificate(host.name, "redis", [host.address, host.name], REDIS_ACCOUNT)
    return {"certificate": pair.certificate, "key": pair.key, "ca": secrets.ca_certificate}


def sentinel_conf(
    inventory: Inventory,
    host: Host,
    directory: Path,
    secrets: Secrets,
    port: int = SENTINEL_PORT,
    master_port: int = REDIS_PORT,
) -> str:
    return render(
        "sentinel.conf",
        host=host.name,
        address=host.address,
        port=port,
        **redis_tls(secrets, host),
        directory=directory,
        service=REDIS_SERVICE,
        master_address=inventory.one(REDIS).address,
        master_port=master_port,
        sentinel_user=SENTINEL_USER,
        sentinel_password=secrets.password(PASSWORD_OF[SENTINEL_USER]),
        users=user_lines(secrets, ON_SENTINEL).rstrip("\n"),
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


def redis_conf(host: Host, secrets: Secrets, acl_file: Path, port: int = REDIS_PORT) -> str:
    return render(
        "redis.conf",
        host=host.name,
        address=host.address,
        port=port,
        **redis_tls(secrets, host),
        acl_file=acl_file,
        replica_user=REPLICA_USER,
        replica_password=secrets.password(PASSWORD_OF[REPLICA_USER]),
    )


def redis_acl(secrets: Secrets) -> str:
    """Return a Redis server's ACL file (``/etc/redis/users.acl`` on a real host)."""
    return user_lines(secrets, ON_REDIS)


def write_redis_files(paths: Paths, host: Host, secrets: Secrets) -> None:
    """Render a Redis host's configuration and ACL file, each 0600 owned by redis.

    Their folder is redis's too, as Debian's /etc/redis is: ``ACL SAVE`` writes the
    ACL file anew beside the old one and renames it.
    """
    make_folder_for(paths.etc(host), REDIS_ACCOUNT)
    acl_file = paths.etc(host) / "users.acl"
    write_private(acl_file, redis_acl(secrets), REDIS_ACCOUNT)
    write_private(
        paths.etc(host) / "redis.conf", redis_conf(host, secrets, acl_file), REDIS_ACCOUNT
    )


def redis_url(inventory: Inventory, secrets: Secrets) -> str:
    """Return GRIDLINK_REDIS_URL: TLS verified against the staging CA, as the API's ACL user."""
    password = secrets.password(PASSWORD_OF[API_USER])
    return (
        f"rediss://{API_USER}:{password}@{inventory.one(REDIS).address}:{REDIS_PORT}/0"
        f"?ssl_ca_certs={secrets.ca_certificate}"
    )


def haproxy_cfg(
    inventory: Inventory, lb: Host, stats_socket: Path, certificate: Path, ca: Path
) -> str:
    """Return ``lb``'s HAProxy file: TLS on 443 with ``certificate`` (its key in the same
    file), to the API hosts over TLS verified against ``ca``."""
    servers = "".join(
        f"    server {api.name} {api.address}:{API_PORT} check verifyhost {api.name}\n"
        for api in inventory.with_role(API)
    )
    return render(
        "haproxy.cfg",
        host=lb.name,
        address=lb.address,
        port=LOAD_BALANCER_PORT,
        https_port=LOAD_BALANCER_TLS_PORT,
        health_port=LOAD_BALANCER_HEALTH_PORT,
        servers=servers,
        stats_socket=stats_socket,
        account=HAPROXY_ACCOUNT,
        certificate=certificate,
        ca=ca,
    )


def write_haproxy_files(inventory: Inventory, paths: Paths, lb: Host, secrets: Secrets) -> None:
    """Render ``lb``'s HAProxy file and its certificate with the key (0600, owned by haproxy).

    The certificate names the floating address, the host's own and its name:
    clients reach the API by the first, keepalived and Prometheus by the second.
    """
    pair = secrets.certificate(
        lb.name, "haproxy", [FLOATING_ADDRESS, lb.address, lb.name], HAPROXY_ACCOUNT
    )
    bundle = paths.etc(lb) / "haproxy.pem"  # /etc/haproxy/gridlink.pem on a real host
    write_private(bundle, pair.certificate.read_text() + pair.key.read_text(), HAPROXY_ACCOUNT)
    config = haproxy_cfg(inventory, lb, paths.stats_socket(lb), bundle, secrets.ca_certificate)
    _write(paths.etc(lb) / "haproxy.cfg", config)


def keepalived_conf(
    inventory: Inventory,
    lb: Host,
    curl: str = "/usr/bin/curl",
    notify: Path | None = None,
    ca: Path = Path("/etc/ssl/certs/gridlink-ca.crt"),
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
        ca=ca,
        router_id=VRRP_ROUTER_ID,
        priority=priority,
        peers=peers,
        floating_address=FLOATING_ADDRESS,
        prefix=SUBNET.prefixlen,
        notify="" if notify is None else f'notify "{notify}"',
    )


def keepalived_notify(lb: Host, textfile_dir: Path) -> str:
    return render("keepalived-notify.sh", host=lb.name, textfile_dir=textfile_dir)


WEB_USER = "prometheus"  # Prometheus's and Alertmanager's web user; its password: prometheus-web
WEB_PASSWORD_SECRET = "prometheus-web"  # noqa: S105 (a secret's name)


def prometheus_yml(
    inventory: Inventory,
    host: Host,
    rules: Path,
    ca: Path,
    client: KeyPair,
    web_password_file: Path = Path("/etc/prometheus/web-password"),
) -> str:
    """Return the monitoring host's Prometheus file: every job the alert rules read.

    ``client``: the certificate Prometheus shows Patroni, which serves only clients with one.
    """

    def targets(hosts: list[Host], port: int, scheme: str = "") -> str:
        return ", ".join(f'"{scheme}{each.address}:{port}"' for each in hosts)

    return render(
        "prometheus.yml",
        host=host.name,
        rules=rules,
        ca=ca,
        client_cert=client.certificate,
        client_key=client.key,
        web_user=WEB_USER,
        web_password_file=web_password_file,
        alertmanager=f"{host.address}:{ALERTMANAGER_PORT}",
        patroni_targets=targets(inventory.databases, PATRONI_PORT),
        haproxy_targets=targets(inventory.load_balancers, LOAD_BALANCER_HEALTH_PORT),
        keepalived_targets=targets(inventory.load_balancers, NODE_EXPORTER_PORT),
        api_targets=targets(inventory.with_role(API), API_METRICS_PORT),
        redis_targets=targets(inventory.redis_hosts, REDIS_PORT, "rediss://"),
        sentinel_targets=targets(inventory.with_role(SENTINEL), SENTINEL_PORT, "rediss://"),
        redis_exporter=f"{host.address}:{REDIS_EXPORTER_PORT}",
    )


def web_config(host: Host, service: str, secrets: Secrets, password: str | None = None) -> str:
    """Return a Prometheus-family program's ``--web.config.file``: TLS with ``host``'s
    certificate for ``service``; with ``password``, basic auth as WEB_USER (its bcrypt hash)."""
    pair = secrets.certificate(host.name, service, [host.address, host.name], PROMETHEUS_ACCOUNT)
    basic_auth = ""
    if password is not None:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
        basic_auth = f"basic_auth_users:\n  {WEB_USER}: {hashed}"
    return render(
        "web-config.yml",
        host=host.name,
        service=service,
        certificate=pair.certificate,
        key=pair.key,
        basic_auth=basic_auth,
    )


def write_monitoring_files(inventory: Inventory, paths: Paths, secrets: Secrets) -> None:
    """Render the monitoring host's files and the load balancers' node exporters' web files."""
    for lb in inventory.load_balancers:
        web = web_config(lb, "node-exporter", secrets)
        write_private(paths.etc(lb) / "node-exporter-web.yml", web, PROMETHEUS_ACCOUNT)
    for monitor in inventory.with_role(MONITORING):
        etc = paths.etc(monitor)
        rules = etc / "alerts.yml"  # /etc/prometheus/alerts.yml on a real host
        _write(rules, ALERT_RULES.read_text())
        password = secrets.password(WEB_PASSWORD_SECRET)
        password_file = etc / "web-password"  # Prometheus's own, to reach Alertmanager
        write_private(password_file, password, PROMETHEUS_ACCOUNT)
        # What it shows Patroni's REST API (a client certificate; key 0600 prometheus).
        client = secrets.certificate(
            monitor.name, "prometheus-client", [monitor.name], PROMETHEUS_ACCOUNT
        )
        ca = secrets.ca_certificate
        config = prometheus_yml(inventory, monitor, rules, ca, client, password_file)
        write_private(etc / "prometheus.yml", config, PROMETHEUS_ACCOUNT)
        _write(etc / "alertmanager.yml", alertmanager_yml(monitor))
        for service in ("prometheus", "alertmanager"):
            web = web_config(monitor, service, secrets, password)
            write_private(etc / f"{service}-web.yml", web, PROMETHEUS_ACCOUNT)


def alertmanager_yml(host: Host) -> str:
    return render("alertmanager.yml", host=host.name)


def staging_settings(
    inventory: Inventory, login: DatabaseLogin | None = None, secrets: Secrets | None = None
) -> Settings:
    """Return the settings that point a process at staging's servers (migrate, seed, the API).

    As ``login`` (default: the operator, as the API's login in use, its
    password in the operator's passfile); verify-full on every URL. Redis as
    the API's user, with staging's ``secrets`` (without: the database alone).
    """
    login = login or operator_login()
    return Settings(
        # Every database host: libpq keeps the one that accepts writes (Patroni's leader),
        # and the router finds each one's role by asking it.
        database_url=sqlalchemy_url(inventory.write_url_for(login)),
        replica_urls=tuple(inventory.database_url(host, login) for host in inventory.databases),
        redis_url=inventory.redis_url if secrets is None else redis_url(inventory, secrets),
        redis_sentinels=inventory.sentinels,
        redis_service=REDIS_SERVICE,
    )


def issue_api_certificate(secrets: Secrets, host: Host) -> None:
    """Issue the certificate the API on ``host`` serves TLS with (its key owned by gridlink)."""
    secrets.certificate(host.name, API_CERTIFICATE, [host.address, host.name], API_ACCOUNT)


def api_settings(
    inventory: Inventory, host: Host, mail_dir: Path, login: DatabaseLogin, secrets: Secrets
) -> Settings:
    """Return the settings an API host serves with (as ``login``, the API's in use)."""
    tls = secrets.key_pair(host.name, API_CERTIFICATE)
    return staging_settings(inventory, login, secrets).replace(
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
        tls_certificate=str(tls.certificate),
        tls_key=str(tls.key),
    )


TOKEN_CACHE_KEYS = "GRIDLINK_TOKEN_CACHE_KEYS"  # noqa: S105 (a variable's name)


def api_env(
    inventory: Inventory,
    host: Host,
    mail_dir: Path,
    login: DatabaseLogin,
    secrets: Secrets,
    token_cache_keys: Sequence[str] = (),
) -> str:
    """Return the API host's environment file: every setting, as ``Settings.to_environ`` has it.

    It holds passwords and the token cache's MAC keys: it is written 0600 for
    the API's user. ``token_cache_keys`` (default: the one in ``secrets``) are
    the keys the API signs with (the first) and accepts; during a rotation, the
    new one and the old.
    """
    variables = api_settings(inventory, host, mail_dir, login, secrets).to_environ()
    keys = list(token_cache_keys) or [secrets.password("token-cache-key")]
    variables[TOKEN_CACHE_KEYS] = ",".join(keys)
    return render("api.env", host=host.name) + "".join(
        f"{name}={value}\n" for name, value in variables.items()
    )


def write_api_env(
    inventory: Inventory, paths: Paths, host: Host, token_cache_keys: Sequence[str] = ()
) -> None:
    """Render an API host's api.env, 0600 owned by gridlink (``api_env``); issue its certificate.

    As the API's database login in use (``api_database_login``).
    """
    secrets = Secrets(paths.secrets)
    issue_api_certificate(secrets, host)
    login = api_database_login(secrets)
    text = api_env(inventory, host, paths.mail(host), login, secrets, token_cache_keys)
    write_private(paths.etc(host) / "api.env", text, API_ACCOUNT)


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
        _write(paths.etc(host) / "pg_hba.conf", pg_hba_conf(inventory, host))
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
        write_redis_files(paths, redis_host, secrets)
    for sentinel in inventory.with_role(SENTINEL):
        write_private(
            paths.etc(sentinel) / "sentinel.conf",
            sentinel_conf(inventory, sentinel, paths.data(sentinel), secrets),
            REDIS_ACCOUNT,
        )
    for lb in inventory.load_balancers:
        write_haproxy_files(inventory, paths, lb, secrets)
        notify = paths.etc(lb) / "keepalived-notify.sh"
        _write(notify, keepalived_notify(lb, paths.textfiles(lb)))
        notify.chmod(0o755)
        keepalived = keepalived_conf(inventory, lb, curl, notify, ca)
        _write(paths.etc(lb) / "keepalived.conf", keepalived)
    write_monitoring_files(inventory, paths, secrets)
    for host in inventory.with_role(API):
        write_api_env(inventory, paths, host)
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
