"""`gridlink serve` with a certificate answers TLS alone, on its API and its metrics listener.

And it listens on nothing else: no Unix socket either (gunicorn's control socket is off).

What a staging API host runs (``GRIDLINK_TLS_CERTIFICATE``, ``GRIDLINK_TLS_KEY``),
here on loopback with a CA and a certificate made in a temporary folder by
``infra/staging/secrets.py``: a client that trusts the CA is answered, one
that does not refuses the server, and plain HTTP gets no answer at all.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridlink.settings import Settings, SettingsError
from infra import http_client
from infra.http_client import fetch
from infra.processes import free_port
from infra.serving import ApiServer, http_status
from infra.staging.secrets import Secrets
from tests.support.servers import serving
from tests.support.sockets import unix_listeners


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return Secrets(tmp_path_factory.mktemp("tls") / "secrets")


@pytest.fixture(scope="module")
def server(settings: Settings, tls: Secrets) -> Iterator[tuple[ApiServer, str]]:
    """A server with TLS on its API and metrics listeners; and the metrics listener's address."""
    pair = tls.certificate("local", "api", ["127.0.0.1"])
    http_client.trust(tls.ca_certificate)
    served = settings.replace(
        tls_certificate=str(pair.certificate),
        tls_key=str(pair.key),
        metrics_bind=f"127.0.0.1:{free_port()}",
    )
    with serving(served) as (started,):
        yield started, served.metrics_bind


def test_the_api_and_its_metrics_answer_over_verified_tls_alone(
    server: tuple[ApiServer, str],
) -> None:
    api, metrics = server
    assert api.address.startswith("https://127.0.0.1:")
    assert fetch(api.address, "GET", "/healthz").status == 200
    plain = api.address.removeprefix("https://")
    assert http_status(plain, "/healthz") is None  # no HTTP answer to plain HTTP
    assert fetch(f"https://{metrics}", "GET", "/metrics").status == 200
    assert http_status(metrics, "/metrics") is None
    # A client that does not trust the staging CA refuses the server.
    untrusting = http.client.HTTPSConnection(plain, timeout=5, context=ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.request("GET", "/healthz")
    untrusting.close()


def test_no_process_of_the_server_listens_on_a_unix_socket(
    server: tuple[ApiServer, str],
) -> None:
    api, _ = server
    master = api.pid()
    assert master is not None
    for pid in [master, *api.worker_pids()]:
        assert unix_listeners(pid) == [], pid


def test_a_certificate_without_its_key_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="GRIDLINK_TLS_KEY"):
        Settings.for_serving(
            {
                "GRIDLINK_TLS_CERTIFICATE": str(tmp_path / "api.crt"),
                "GRIDLINK_MAIL_BACKEND": "console",
            }
        )
