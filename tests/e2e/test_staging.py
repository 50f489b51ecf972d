"""Staging for real: hosts as network namespaces, a swarm through HAProxy, host faults, down.

The module brings staging up once (its own data under ``var/test-staging``,
the inventory's namespaces and subnet) and takes it down afterwards, pass or
fail. It needs root and ``ip netns``: without them it fails under `make test`
or as root, and skips, saying so, otherwise; a staging already up on this
machine (it would share its namespaces) is torn down first
(``tests/support/staging.py``).
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import pwd
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, make_url, text

from gridlink.db.urls import sqlalchemy_url
from gridlink.project import VAR
from gridlink.routing.router import ReplicaRouter
from infra import http_client
from infra.files import reachable_root
from infra.http_client import api_request, fetch
from infra.monitoring import query
from infra.processes import process_alive, wait_until
from infra.seeding import Seeded
from infra.serving import http_status
from infra.staging import (
    access,
    database_roles,
    driver,
    faults,
    hosts,
    network,
    patroni,
    render,
    rotation,
)
from infra.staging.inventory import (
    API,
    API_METRICS_PORT,
    API_PORT,
    BRIDGE,
    BRIDGE_ADDRESS,
    ETCD_CLIENT_PORT,
    LOAD_BALANCER_HEALTH_PORT,
    LOAD_BALANCER_PORT,
    MONITORING,
    NODE_EXPORTER_PORT,
    PATRONI_PORT,
    POSTGRES_PORT,
    REDIS_EXPORTER_PORT,
    REDIS_PORT,
    SENTINEL_PORT,
    STAGING,
    SUBNET,
    Host,
)
from infra.staging.network import NoNetem
from infra.staging.paths import Paths
from infra.staging.redis_acl import API_USER
from infra.staging.secrets import Secrets
from loadtest.swarm import Swarm, SwarmPlan, reports_dir, set_delay
from tests.support.staging import staging_up

SEED_USERS = 40
LB = STAGING.load_balancer_url
LB_ADDRESS = STAGING.load_balancer_address


@pytest.fixture(scope="module")
def paths() -> Paths:
    return Paths(reachable_root(VAR / "test-staging"))


@pytest.fixture(scope="module")
def staging(paths: Paths) -> Iterator[Seeded]:
    """Bring staging up once for the module; take it down and purge it, pass or fail."""
    with staging_up(paths, SEED_USERS) as seeded:
        yield seeded


def _get(path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET through the floating address, over https verified against the staging CA."""
    reply = fetch(LB_ADDRESS, "GET", path, timeout=timeout)
    return reply.status, reply.body


def _grid_paths(username: str) -> list[str]:
    status, body = _get(f"/api/users/{username}/")
    assert status == 200
    return [f"/api/grids/{grid['slug']}/" for grid in json.loads(body)["grids"]]


def _swarm(paths: Paths, seeded: Seeded, run_time: str) -> Swarm:
    plan = SwarmPlan(users=10, spawn_rate=10, run_time=run_time, workers=1, delay=None)
    swarm = Swarm(paths, plan, seeded, STAGING)
    swarm.start()
    return swarm


def _requests_so_far(paths: Paths) -> int:
    try:
        with (reports_dir(paths) / "swarm_stats.csv").open() as stats:
            rows = [row for row in csv.DictReader(stats) if row["Name"] == "Aggregated"]
    except OSError:
        return 0
    return int(rows[0]["Request Count"]) if rows else 0


def _history(paths: Paths) -> list[tuple[float, int, int]]:
    """Return (when, requests so far, failures so far) from the master's full history."""
    with (reports_dir(paths) / "swarm_stats_history.csv").open() as history:
        return [
            (
                float(row["Timestamp"]),
                int(row["Total Request Count"]),
                int(row["Total Failure Count"]),
            )
            for row in csv.DictReader(history)
            if row["Name"] == "Aggregated"
        ]


