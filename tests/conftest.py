"""Test fixtures: a real primary, replica and Redis that the test run starts and stops.

The test cluster lives in ``var/test-cluster-<port>`` on its own ports
(``GRIDLINK_TEST_PORT_BASE``, default 15442: primary 15442, replicas 15443..,
Redis 16442), so it runs beside ``make run``'s cluster. It is purged at the
end of the session, whether the tests passed or not. A change relay runs
beside it, as `gridlink serve` runs one.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest

from gridlink.app import create_app
from gridlink.cache.stream import ChangeRelay
from gridlink.services import Services
from gridlink.settings import Settings
from gridlink.web.logs import JsonFormatter
from infra import cluster
from tests.support.api import ApiUser, sign_up
from tests.support.clusters import cluster_layout, running, settings_for
from tests.support.oidc_provider import OpenIdProvider, providers_running
from tests.support.relay import relay_running


@pytest.fixture(scope="session")
def test_cluster() -> Iterator[cluster.ClusterLayout]:
    with running(cluster_layout("test-cluster")) as layout:
        yield layout


@pytest.fixture(scope="session")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="session")
def settings(test_cluster: cluster.ClusterLayout, mail_dir: Path) -> Settings:
    return settings_for(test_cluster, mail_dir)


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    with Services.connected(settings) as connected:
        yield connected


@pytest.fixture(scope="session")
def relay(settings: Settings, services: Services) -> Iterator[ChangeRelay]:
    """The session cluster's change relay: tests see the system as `gridlink serve` runs it."""
    with relay_running(settings) as running_relay:
        yield running_relay


@pytest.fixture(scope="session")
def client(settings: Settings, services: Services, relay: ChangeRelay) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(settings, services))


@pytest.fixture(scope="session")
def openid_providers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, OpenIdProvider]]:
    """Real OpenID providers (panva's oidc-provider) on loopback, by name; see PROVIDER_KINDS."""
    with providers_running(tmp_path_factory.mktemp("openid-providers")) as providers:
        yield providers


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Capture what the ``gridlink`` loggers write, formatted as under gunicorn."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gridlink")
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


@pytest.fixture
def user(client: falcon.testing.TestClient) -> ApiUser:
    return sign_up(client)


@pytest.fixture
def other_user(client: falcon.testing.TestClient) -> ApiUser:
    return sign_up(client, "other")
