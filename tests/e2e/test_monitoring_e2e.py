"""Metrics and logs under real gunicorn: two workers, one scrape that counts them both."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gridlink.commands.accounts import set_admin
from gridlink.commands.unit_of_work import run_command
from gridlink.services import Services
from gridlink.settings import Settings
from gridlink.web.logs import JsonLinesHandler
from gridlink.web.metrics import COUNT_SECONDS
from infra.cluster import wait_until
from infra.serving import ApiServer
from tests.support.api import random_username
from tests.support.servers import call, serving, sign_up_at

PROFILE_ROUTE = "/api/users/{username}"
BATCH = 40
MAX_BATCHES = 10


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gunicorn") / "server.log"


@pytest.fixture(scope="module")
def server(settings: Settings, log_file: Path) -> Iterator[ApiServer]:
    with serving(settings, workers=2, log=log_file) as (started,):
        yield started


def log_lines(log_file: Path) -> list[dict[str, Any]]:
    """Every line the server logged, each of which must be one JSON object."""
    return [json.loads(line) for line in log_file.read_text().splitlines()]


def profile_requests_served(log_file: Path, username: str) -> list[dict[str, Any]]:
    return [
        line
        for line in log_lines(log_file)
        if line["logger"] == "gridlink.requests" and line["path"] == f"/api/users/{username}"
    ]


@pytest.fixture(scope="module")
def admin_token(server: ApiServer, services: Services) -> str:
    """An admin's token: /metrics is for admins only."""
    username, password = random_username("scraper"), "a scraper's password"
    sign_up_at(server.address, username, password)
    # A promotion revokes the user's tokens: an admin's token is a login's after it.
    run_command(services, partial(set_admin, username=username, is_admin=True))
    status, body = call(
        server.address, "POST", "/api/auth/login/", {"username": username, "password": password}
    )
    assert status == 200, body
    token: str = body["token"]
    return token


def counted(server: ApiServer, admin_token: str, name: str, **labels: str) -> float:
    status, body = call(server.address, "GET", "/metrics", token=admin_token)
    assert status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_one_scrape_counts_the_requests_every_worker_served(server, log_file, admin_token):
    username = random_username("metrics")
    sign_up_at(server.address, username)
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        # Each call is a new connection, which either worker may accept.
        for _ in range(MAX_BATCHES):
            statuses = list(
                pool.map(
                    lambda _: call(server.address, "GET", f"/api/users/{username}/")[0],
                    range(BATCH),
                )
            )
            assert statuses == [200] * BATCH
            sent += BATCH
            pids = {line["pid"] for line in profile_requests_served(log_file, username)}
            if len(pids) == 2:
                break
    assert pids == set(server.worker_pids()), "both workers served some of the requests"

    # A worker adds up its requests' counts every COUNT_SECONDS, and the one that
    # answers the scrape before it: the other's last moment shows up a batch later.
    def scraped(name: str, **labels: str) -> float:
        return counted(server, admin_token, name, **labels)

    assert wait_until(
        lambda: scraped("gridlink_http_requests_total", route=PROFILE_ROUTE) == sent,
        timeout=COUNT_SECONDS * 100,
    ), scraped("gridlink_http_requests_total", route=PROFILE_ROUTE)
    assert scraped("gridlink_http_request_duration_seconds_count", route=PROFILE_ROUTE) == sent
    assert scraped("gridlink_reads_total") == sent
    assert scraped("gridlink_profile_cache_lookups_total") == sent

    # A worker that dies takes nothing with it: its counts stay in the sum.
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(
        lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2,
        timeout=30,
    )
    server.wait_until_answering()
    assert scraped("gridlink_http_requests_total", route=PROFILE_ROUTE) == sent


def test_every_line_the_server_logs_is_json_and_requests_carry_their_id(server, log_file):
    status, _ = call(server.address, "GET", "/healthz?probe=1", headers={"X-Request-Id": "lb-9"})
    assert status == 200
    # Request lines are written a batch at a time (JsonLinesHandler.BATCH_SECONDS).
    assert wait_until(
        lambda: any(line.get("request_id") == "lb-9" for line in log_lines(log_file)),
        timeout=JsonLinesHandler.BATCH_SECONDS * 200,
    )
    lines = log_lines(log_file)  # json.loads fails on any line that is not JSON
    (line,) = [line for line in lines if line.get("request_id") == "lb-9"]
    assert (line["route"], line["path"], line["status"], line["method"]) == (
        "/healthz",
        "/healthz",
        200,
        "GET",
    )
    assert any(line["logger"] == "gunicorn.error" for line in lines)  # gunicorn's own, as JSON


def metrics_dir_of(pid: int) -> Path:
    """Find the metrics directory a worker writes to: its files carry its pid."""
    (directory,) = {
        path.parent for path in Path(tempfile.gettempdir()).glob(f"gridlink-metrics-*/*_{pid}.db")
    }
    return directory


def test_the_metrics_directory_is_made_for_the_server_and_removed_with_it(settings, tmp_path):
    with serving(settings, workers=1, log=tmp_path / "log") as (started,):
        call(started.address, "GET", "/healthz")
        (worker,) = started.worker_pids()
        directory = metrics_dir_of(worker)  # one directory, with the worker's values in it
    assert not directory.exists()