def test_staging_up_builds_every_host_from_the_inventory(staging: Seeded, paths: Paths) -> None:
    written = json.loads(paths.inventory_file.read_text())
    assert written["load_balancer_url"] == LB
    assert [
        (h["name"], h["namespace"], h["address"], tuple(h["roles"])) for h in written["hosts"]
    ] == [(host.name, host.netns, host.address, host.roles) for host in STAGING.hosts]
    assert set(network.namespaces()) == {host.netns for host in STAGING.hosts}
    for host in STAGING.hosts:
        # One route: the subnet's own. No default route, nowhere else to go.
        routes = network.ip("-n", host.netns, "route", "show").stdout.splitlines()
        assert [route.split()[0] for route in routes] == [str(SUBNET)], host.name
    for host in STAGING.with_role("api"):
        env = (paths.etc(host) / "api.env").read_text()
        assert all(database.address in env for database in STAGING.databases)
    status, body = _get("/readyz")
    assert status == 200
    assert _all_checks_ok(body)
    for lb in STAGING.load_balancers:
        assert all(state == "UP" for state in hosts.lb_servers(paths, lb).values()), lb.name
    assert len(hosts.floating_address_holders(STAGING)) == 1
    table = driver.format_status(driver.status(paths))
    assert table.count("streaming") == 2


def _all_checks_ok(readyz: bytes) -> bool:
    """Every database host (by the router's names), Redis and the change stream answer ok."""
    checks = json.loads(readyz)["checks"]
    expected = {"primary", "replica1", "replica2", "replica3", "redis", "change_stream"}
    return set(checks) == expected and all(state == "ok" for state in checks.values())


# Every job the alert rules read, and how many targets each has on staging.
SCRAPED = {
    "patroni": 3,
    "haproxy": 2,
    "keepalived": 2,
    "gridlink-api": 2,
    "redis": 3,
    "sentinel": 3,
}


def _targets_up() -> dict[str, int]:
    """Return, by job, how many targets Prometheus scraped and, behind the Redis exporter,
    found answering (redis_up)."""
    found = query.instant(STAGING.prometheus_address, "up == 1 unless on (instance) redis_up == 0")
    counts: dict[str, int] = {}
    for labels, _value in found or []:
        counts[labels["job"]] = counts.get(labels["job"], 0) + 1
    return counts


def test_prometheus_scrapes_every_host_and_the_apis_metrics_stay_closed_to_the_public(
    staging: Seeded,
) -> None:
    assert wait_until(lambda: _targets_up() == SCRAPED, timeout=60), _targets_up()
    # The API's public port still wants an admin's token; Prometheus has its own listener.
    assert _get("/metrics")[0] == 401
    holders = query.instant(STAGING.prometheus_address, "keepalived_vrrp_state == 2")
    assert holders is not None
    assert [labels["instance"].split(":")[0] for labels, _ in holders] == [
        lb.address for lb in hosts.floating_address_holders(STAGING)
    ]
    assert query.firing(STAGING.prometheus_address) == []  # a whole staging pages nobody


def test_gridlink_replicas_shows_every_database_host_of_staging(staging: Seeded) -> None:
    settings = render.staging_settings(STAGING)
    router = ReplicaRouter(settings.database_url, settings.replica_urls, 5)
    try:
        snapshot = router.refresh()
    finally:
        router.stop()
    assert snapshot.primary_reachable
    assert [server.host for server in snapshot.servers] == [
        f"{host.address}:5432" for host in STAGING.databases
    ]
    roles = sorted(server.role for server in snapshot.servers)
    assert roles == ["primary", "replica", "replica"]  # whichever host Patroni made the leader
    assert all(replica.in_rotation for replica in snapshot.replicas)


def _short_swarm_has_no_failures(paths: Paths, seeded: Seeded) -> None:
    status, figures = _swarm(paths, seeded, "10s").wait()
    assert figures.failures == 0
    assert figures.requests > 0
    assert status == 0
    assert figures.per_request("statements") > 0
    assert (reports_dir(paths) / "swarm.html").is_file()


def test_short_swarm_through_the_load_balancer_has_no_failures(
    staging: Seeded, paths: Paths
) -> None:
    _short_swarm_has_no_failures(paths, staging)


def test_short_swarm_with_1ms_on_every_link_has_no_failures(staging: Seeded, paths: Paths) -> None:
    try:
        set_delay(STAGING, "1ms")
    except NoNetem as missing:
        set_delay(STAGING, None)
        pytest.skip(str(missing))
    try:
        assert all(network.delay_of(host) == "1ms" for host in STAGING.hosts)
        _short_swarm_has_no_failures(paths, staging)
    finally:
        set_delay(STAGING, None)


