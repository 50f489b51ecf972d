"""The one inventory of staging: every host, its address and its roles.

Staging on one machine runs each host in a network namespace (``gl-<host>``)
whose one interface sits on the bridge ``gl-br0``; the machine itself has the
bridge's address, so an operator on it reaches every host, and the hosts have
no route anywhere else. On real hosts the same inventory, with the real
addresses, renders the same configuration files (``infra/staging/render.py``).

Two hosts have the load-balancer role; clients use neither's own address
but the floating one (``FLOATING_ADDRESS``) that keepalived gives to one of
them at a time.

Roles are plain names so later roles (etcd, patroni, sentinel) are one more
entry in a host's tuple, not a new structure.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from infra.errors import ClusterError
from infra.staging import access

PRIMARY = "postgres-primary"
REPLICA = "postgres-replica"
REDIS = "redis"  # the master Redis starts as; Sentinel decides after that
REDIS_REPLICA = "redis-replica"
SENTINEL = "sentinel"
API = "api"
LOAD_BALANCER = "load-balancer"
LOAD_GENERATOR = "load-generator"
MONITORING = "monitoring"

NAMESPACE_PREFIX = "gl-"
BRIDGE = "gl-br0"
SUBNET = ipaddress.ip_network("10.77.0.0/24")
BRIDGE_ADDRESS = ipaddress.ip_address("10.77.0.1")  # the machine's own side
# The load balancers' one address: keepalived moves it to whichever holds it (VRRP).
FLOATING_ADDRESS = "10.77.0.40"
VRRP_ROUTER_ID = 40  # one VRRP instance on the subnet: any 1..255 no other router uses

POSTGRES_PORT = 5432
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
PATRONI_PORT = 8008  # Patroni's REST API: /primary answers 200 on the leader only
REDIS_PORT = 6379
SENTINEL_PORT = 26379
REDIS_SERVICE = "gridlink"  # the master's name in Sentinel
API_PORT = 8000
LOAD_BALANCER_PORT = 80  # plain HTTP: answers only a redirect to HTTPS
LOAD_BALANCER_TLS_PORT = 443
LOAD_BALANCER_HEALTH_PORT = 8404  # HAProxy's own: /healthz (keepalived asks) and /metrics
LOCUST_MASTER_PORT = 5557
API_METRICS_PORT = 9101  # the API's internal listener: /metrics for the scraper, no token
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
REDIS_EXPORTER_PORT = 9121
NODE_EXPORTER_PORT = 9100  # on the load balancers: keepalived's state (textfile collector)
DATABASE = "gridlink"
# Database roles (README, "Staging security"): the owner of the database's objects
# (migrations and seeding), the API's group and its two logins (one in use at a
# time, so a rotation never refuses a connection), Patroni's own three.
SUPERUSER_ROLE = "postgres"
REPLICATION_ROLE = "replicator"
REWIND_ROLE = "rewind_user"
OWNER_ROLE = "gridlink_owner"
API_ROLE = "gridlink_api"
API_LOGINS = ("gridlink_api_a", "gridlink_api_b")


@dataclass(frozen=True)
class DatabaseLogin:
    """Who a database URL logs in as, and how: always TLS verified against ``ca``.

    The password goes in the URL (an API host's env file, 0600) or, with
    ``passfile``, stays in that file (the operator's URLs name no secret).
    """

    role: str
    ca: Path
    password: str | None = None
    passfile: Path | None = None

    @property
    def userinfo(self) -> str:
        password = "" if self.password is None else ":" + quote(self.password, safe="")
        return f"{quote(self.role, safe='')}{password}"

    @property
    def options(self) -> dict[str, str]:
        options = {"sslmode": "verify-full", "sslrootcert": str(self.ca)}
        return options if self.passfile is None else {**options, "passfile": str(self.passfile)}


def operator_login(role: str | None = None) -> DatabaseLogin:
    """Return how this machine logs in (default: as the API does now), password in its passfile."""
    role = role or access.api_login() or API_LOGINS[0]
    return DatabaseLogin(role, access.ca_file(), passfile=access.passfile())


@dataclass(frozen=True)
class Host:
    """One staging host: its name, address and roles."""

    name: str
    address: str
    roles: tuple[str, ...]

    @property
    def netns(self) -> str:
        """Return the network namespace that plays this host on one machine."""
        return f"{NAMESPACE_PREFIX}{self.name}"

    @property
    def veth(self) -> str:
        """Return the machine-side end of the host's link (Linux allows 15 characters)."""
        return f"glv-{self.name}"

    def has(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class Inventory:
    """Every host of staging, found by role."""

    hosts: tuple[Host, ...]

    def with_role(self, role: str) -> list[Host]:
        return [host for host in self.hosts if host.has(role)]

    def one(self, role: str) -> Host:
        (host,) = self.with_role(role)
        return host

    def named(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        names = ", ".join(host.name for host in self.hosts)
        raise ClusterError(f"There is no staging host {name!r}; the hosts are {names}.")

    @property
    def primary(self) -> Host:
        """Return the database host Patroni bootstraps on; it picks the leader after that."""
        return self.one(PRIMARY)

    @property
    def replicas(self) -> list[Host]:
        return self.with_role(REPLICA)

    @property
    def databases(self) -> list[Host]:
        return [self.primary, *self.replicas]

    @property
    def load_balancers(self) -> list[Host]:
        return self.with_role(LOAD_BALANCER)

    @property
    def load_balancer_address(self) -> str:
        """Return the floating address clients use, over TLS (``infra.http_client``'s form):
        whichever load balancer holds it answers."""
        return f"https://{FLOATING_ADDRESS}:{LOAD_BALANCER_TLS_PORT}"

    @property
    def load_balancer_url(self) -> str:
        return f"https://{FLOATING_ADDRESS}"

    @property
    def prometheus_address(self) -> str:
        return f"https://{self.one(MONITORING).address}:{PROMETHEUS_PORT}"

    @property
    def alertmanager_address(self) -> str:
        return f"https://{self.one(MONITORING).address}:{ALERTMANAGER_PORT}"

    def database_url(self, host: Host, login: DatabaseLogin | None = None) -> str:
        """Return the URL of one database host (default: the operator's login)."""
        login = login or operator_login()
        address = f"{host.address}:{POSTGRES_PORT}"
        query = urlencode(login.options)
        return f"postgresql+psycopg2://{login.userinfo}@{address}/{DATABASE}?{query}"

    @property
    def write_url(self) -> str:
        """Return libpq's URL of every database host, connecting to the one accepting writes.

        As the operator (``operator_login``): it names the CA and the passfile, no secret.
        """
        return self.write_url_for(operator_login())

    def write_url_for(self, login: DatabaseLogin) -> str:
        hosts = ",".join(f"{host.address}:{POSTGRES_PORT}" for host in self.databases)
        query = urlencode({"target_session_attrs": "read-write", **login.options})
        return f"postgresql://{login.userinfo}@{hosts}/{DATABASE}?{query}"

    @property
    def etcd_hosts(self) -> str:
        """Return the etcd members' client addresses (one member per database host)."""
        return ",".join(f"{host.address}:{ETCD_CLIENT_PORT}" for host in self.databases)

    @property
    def redis_url(self) -> str:
        """Where Redis is, without credentials (``render.redis_url`` adds the API's)."""
        return f"rediss://{self.one(REDIS).address}:{REDIS_PORT}/0"

    @property
    def redis_hosts(self) -> list[Host]:
        return [self.one(REDIS), *self.with_role(REDIS_REPLICA)]

    @property
    def sentinels(self) -> tuple[tuple[str, int], ...]:
        """Return every Sentinel's address and port (GRIDLINK_REDIS_SENTINELS)."""
        return tuple((host.address, SENTINEL_PORT) for host in self.with_role(SENTINEL))

    def as_json(self) -> str:
        """Return what ``var/staging/inventory.json`` holds: hosts, namespaces, the LB's URL."""
        document = {
            "subnet": str(SUBNET),
            "bridge": {"name": BRIDGE, "address": str(BRIDGE_ADDRESS)},
            "load_balancer_url": self.load_balancer_url,
            "floating_address": FLOATING_ADDRESS,
            "hosts": [
                {
                    "name": host.name,
                    "namespace": host.netns,
                    "address": host.address,
                    "roles": list(host.roles),
                }
                for host in self.hosts
            ],
        }
        return json.dumps(document, indent=2) + "\n"

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.as_json())


STAGING = Inventory(
    hosts=(
        Host("db1", "10.77.0.11", (PRIMARY,)),
        Host("db2", "10.77.0.12", (REPLICA,)),
        Host("db3", "10.77.0.13", (REPLICA,)),
        Host("redis1", "10.77.0.21", (REDIS, SENTINEL)),
        Host("redis2", "10.77.0.22", (REDIS_REPLICA, SENTINEL)),
        Host("redis3", "10.77.0.23", (REDIS_REPLICA, SENTINEL)),
        Host("api1", "10.77.0.31", (API,)),
        Host("api2", "10.77.0.32", (API,)),
        Host("lb1", "10.77.0.41", (LOAD_BALANCER,)),
        Host("lb2", "10.77.0.42", (LOAD_BALANCER,)),
        Host("load1", "10.77.0.51", (LOAD_GENERATOR,)),
        Host("mon1", "10.77.0.61", (MONITORING,)),
    )
)
