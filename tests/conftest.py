"""Test fixtures: a real primary, replica and Redis that the test run starts and stops.

The test cluster lives in ``var/test-cluster-<port>`` on its own ports
(``GRIDLINK_TEST_PORT_BASE``, default 15442: primary 15442, replicas 55443..,
Redis 16442), so it runs beside ``make run``'s cluster. It is purged at the
end of the session, whether the tests passed or not.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError

from gridlink.app import create_app
from gridlink.cli import PROJECT_ROOT, migrate
from gridlink.lsn import parse_lsn
from gridlink.services import Services
from gridlink.settings import MailBackend, Settings
from infra import cluster

PORT_BASE = int(os.environ.get("GRIDLINK_TEST_PORT_BASE", "15442"))


def cluster_layout(name: str, port_offset: int = 0, replicas: int = 1) -> cluster.ClusterLayout:
    """Lay out a cluster of a test's own, on ports ``PORT_BASE + port_offset`` and up.

    Modules that stop or slow servers use their own cluster (offsets 20, 40,
    60...), so the session cluster stays healthy for everyone else.
    """
    port = PORT_BASE + port_offset
    return cluster.ClusterLayout(
        root=cluster.reachable_root(PROJECT_ROOT / "var" / f"{name}-{port}"),
        pg_port=port,
        redis_port=port + 1000,
        replicas=replicas,
    )


@contextmanager
def running(layout: cluster.ClusterLayout) -> Iterator[cluster.ClusterLayout]:
    """Start and migrate ``layout``; stop and purge it afterwards, pass or fail."""
    try:
        cluster.up(layout)
        migrate(layout.database_url)
        yield layout
    finally:
        cluster.down(layout, purge=True)


TEST_SIGNUP_LIMIT = 1_000_000


@pytest.fixture(scope="session")
def test_cluster() -> Iterator[cluster.ClusterLayout]:
    with running(cluster_layout("test-cluster")) as layout:
        yield layout


@pytest.fixture(scope="session")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="session")
def settings(test_cluster: cluster.ClusterLayout, mail_dir: Path) -> Settings:
    return Settings(
        database_url=test_cluster.database_url,
        replica_urls=test_cluster.replica_urls,
        redis_url=test_cluster.redis_url,
        mail_backend=MailBackend("file", directory=mail_dir),
        # The suite signs up thousands of users from one test address; the
        # sign-up limits are tested with settings of their own.
        signups_per_address=TEST_SIGNUP_LIMIT,
        signups_per_minute=TEST_SIGNUP_LIMIT,
    )


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    connected = Services.connect(settings)
    yield connected
    connected.close()


@pytest.fixture(scope="session")
def client(settings: Settings, services: Services) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(settings, services))


def random_username(prefix: str = "u") -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


@dataclass
class QueryCount:
    statements: list[str]

    @property
    def count(self) -> int:
        return len(self.statements)


@contextmanager
def count_queries(*engines: Engine) -> Iterator[QueryCount]:
    """Count the SQL statements sent on ``engines`` inside the block."""
    counted = QueryCount(statements=[])

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counted.statements.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield counted
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


@dataclass(frozen=True)
class ApiUser:
    username: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


def sign_up(client: falcon.testing.TestClient, prefix: str = "u") -> ApiUser:
    """Create a user through the API and return it with its first token."""
    username = random_username(prefix)
    password = secrets.token_urlsafe(12)
    email = f"{username}@example.com"
    result = client.simulate_post(
        "/api/auth/signup/",
        json={"username": username, "email": email, "password": password},
    )
    assert result.status_code == 201, result.text
    return ApiUser(username, email, password, result.json["token"])


@pytest.fixture
def user(client: falcon.testing.TestClient) -> ApiUser:
    return sign_up(client)


@pytest.fixture
def other_user(client: falcon.testing.TestClient) -> ApiUser:
    return sign_up(client, "other")


def wait_for_replica(services: Services, timeout: float = 15) -> None:
    """Wait until replica1 has replayed everything the primary has now, and the router knows."""
    with services.primary.connect() as connection:
        target = parse_lsn(
            connection.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with services.replicas[0].connect() as connection:
                replayed: str | None = connection.execute(
                    text("SELECT pg_last_wal_replay_lsn()::text")
                ).scalar_one()
            if replayed is not None and parse_lsn(replayed) >= target:
                services.router.refresh()
                if services.router.choose(target) == 0:
                    return
        except OperationalError:  # the replica may still be starting
            services.router.refresh()
        time.sleep(0.1)
    raise AssertionError("replica1 did not catch up in time")