def lbs_see(api: str, state: str, paths: Paths) -> bool:
    """Tell whether every load balancer's HAProxy finds the API host ``api`` in ``state``."""
    return all(hosts.lb_servers(paths, lb).get(api) == state for lb in STAGING.load_balancers)


def test_api_host_killed_mid_swarm_leaves_the_lb_and_nothing_fails_after(
    staging: Seeded, paths: Paths
) -> None:
    api1 = STAGING.named("api1")
    swarm = _swarm(paths, staging, "20s")
    try:
        assert wait_until(lambda: _requests_so_far(paths) > 50, timeout=30)
        assert faults.kill_host(api1)
        assert wait_until(lambda: lbs_see("api1", "DOWN", paths), timeout=10)
        noticed = time.time()
        # Our own reads through the load balancer, right after it noticed.
        answers = [_get("/readyz")[0] for _ in range(50)]
        _, figures = swarm.wait()
    finally:
        swarm.stop()
        hosts.api_server(paths, api1).start(lambda _line: None)
    assert answers == [200] * 50
    # Workers report to the master every 3 s and the CSV is written every second.
    settled = [
        (requests, failures) for when, requests, failures in _history(paths) if when >= noticed + 4
    ]
    assert settled, "the swarm ended before the load balancer noticed"
    assert settled[-1][1] == settled[0][1] == figures.failures
    assert settled[-1][0] > settled[0][0]  # and it went on serving the swarm through api2
    assert wait_until(lambda: lbs_see("api1", "UP", paths), timeout=30)


def test_replica_host_link_cut_reads_go_on(staging: Seeded, paths: Paths) -> None:
    db2 = STAGING.named("db2")
    grids = _grid_paths("test_user_1") + _grid_paths("test_user_2")
    faults.cut_link(db2)
    try:
        started = time.monotonic()
        statuses = []
        while time.monotonic() - started < 6:  # past the router's 2 s to take it out
            statuses += [_get(path)[0] for path in grids]
        states = {row.host.name: row.health for row in driver.status(paths)}
    finally:
        faults.restore_link(db2)
    assert statuses == [200] * len(statuses)
    assert "lbs: UP/UP" in states["api1"]
    assert "lbs: UP/UP" in states["api2"]
    assert wait_until(lambda: _all_checks_ok(_get("/readyz")[1]), timeout=30)


# --------------------------------------------------------------------------- what it refuses

LB_HOST = STAGING.load_balancer_url.removeprefix("https://")


def _refused_plain(address: str) -> bool:
    """Tell whether plain HTTP to ``host:port`` is refused: no HTTP answer at all, or the
    400 a Go TLS server (Prometheus, the exporters) sends a client speaking HTTP to it."""
    return http_status(address, "/") in (None, 400)


def test_the_edge_redirects_plain_http_and_sends_hsts_on_every_https_answer(
    staging: Seeded,
) -> None:
    plain = fetch(f"{LB_HOST}:{LOAD_BALANCER_PORT}", "GET", "/api/users/test_user_1/")
    assert plain.status == 301
    assert plain.headers["Location"] == f"https://{LB_HOST}/api/users/test_user_1/"
    assert b"test_user_1" not in plain.body  # a redirect, not the profile
    for path in ("/api/users/test_user_1/", "/readyz", "/api/users/me/", "/nothing/"):
        answer = fetch(LB_ADDRESS, "GET", path)
        assert answer.headers["Strict-Transport-Security"] == "max-age=31536000", path
    # The certificate is the staging CA's and names the floating address: verified above.
    for lb in STAGING.load_balancers:
        assert _refused_plain(f"{lb.address}:{LOAD_BALANCER_HEALTH_PORT}"), lb.name
        health = f"https://{lb.address}:{LOAD_BALANCER_HEALTH_PORT}"
        assert http_status(health, "/healthz") == 200, lb.name
        assert _refused_plain(f"{lb.address}:{NODE_EXPORTER_PORT}"), lb.name


