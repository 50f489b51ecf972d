"""Render staging's configuration files from the inventory and the templates beside this module.

The files are the real ones: a host in a namespace runs with exactly what a
real host would get copied into /etc (each template names its place there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from infra.staging.inventory import (
    API,
    API_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    LOAD_BALANCER,
    LOAD_BALANCER_PORT,
    LOCUST_MASTER_PORT,
    PATRONI_PORT,
    POSTGRES_PORT,
    REDIS,
    REDIS_PORT,
    REDIS_SERVICE,
    SENTINEL_PORT,
    SUBNET,
    Host,
    Inventory,
)

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


def postgresql_conf(host: Host, socket_dir: Path) -> str:
    return render(
        "postgresql.conf",
        host=host.name,
        roles=", ".join(host.roles),
        address=host.address,
        port=POSTGRES_PORT,
        socket_dir=socket_dir,
    )


def pg_hba_conf(host: Host) -> str:
    return render("pg_hba.conf", host=host.name, subnet=SUBNET)


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


def etcd_conf(inventory: Inventory, host: Host, data_dir: Path) -> str:
    members = ",".join(
        f"{db.name}=http://{db.address}:{ETCD_PEER_PORT}" for db in inventory.databases
    )
    return render(
        "etcd.conf.yml",
        host=host.name,
        address=host.address,
        data_dir=data_dir,
        peer_port=ETCD_PEER_PORT,
        client_port=ETCD_CLIENT_PORT,
        initial_cluster=members,
    )


@dataclass(frozen=True)
class PatroniFiles:
    """Where Patroni on one host finds its PostgreSQL: data, binaries, the rendered files."""

    data_dir: Path
    bin_dir: Path
    custom_conf: Path
    hba_file: Path
    socket_dir: Path
    pgpass: Path  # Patroni writes one for its replicas; $HOME may not be the postgres user's


def patroni_yml(inventory: Inventory, host: Host, files: PatroniFiles) -> str:
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
        socket_dir=files.socket_dir,
        pgpass=files.pgpass,
    )


def redis_conf(host: Host) -> str:
    return render("redis.conf", host=host.name, address=host.address, port=REDIS_PORT)


def haproxy_cfg(inventory: Inventory, stats_socket: Path) -> str:
    lb = inventory.one(LOAD_BALANCER)
    servers = "".join(
        f"    server {api.name} {api.address}:{API_PORT} check\n"
        for api in inventory.with_role(API)
    )
    return render(
        "haproxy.cfg",
        host=lb.name,
        address=lb.address,
        port=LOAD_BALANCER_PORT,
        servers=servers,
        stats_socket=stats_socket,
    )


def api_env(inventory: Inventory, host: Host, mail_dir: Path) -> str:
    return render(
        "api.env",
        host=host.name,
        bind=f"{host.address}:{API_PORT}",
        workers=API_WORKERS,
        # Every database host: libpq keeps the one that accepts writes (Patroni's leader),
        # and the router finds each one's role by asking it.
        database_url=inventory.write_url,
        replica_urls=",".join(inventory.database_url(db) for db in inventory.databases),
        redis_url=inventory.redis_url,
        redis_sentinels=inventory.sentinels,
        redis_service=REDIS_SERVICE,
        # Per-address limits must see the client, not the load balancer.
        trusted_proxies=inventory.one(LOAD_BALANCER).address,
        mail_dir=mail_dir,
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
