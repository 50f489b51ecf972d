"""Redis as staging runs it: TLS only, ACL users, ``default`` off; the API behind a Sentinel too.

A Redis and a Sentinel of this module's own (``GRIDLINK_TEST_PORT_BASE`` + 260
and + 1260/1261: ``tests/support/clusters.py``) start from the very files
``infra/staging/render.py`` renders for staging, with a CA and passwords made
in a temporary folder by ``infra/staging/secrets.py``. The API, over the
module's own PostgreSQL, uses them only through its ``rediss://`` URL: every
Redis connection it makes (the cache, the token cache, the limits, the near
cache's invalidations, the relay) works with the ``gridlink-api`` user's rights
alone, and every wrong way in is refused. Its PostgreSQL is its own too: the
session's relay holds the session database's stream, and this module's relay
must take the stream of the database it writes into this Redis from.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gridlink.app import create_app
from gridlink.project import VAR
from gridlink.services import Services
from gridlink.settings import Settings
from infra import binaries, redis_server
from infra.daemons import Daemon
from infra.files import reachable_root, write_private
from infra.processes import as_account
from infra.redis_server import RedisServer
from infra.staging import render
from infra.staging.inventory import REDIS, SENTINEL, Host, Inventory
from infra.staging.redis_acl import API_USER, MONITOR_USER, SENTINEL_USER, RedisAccess
from infra.staging.secrets import Secrets
from tests.support.api import create_grid, sign_up
from tests.support.clusters import CLUSTERS, PORT_BASE, cluster_layout, running, settings_for
from tests.support.profile_reads import anonymous_read
from tests.support.queries import count_redis_round_trips
from tests.support.relay import relay_running
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="Redis runs as the redis user, as on staging: run as root"
)

LOOPBACK = "127.0.0.1"
REDIS_PORT = PORT_BASE + CLUSTERS["redis-tls"] + 1000
SENTINEL_PORT = REDIS_PORT + 1
HOST = Host("local", LOOPBACK, (REDIS, SENTINEL))
SERVICE = "gridlink"
ONCE = Retry(NoBackoff(), 0)  # a refusal is an answer: no retry with backoff to wait through


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with running(cluster_layout("redis-tls-database")) as layout:
        yield settings_for(layout, tmp_path_factory.mktemp("redis-tls-mail"))


@pytest.fixture(scope="module")
def secrets() -> Iterator[Secrets]:
    """A folder the redis user can reach (not pytest's, which is root's alone), purged after."""
    root = reachable_root(VAR / f"redis-tls-{REDIS_PORT}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        yield Secrets(root / "secrets")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_up(secrets: Secrets) -> Iterator[RedisServer]:
    """A TLS-only Redis and one Sentinel watching it, both as the redis user."""
    directory = secrets.root.parent / "redis"
    etc = secrets.root.parent / "etc"
    inventory = Inventory((HOST,))
    acl_file = etc / "users.acl"
    write_private(acl_file, render.redis_acl(secrets), render.REDIS_ACCOUNT)
    config = etc / "redis.conf"
    rendered = render.redis_conf(HOST, secrets, acl_file, REDIS_PORT)
    write_private(config, rendered, render.REDIS_ACCOUNT)
    server = RedisServer(
        "redis-tls",
        LOOPBACK,
        REDIS_PORT,
        directory,
        config_file=config,
        tls=True,
        client_options=RedisAccess.of(secrets, MONITOR_USER).client_options(),
        account=render.REDIS_ACCOUNT,
    )
    sentinel_dir = secrets.root.parent / "sentinel"
    sentinel_dir.mkdir()
    os.chown(sentinel_dir, *_ids(render.REDIS_ACCOUNT))
    directory.mkdir()
    os.chown(directory, *_ids(render.REDIS_ACCOUNT))
    sentinel_config = sentinel_dir / "sentinel.conf"
    sentinel_text = render.sentinel_conf(
        inventory, HOST, sentinel_dir, secrets, SENTINEL_PORT, REDIS_PORT
    ).replace(f"{SERVICE} {LOOPBACK} {REDIS_PORT} 2", f"{SERVICE} {LOOPBACK} {REDIS_PORT} 1")
    write_private(sentinel_config, sentinel_text, render.REDIS_ACCOUNT)
    tools = binaries.tools(lambda _line: None)
    sentinel = Daemon(
        "sentinel-tls",
        [*as_account(render.REDIS_ACCOUNT), tools.redis_server, str(sentinel_config), "--sentinel"],
        pid_file=sentinel_dir / "sentinel.pid",
        log=sentinel_dir / "sentinel.log",
        cwd=sentinel_dir,
    )
    sentinel.program = "sentinel"
    try:
        redis_server.start(tools, server, lambda _line: None)
        sentinel.start(lambda _line: None)
        monitor = _sentinel(secrets, MONITOR_USER)
        wait_for(lambda: _master_of(monitor) is not None, 20, "the Sentinel names the master")
        yield server
    finally:
        sentinel.stop(lambda _line: None)
        redis_server.stop(server, lambda _line: None)


def _ids(account: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(account)
    return entry.pw_uid, entry.pw_gid


def _sentinel(secrets: Secrets, user: str) -> redis.Redis:
    options = RedisAccess.of(secrets, user).client_options()
    return redis.Redis(LOOPBACK, SENTINEL_PORT, socket_timeout=2, **options)


def _master_of(client: redis.Redis) -> Any:
    try:
        return client.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)  # type: ignore[no-untyped-call]
    except redis.RedisError:
        return None


def api_url(secrets: Secrets, host: str = LOOPBACK) -> str:
    password = secrets.password("redis-api")
    return f"rediss://{API_USER}:{password}@{host}:{REDIS_PORT}/0?ssl_ca_certs={secrets.ca_certificate}"


@pytest.fixture(scope="module", params=["direct", "through a sentinel"])
def tls_settings(
    request: pytest.FixtureRequest, settings: Settings, secrets: Secrets, redis_up: RedisServer
) -> Settings:
    sentinels = ((LOOPBACK, SENTINEL_PORT),) if request.param != "direct" else ()
    return settings.replace(
        redis_url=api_url(secrets), redis_sentinels=sentinels, redis_service=SERVICE
    )


@pytest.fixture(scope="module")
def tls_services(tls_settings: Settings) -> Iterator[Services]:
    with Services.connected(tls_settings) as connected, relay_running(tls_settings):
        yield connected


def test_the_api_uses_redis_with_its_own_user_alone(
    tls_services: Services, secrets: Secrets
) -> None:
    client = falcon.testing.TestClient(create_app(tls_services.settings, tls_services))
    user = sign_up(client, "tls")  # sign-up limits (a script), the token cache, write marks
    assert client.simulate_get("/api/users/me/", headers=user.headers).status_code == 200
    create_grid(client, user)  # the write-through (a script) and, in time, the relay's store
    # A miss fills Redis; then Redis answers; then, tracked, the process's memory does.
    anonymous_read(client, user.username)
    wait_for(
        lambda: (
            anonymous_read(client, user.username).headers.get("X-Gridlink-Read-Source") == "cache"
        ),
        15,
        "a read answered from Redis",
    )
    near = tls_services.cache.near
    assert near is not None
    wait_for(near.current, 15, "the near cache's invalidation connection tracks")

    def from_memory() -> bool:
        with count_redis_round_trips() as sent:
            anonymous_read(client, user.username)
        return not sent

    wait_for(from_memory, 15, "the profile answered from memory")
    # Every connection to Redis is the API's user, the monitor's (this look) or Sentinel's.
    monitor = redis.Redis(
        LOOPBACK, REDIS_PORT, **RedisAccess.of(secrets, MONITOR_USER).client_options()
    )
    users = {entry["user"] for entry in monitor.client_list()}
    monitor.close()
    assert users == {API_USER, MONITOR_USER, SENTINEL_USER}


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"username": API_USER, "password": "not the password at all"},
        {"username": "default", "password": ""},
    ],
    ids=["no credentials", "a wrong password", "the default user"],
)
def test_redis_and_sentinel_refuse_who_does_not_prove_a_user(
    redis_up: RedisServer, secrets: Secrets, credentials: dict[str, Any]
) -> None:
    tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(secrets.ca_certificate)}
    for port in (REDIS_PORT, SENTINEL_PORT):
        client = redis.Redis(LOOPBACK, port, socket_timeout=2, retry=ONCE, **tls, **credentials)
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            client.ping()
        client.close()


def test_redis_and_sentinel_speak_tls_alone_and_are_verified_by_name(
    redis_up: RedisServer, secrets: Secrets
) -> None:
    access = RedisAccess.of(secrets, API_USER).client_options()
    plain = {key: value for key, value in access.items() if not key.startswith("ssl")}
    for port in (REDIS_PORT, SENTINEL_PORT):
        with pytest.raises(redis.ConnectionError):
            redis.Redis(LOOPBACK, port, socket_timeout=2, retry=ONCE, **plain).ping()
        # "localhost" is not a name on the certificate: the client refuses the server.
        with pytest.raises(redis.ConnectionError):
            redis.Redis("localhost", port, socket_timeout=2, retry=ONCE, **access).ping()
    assert redis.Redis(LOOPBACK, REDIS_PORT, socket_timeout=2, **access).ping()


@pytest.mark.parametrize(
    "command",
    [
        ("CONFIG", "GET", "*"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("ACL", "LIST"),
        ("SHUTDOWN",),
        ("GET", "other:key"),
    ],
)
def test_the_api_user_cannot_administer_redis_or_reach_other_keys(
    redis_up: RedisServer, secrets: Secrets, command: tuple[str, ...]
) -> None:
    access = RedisAccess.of(secrets, API_USER).client_options()
    client = redis.Redis(LOOPBACK, REDIS_PORT, socket_timeout=2, **access)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)  # type: ignore[no-untyped-call]
    client.close()


def test_the_api_user_asks_sentinel_for_the_master_and_nothing_else(
    redis_up: RedisServer, secrets: Secrets
) -> None:
    client = _sentinel(secrets, API_USER)
    assert _master_of(client) == [LOOPBACK.encode(), str(REDIS_PORT).encode()]
    for command in (
        ("SENTINEL", "SET", SERVICE, "quorum", "5"),
        ("SENTINEL", "FAILOVER", SERVICE),
        ("ACL", "LIST"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)  # type: ignore[no-untyped-call]
    client.close()


def test_files_that_hold_secrets_are_the_redis_users_alone(
    redis_up: RedisServer, secrets: Secrets
) -> None:
    etc = secrets.root.parent / "etc"
    for path in (etc / "users.acl", etc / "redis.conf", secrets.root / "local" / "redis.key"):
        mode = path.stat()
        assert mode.st_mode & 0o777 == 0o600, path
        assert mode.st_uid == _ids(render.REDIS_ACCOUNT)[0], path
    acl = (etc / "users.acl").read_text()
    assert secrets.password("redis-api") not in acl  # hashes only
    assert "user default off" in acl
    assert _runs_as(redis_up) == render.REDIS_ACCOUNT


def _runs_as(server: RedisServer) -> str:
    import pwd

    pid = redis_server.pid(server)
    assert pid is not None
    return pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name