def test_api_hosts_answer_tls_alone_and_trust_forwarded_addresses_from_the_lbs_alone(
    staging: Seeded, paths: Paths
) -> None:
    for host in STAGING.with_role("api"):
        for port in (API_PORT, API_METRICS_PORT):
            assert _refused_plain(f"{host.address}:{port}"), (host.name, port)
        assert hosts.api_answers(host, "/healthz") == 200
        env = render.parse_env((paths.etc(host) / "api.env").read_text())
        assert env["GRIDLINK_TRUSTED_PROXIES"] == ",".join(
            lb.address for lb in STAGING.load_balancers
        )
        assert _owned_alone_by(paths.etc(host) / "api.env", render.API_ACCOUNT)
        assert _runs_as(hosts.api_server(paths, host).pid()) == render.API_ACCOUNT
    for lb in STAGING.load_balancers:
        assert _runs_as(hosts.HAProxy(paths, lb).pid()) == render.HAPROXY_ACCOUNT
        assert _owned_alone_by(paths.etc(lb) / "haproxy.pem", render.HAPROXY_ACCOUNT)


def test_prometheus_and_alertmanager_want_tls_and_their_password(staging: Seeded) -> None:
    for address in (STAGING.prometheus_address, STAGING.alertmanager_address):
        host_port = address.removeprefix("https://")
        assert _refused_plain(host_port), address
        nobody = fetch(address, "GET", "/-/ready", headers={"Authorization": "Basic eDp5"})
        assert nobody.status == 401, address
        assert http_client.basic_auth("prometheus", "a wrong password") != hosts.web_login()
        wrong = fetch(
            address, "GET", "/-/ready", headers=http_client.basic_auth("prometheus", "wrong pw")
        )
        assert wrong.status == 401, address
        assert fetch(address, "GET", "/-/ready").status == 200  # the operator's login
    monitor = STAGING.one("monitoring")
    assert _refused_plain(f"{monitor.address}:{REDIS_EXPORTER_PORT}")


def _redis_ports() -> list[tuple[str, str, int]]:
    return [(host.name, host.address, REDIS_PORT) for host in STAGING.redis_hosts] + [
        (host.name, host.address, SENTINEL_PORT) for host in STAGING.with_role("sentinel")
    ]


def test_redis_and_sentinel_refuse_everyone_without_tls_and_a_user_of_their_own(
    staging: Seeded,
) -> None:
    ca: dict[str, Any] = {
        "ssl": True,
        "ssl_ca_certs": str(access.ca_file()),
        "socket_timeout": 2,
        "retry": Retry(NoBackoff(), 0),  # a refusal is an answer: no retries to wait through
    }
    api_password = access.secrets().password("redis-api")  # the positive case, read on purpose
    for name, address, port in _redis_ports():
        refused: list[dict[str, Any]] = [
            {},
            {"username": "gridlink-api", "password": "not the password at all"},
            {"username": "default", "password": ""},
        ]
        for credentials in refused:
            client = redis_lib.Redis(address, port, **ca, **credentials)
            with pytest.raises((redis_lib.AuthenticationError, redis_lib.ResponseError)):
                client.ping()
            client.close()
        plain = redis_lib.Redis(
            address, port, **{**ca, "ssl": False}, username="gridlink-api", password=api_password
        )
        with pytest.raises(redis_lib.ConnectionError):
            plain.ping()
        plain.close()
        api = redis_lib.Redis(address, port, **ca, username="gridlink-api", password=api_password)
        assert api.ping(), (name, port)
        forbidden: tuple[tuple[str, ...], ...] = (
            (("CONFIG", "GET", "*"), ("FLUSHALL",), ("ACL", "LIST"), ("KEYS", "*"))
            if port == REDIS_PORT
            else (
                ("SENTINEL", "FAILOVER", "gridlink"),
                ("SENTINEL", "SET", "gridlink", "quorum", "1"),
            )
        )
        for command in forbidden:
            with pytest.raises(redis_lib.exceptions.NoPermissionError):
                api.execute_command(*command)  # type: ignore[no-untyped-call]
        api.close()


def test_staging_s_secrets_are_kept_by_their_users_alone(staging: Seeded, paths: Paths) -> None:
    for host in STAGING.redis_hosts:
        assert _owned_alone_by(paths.etc(host) / "redis.conf", render.REDIS_ACCOUNT)
        assert _owned_alone_by(paths.etc(host) / "users.acl", render.REDIS_ACCOUNT)
        assert _runs_as(_redis_pid(paths, host)) == render.REDIS_ACCOUNT
    monitor = STAGING.one("monitoring")
    assert _runs_as(hosts.Prometheus(paths, monitor).pid()) == render.PROMETHEUS_ACCOUNT
    assert _owned_alone_by(paths.etc(monitor) / "prometheus-web.yml", render.PROMETHEUS_ACCOUNT)
    client_key = access.secrets().key_pair(monitor.name, "prometheus-client").key
    assert _owned_alone_by(client_key, render.PROMETHEUS_ACCOUNT)  # what it shows Patroni
    inventory = paths.inventory_file.read_text()
    passwords = access.secrets().root / "passwords"
    for secret in passwords.iterdir():
        assert secret.stat().st_mode & 0o777 == 0o600
        assert secret.read_text().strip() not in inventory
        for daemon_pid in (pid for host in STAGING.hosts for pid in network.pids(host)):
            try:
                command = Path(f"/proc/{daemon_pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert secret.read_text().strip() not in command, secret.name


def _redis_pid(paths: Paths, host: Host) -> int | None:
    from infra import redis_server

    return redis_server.pid(hosts.redis(STAGING, paths, host))


def _owned_alone_by(path: Path, account: str) -> bool:
    status = path.stat()
    return status.st_mode & 0o777 == 0o600 and pwd.getpwuid(status.st_uid).pw_name == account


def _runs_as(pid: int | None) -> str:
    assert pid is not None
    return pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name


def test_rotating_the_secrets_drops_no_request_and_the_old_redis_password_stops_working(
    staging: Seeded, paths: Paths
) -> None:
    old_password = access.secrets().password("redis-api")
    old_key = access.secrets().password("token-cache-key")
    # What a rotation that stopped half-way leaves: a second password on the API's user.
    _add_api_password(_STALE_REDIS_PASSWORD)
    token = _login(staging)
    failures: list[str] = []
    answered: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        paths_asked = ("/api/users/test_user_3/", "/api/users/me/", "/readyz")
        while not stop.is_set():
            for path in paths_asked:
                try:
                    reply = api_request(LB_ADDRESS, "GET", path, token=token, timeout=10)
                except (OSError, http.client.HTTPException) as problem:
                    failures.append(f"{path}: {type(problem).__name__}")
                    continue
                answered.append(reply.status)
                if reply.status != 200:
                    failures.append(f"{path}: {reply.status}")

    askers = [threading.Thread(target=keep_asking) for _ in range(3)]
    for asker in askers:
        asker.start()
    try:
        driver.rotate_secrets(paths, progress=lambda _line: None)
    finally:
        stop.set()
        for asker in askers:
            asker.join()
    assert failures == []
    assert len(answered) > 50
    assert access.secrets().password("redis-api") != old_password
    assert access.secrets().password("token-cache-key") != old_key
    for _name, address, port in _redis_ports():
        for password in (old_password, _STALE_REDIS_PASSWORD):
            old = _as_api_user(address, port, password)
            with pytest.raises(redis_lib.AuthenticationError):
                old.ping()
            old.close()
    for host in STAGING.with_role("api"):
        env = render.parse_env((paths.etc(host) / "api.env").read_text())
        assert old_password not in env["GRIDLINK_REDIS_URL"]
        assert env["GRIDLINK_TOKEN_CACHE_KEYS"] == access.secrets().password("token-cache-key")
    assert wait_until(lambda: _all_checks_ok(_get("/readyz")[1]), timeout=30)


_STALE_REDIS_PASSWORD = "left by a rotation that stopped half-way"


def _add_api_password(password: str) -> None:
    """Give the API's user one more password everywhere, as a rotation's first step does."""
    rotation.set_api_passwords(STAGING, access.secrets(), lambda _line: None, password)
    for _name, address, port in _redis_ports():
        # It works now: the check after the rotation could fail.
        stale = _as_api_user(address, port, password)
        assert stale.ping()
        stale.close()


def _as_api_user(address: str, port: int, password: str) -> redis_lib.Redis:
    """A client of one Redis or Sentinel as the API's user, over TLS verified against the CA."""
    tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(access.ca_file()), "socket_timeout": 2}
    return redis_lib.Redis(address, port, **tls, username=API_USER, password=password)


def _login(seeded: Seeded) -> str:
    body = {"username": "test_user_3", "password": seeded.password}
    reply = api_request(LB_ADDRESS, "POST", "/api/auth/login/", body)
    assert reply.status == 200, reply.body
    token = json.loads(reply.body)["token"]
    assert isinstance(token, str)
    return token


# --------------------------------------------------------------------------- what staging refuses
# From the machine itself, which holds none of staging's secrets but those a
# test reads to prove the positive case: every database, Patroni and etcd port
# refuses whoever comes without their own credentials (issue 20).

DATABASE_ROLES = {  # each role: the secret holding its password, the database it may reach
    "postgres": ("postgres-superuser", "gridlink"),
    "replicator": ("postgres-replication", "postgres"),
    "rewind_user": ("postgres-rewind", "postgres"),
    "gridlink_owner": ("postgres-owner", "gridlink"),
    "gridlink_api_a": ("postgres-api-a", "gridlink"),
    "gridlink_api_b": ("postgres-api-b", "gridlink"),
}
MADE_UP_ROLE = "gridlink_admin"
WRONG_PASSWORD = "not the password of anyone here"


def _connect_as(
    host: Host, role: str, password: str | None, sslmode: str, ca: Path, dbname: str = "gridlink"
) -> Any:
    """Connect to ``host``'s PostgreSQL; no passfile, ~/.pgpass or PGPASSWORD can help."""
    return psycopg2.connect(
        host=host.address,
        port=POSTGRES_PORT,
        dbname=dbname,
        user=role,
        password=password,
        sslmode=sslmode,
        sslrootcert=str(ca),
        passfile="/dev/null",
        connect_timeout=5,
    )


def _refusal(
    host: Host, role: str, password: str | None, sslmode: str, ca: Path, dbname: str = "gridlink"
) -> str:
    """Return why the connection was refused ('' if it was accepted)."""
    try:
        connection = _connect_as(host, role, password, sslmode, ca, dbname)
    except psycopg2.OperationalError as refused:
        return str(refused)
    connection.close()
    return ""


@pytest.mark.parametrize("host", STAGING.databases, ids=lambda host: host.name)
def test_postgresql_refuses_every_role_without_its_password_or_tls(
    staging: Seeded, paths: Paths, host: Host
) -> None:
    secrets = Secrets(paths.secrets)
    ca = secrets.ca_certificate
    assert "PGPASSWORD" not in os.environ
    for role, (secret, database) in DATABASE_ROLES.items():
        right = secrets.password(secret)
        assert "no password supplied" in _refusal(host, role, None, "verify-full", ca), role
        assert "password authentication failed" in _refusal(
            host, role, WRONG_PASSWORD, "verify-full", ca
        ), role
        # In clear text, even the right password finds no door: pg_hba.conf rejects it first.
        in_clear = _refusal(host, role, right, "disable", ca, database)
        assert "pg_hba.conf rejects connection" in in_clear, role
        assert "no encryption" in in_clear, role
        # The negative cases could fail: the same role, its password, over verified TLS.
        assert _refusal(host, role, right, "verify-full", ca, database) == "", role
    for password in (None, WRONG_PASSWORD):  # a role that does not exist is told no more
        assert _refusal(host, MADE_UP_ROLE, password, "verify-full", ca)
    assert "password authentication failed" in _refusal(
        host, MADE_UP_ROLE, WRONG_PASSWORD, "verify-full", ca
    )


# Run in another host's namespace: connect as argv's role (the password on stdin, never
# on a command line) over verified TLS; print why it was refused, nothing if it was not.
_CONNECT_FROM_A_HOST = """
import sys, psycopg2
address, port, role, dbname, ca = sys.argv[1:]
try:
    psycopg2.connect(host=address, port=port, user=role, dbname=dbname, password=sys.stdin.read(),
                     sslmode="verify-full", sslrootcert=ca, passfile="/dev/null",
                     connect_timeout=5).close()
except psycopg2.OperationalError as refused:
    print(refused)
"""


def _leader() -> Host:
    """The database host Patroni names leader (staging is whole in these tests)."""
    leader = patroni.leader(STAGING)
    assert leader is not None
    return leader


def _refusal_from(client: Host, server: Host, role: str, secrets: Secrets) -> str:
    """Why ``server`` refused ``role``, its right password, from ``client`` ('': it did not)."""
    secret, database = DATABASE_ROLES[role]
    arguments = [server.address, str(POSTGRES_PORT), role, database, str(secrets.ca_certificate)]
    command = ["ip", "netns", "exec", client.netns, sys.executable, "-c", _CONNECT_FROM_A_HOST]
    done = subprocess.run(
        [*command, *arguments],
        input=secrets.password(secret),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def test_each_database_role_logs_in_only_from_the_hosts_that_use_it(
    staging: Seeded, paths: Paths
) -> None:
    """A stray process on the network holding a password still finds no door (pg_hba.conf)."""
    secrets = Secrets(paths.secrets)
    leader = _leader()
    api, monitoring = STAGING.with_role(API)[0], STAGING.one(MONITORING)
    member = next(host for host in STAGING.databases if host != leader)
    refused = "no pg_hba.conf entry"
    for role in DATABASE_ROLES:
        assert refused in _refusal_from(monitoring, leader, role, secrets), role
    # The API's login from an API host, the members' roles from a member: let in.
    assert _refusal_from(api, leader, render.api_database_login(secrets).role, secrets) == ""
    for role in ("postgres", "rewind_user", "replicator"):
        assert _refusal_from(member, leader, role, secrets) == "", role
        # And no further: an API host is no member.
        assert refused in _refusal_from(api, leader, role, secrets), role


def test_the_apis_role_reads_and_writes_rows_but_cannot_change_the_schema(
    staging: Seeded, paths: Paths
) -> None:
    secrets = Secrets(paths.secrets)
    leader = _leader()
    role = render.api_database_login(secrets).role
    assert role in ("gridlink_api_a", "gridlink_api_b")
    password = secrets.password(render.api_secret(role))
    connection = _connect_as(leader, role, password, "verify-full", secrets.ca_certificate)
    connection.autocommit = True
    refused = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM users")
            row = cursor.fetchone()
            assert row is not None
            assert row[0] >= staging.users
            cursor.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles"
                " WHERE rolname = current_user"
            )
            assert cursor.fetchone() == (False, False, False)
            for statement in (
                "CREATE TABLE intruder (id int)",
                "CREATE TEMPORARY TABLE intruder (id int)",
                "CREATE SCHEMA intruder",
                "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                "DROP TABLE links",
                "ALTER TABLE users ADD COLUMN intruder int",
                "ALTER TABLE users OWNER TO " + role,
                "TRUNCATE grids",
                "CREATE INDEX intruder ON users (id)",
                "DROP SEQUENCE profile_version_seq",
            ):
                try:
                    cursor.execute(statement)
                except psycopg2.errors.InsufficientPrivilege:
                    refused.append(statement)
    finally:
        connection.close()
    assert len(refused) == 10, refused  # each statement refused, none done


UNSAFE_PATRONI_ENDPOINTS = ("/failover", "/switchover", "/restart", "/reload")


def shows_a_foreign_certificate(address: str, path: str, tmp_path: Path) -> bool:
    """Tell whether a client with a certificate of another CA gets any https answer."""
    intruder = Secrets(tmp_path).certificate("intruder", "client", ["intruder"])  # its own CA
    context = ssl.create_default_context(cafile=str(access.ca_file()))
    context.load_cert_chain(str(intruder.certificate), str(intruder.key))
    try:
        with urllib.request.urlopen(f"https://{address}{path}", timeout=3, context=context):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", STAGING.databases, ids=lambda host: host.name)
def test_patroni_serves_only_clients_of_the_ca_and_its_unsafe_endpoints_want_credentials(
    staging: Seeded, host: Host, tmp_path: Path
) -> None:
    address = f"{host.address}:{PATRONI_PORT}"
    # No client certificate, or one of another CA: no handshake, reads included.
    assert access.https_status(address, "/health") is None
    assert access.https_request(address, "/restart", method="POST", body=b"{}") is None
    assert not shows_a_foreign_certificate(address, "/health", tmp_path)
    # With the operator's certificate, every unsafe request still wants the credentials.
    for endpoint in UNSAFE_PATRONI_ENDPOINTS:
        answer = access.https_request(
            address, endpoint, method="POST", body=b"{}", client_certificate=True
        )
        assert answer is not None, endpoint
        assert answer[0] == 401, endpoint
        assert http_status(address, endpoint) is None  # no plain HTTP at all
    # Reads answer such a client; a reload with the credentials is accepted, so the
    # 401s above were for the missing credentials.
    assert access.https_status(address, "/health", client_certificate=True) == 200
    reloaded = access.https_request(
        address, "/reload", method="POST", authenticate=True, client_certificate=True
    )
    assert reloaded is not None
    assert reloaded[0] == 202


@pytest.mark.parametrize("host", STAGING.databases, ids=lambda host: host.name)
def test_etcd_refuses_a_client_without_a_certificate(staging: Seeded, host: Host) -> None:
    address = f"{host.address}:{ETCD_CLIENT_PORT}"
    # TLS with the CA but no client certificate: the handshake fails (client-cert-auth).
    assert access.https_status(address, "/health") is None
    assert (
        access.https_request(address, "/v3/kv/range", method="POST", body=b'{"key":"Lw=="}') is None
    )
    # Plain HTTP: Go's TLS listener answers 400 and nothing of etcd's.
    assert http_status(address, "/health") in (None, 400)
    # The operator's certificate, signed by the staging CA, gets in (healthy once any
    # election the replica's link cut above set off is over).
    assert wait_until(
        lambda: access.https_status(address, "/health", client_certificate=True) == 200, 30
    )


def test_rotating_the_apis_database_password_never_refuses_the_login_in_use(
    staging: Seeded, paths: Paths
) -> None:
    """The database side of ``rotate-secrets``: both logins work until the API has moved."""
    secrets = Secrets(paths.secrets)
    ca = secrets.ca_certificate
    leader = _leader()
    before = render.api_database_login(secrets)
    seen: list[str] = []

    def move_api(url: str) -> None:
        after = render.api_database_login(secrets)
        assert after.role != before.role
        assert make_url(sqlalchemy_url(url)).username == after.role
        # While the API moves, its old login and the new one both get in.
        assert _refusal(leader, before.role, before.password, "verify-full", ca) == ""
        assert _refusal(leader, after.role, after.password, "verify-full", ca) == ""
        seen.append(url)

    url = database_roles.rotate_api_database_role(STAGING, leader, secrets, move_api)

    assert seen == [url]
    after = render.api_database_login(secrets)
    assert access.api_login() == after.role
    # Once the API has moved, the old login's password is gone; the new one still works,
    # and so does the operator's passfile, which follows.
    refused = _refusal(leader, before.role, before.password, "verify-full", ca)
    assert "password authentication failed" in refused
    assert _refusal(leader, after.role, after.password, "verify-full", ca) == ""
    engine = create_engine(sqlalchemy_url(STAGING.write_url))
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT current_user")) == after.role
    finally:
        engine.dispose()


def test_no_command_line_or_log_shows_a_staging_password(staging: Seeded, paths: Paths) -> None:
    passwords = [
        file.read_text().strip().encode() for file in (paths.secrets / "passwords").iterdir()
    ]
    assert len(passwords) >= len(DATABASE_ROLES) + 1  # the roles' and Patroni's REST API's
    command_lines = []
    for process in Path("/proc").iterdir():
        try:
            command_lines.append((process / "cmdline").read_bytes())
        except OSError:
            continue  # not a process, or gone meanwhile
    assert len(command_lines) > len(STAGING.hosts)
    assert not [line for line in command_lines if any(p in line for p in passwords)]
    logs = sorted((paths.root / "hosts").rglob("*.log"))
    assert logs
    assert not [log for log in logs if any(p in log.read_bytes() for p in passwords)]


def test_down_leaves_no_namespace_process_or_address_behind(staging: Seeded, paths: Paths) -> None:
    pids = [pid for host in STAGING.hosts for pid in network.pids(host)]
    assert pids

    driver.down(paths, purge=True, progress=lambda _line: None)

    assert network.namespaces() == []
    assert not network.link_exists(BRIDGE)
    links = network.ip("-o", "link", "show").stdout
    assert "glv-" not in links
    assert str(BRIDGE_ADDRESS) not in network.ip("-o", "addr", "show").stdout
    assert not any(Path(f"/proc/{pid}").exists() and process_alive(pid, "") for pid in pids)
    assert not paths.root.exists()
