"""Monitoring on the healthy session cluster: the replicas endpoint, /metrics, request logs.

Faults (a paused or stopped replica) are in test_monitoring_faults.py, on a
cluster of their own.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import falcon
import falcon.testing
import orjson

from gridlink.app import create_app
from gridlink.cli import main
from gridlink.resources.monitoring import inline_policy
from gridlink.services import Services
from gridlink.settings import Settings
from tests.support.api import random_username
from tests.support.metrics import make_admin, scrape, value
from tests.support.servers import server_environment, use_settings_environment

LSN = re.compile(r"^[0-9A-F]+/[0-9A-F]+$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# --------------------------------------------------------------------------- helpers


def logged(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def request_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in logged(stream) if line["logger"] == "gridlink.requests"]


# --------------------------------------------------------------------------- replicas endpoint


def test_replicas_endpoint_refuses_anonymous_callers_and_non_admins(client, user):
    anonymous = client.simulate_get("/api/admin/replicas/")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Token"
    assert anonymous.json["error"]["type"] == "unauthenticated"
    refused = client.simulate_get("/api/admin/replicas/", headers=user.headers)
    assert refused.status_code == 403
    assert refused.json["error"]["type"] == "permission_denied"


def test_admin_sees_the_primary_and_every_replica_of_the_healthy_cluster(
    client, services, settings
):
    admin = make_admin(client, services)
    result = client.simulate_get("/api/admin/replicas", headers=admin.headers)
    assert result.status_code == 200, result.text
    body = result.json
    assert set(body) == {
        "primary",
        "replicas",
        "max_lag_seconds",
        "checked_at",
        "stream",
        "servers",
        "last_failover",
    }
    stream = body["stream"]  # the session's relay runs
    assert stream["status"] == "ok", stream
    assert LSN.match(stream["applied_lsn"])
    assert stream["lag_bytes"] >= 0
    assert stream["lag_seconds"] >= 0
    assert stream["pending_changes"] >= 0
    assert body["primary"]["reachable"] is True
    assert body["primary"]["host"] == services.router.snapshot().primary_host
    assert LSN.match(body["primary"]["lsn"])
    assert body["max_lag_seconds"] == 5.0
    assert TIMESTAMP.match(body["checked_at"])
    assert [replica["name"] for replica in body["replicas"]] == ["replica1"]
    for replica in body["replicas"]:
        assert set(replica) == {
            "name",
            "host",
            "reachable",
            "in_rotation",
            "lag_bytes",
            "lag_seconds",
            "replay_lsn",
        }
        assert replica["host"].startswith("127.0.0.1:")
        assert (replica["reachable"], replica["in_rotation"]) == (True, True)
        assert 0 <= replica["lag_seconds"] <= body["max_lag_seconds"]
        assert isinstance(replica["lag_bytes"], int)
        assert replica["lag_bytes"] >= 0
        assert LSN.match(replica["replay_lsn"])
    assert result.headers["Cache-Control"] == "no-store"


def test_the_replicas_command_prints_the_cluster_without_colour_into_a_pipe(
    settings, monkeypatch, capsys
):
    use_settings_environment(monkeypatch, settings)
    assert main(["replicas"]) == 0
    printed = capsys.readouterr().out
    header, columns, *server_rows, stream = printed.splitlines()
    assert stream.startswith("change stream: ok, applied "), stream
    assert header.startswith("primary 127.0.0.1:")
    assert "reachable, WAL at " in header
    assert ", timeline " in header
    assert re.split(r"\s{2,}", columns) == [
        "SERVER",
        "HOST",
        "REACHABLE",
        "ROTATION",
        "LAG SECONDS",
        "LAG BYTES",
        "REPLAY LSN",
        "ROLE",
        "TIMELINE",
    ]
    rows = {row.split()[0]: row.split() for row in server_rows}
    assert set(rows) == {"replica1", "primary"}  # the write URL's host is probed too
    name, host, reachable, rotation, lag_seconds, lag_bytes, replay_lsn, role, timeline = rows[
        "replica1"
    ]
    assert (name, reachable, rotation, role) == ("replica1", "yes", "yes", "replica")
    assert host == settings.replica_urls[0].split("@")[1].split("/")[0]
    assert float(lag_seconds) <= settings.max_replica_lag_seconds
    assert int(lag_bytes) >= 0
    assert LSN.match(replay_lsn)
    assert int(timeline) >= 1
    assert rows["primary"][7] == "primary"
    assert "\x1b[" not in printed


def test_the_replicas_command_redraws_until_ctrl_c_and_then_exits_cleanly(settings):
    watcher = subprocess.Popen(
        [str(Path(sys.executable).with_name("gridlink")), "replicas", "--watch"],
        env=server_environment(settings, NO_COLOR="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        frames = 0
        while frames < 2:  # into a pipe, each frame starts with the primary's line
            line = watcher.stdout.readline()
            assert line, "the watch ended on its own"
            frames += line.startswith("primary ")
        watcher.send_signal(signal.SIGINT)
        _, errors = watcher.communicate(timeout=10)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0
    assert "Traceback" not in errors
    assert "KeyboardInterrupt" not in errors


# --------------------------------------------------------------------------- /metrics


def test_metrics_are_for_admins_only(client, user):
    # They name every database host: nobody else may read them.
    anonymous = client.simulate_get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Token"
    refused = client.simulate_get("/metrics", headers=user.headers)
    assert refused.status_code == 403
    assert "gridlink_" not in anonymous.text + refused.text


def test_metrics_count_requests_reads_and_cache_lookups_as_they_happen(client, services, user):
    profile_route = "/api/users/{username}"
    admin = make_admin(client, services)
    before = scrape(client, admin)
    # Sign-up wrote the profile through to the cache: a hit. An unknown name
    # misses the cache and is read from the database: a 404 on the same route.
    assert client.simulate_get(f"/api/users/{user.username}/").status_code == 200
    missing = client.simulate_get(f"/api/users/{random_username('nobody')}/")
    assert missing.status_code == 404
    assert client.simulate_get("/no/such/path").status_code == 404
    after = scrape(client, admin)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "gridlink_http_requests_total"
    assert delta(requests, route=profile_route, method="GET", status="200") == 1
    assert delta(requests, route=profile_route, method="GET", status="404") == 1
    assert delta(requests, route="unmatched", method="GET", status="404") == 1
    latency = "gridlink_http_request_duration_seconds_count"
    assert delta(latency, route=profile_route, method="GET", status="200") == 1
    assert delta("gridlink_profile_cache_lookups_total", result="hit") == 1
    assert delta("gridlink_profile_cache_lookups_total", result="miss") == 1
    assert delta("gridlink_reads_total", source="cache") == 1
    from_database = delta("gridlink_reads_total", source="replica") + delta(
        "gridlink_reads_total", source="primary"
    )
    assert from_database == 1
    assert missing.headers["X-Gridlink-Read-Source"] in ("replica", "primary")
    # The scrape before this one was itself counted.
    assert value(after, requests, route="/metrics", method="GET", status="200") >= 1


def test_metrics_show_each_replica_and_the_primary_as_the_router_sees_them(client, services):
    samples = scrape(client, make_admin(client, services))
    replica = services.router.snapshot().replicas[0]
    labels = {"replica": "replica1", "host": replica.host}
    primary_host = services.router.snapshot().primary_host
    assert value(samples, "gridlink_primary_reachable", host=primary_host) == 1
    assert value(samples, "gridlink_replica_reachable", **labels) == 1
    assert value(samples, "gridlink_replica_in_rotation", **labels) == 1
    assert value(samples, "gridlink_replicas_in_rotation") == 1
    assert ("gridlink_replica_lag_bytes", frozenset(labels.items())) in samples
    assert 0 <= value(samples, "gridlink_replica_lag_seconds", **labels) <= 5
    assert value(samples, "gridlink_stream_up") == 1  # the session's relay runs
    assert value(samples, "gridlink_stream_lag_bytes") >= 0
    assert ("gridlink_stream_lag_seconds", frozenset()) in samples


# --------------------------------------------------------------------------- request logs


def test_each_request_is_logged_as_one_json_line_with_its_route_and_request_id(
    client, user, log_lines
):
    answer = client.simulate_get(
        f"/api/users/{user.username}/",
        query_string="fields=all&token=not-logged",
        headers={"X-Request-Id": "trace-42.a"},
    )
    assert answer.status_code == 200
    (line,) = request_lines(log_lines)
    assert TIMESTAMP.match(line.pop("timestamp"))
    duration = line.pop("duration_ms")
    assert isinstance(duration, float)
    assert duration >= 0
    assert isinstance(line.pop("pid"), int)
    assert line == {
        "level": "info",
        "logger": "gridlink.requests",
        "message": "request",
        "method": "GET",
        "route": "/api/users/{username}",
        "path": f"/api/users/{user.username}",
        "remote_addr": "127.0.0.1",
        "status": 200,
        "read_source": "cache",
        "request_id": "trace-42.a",
    }


def test_a_request_without_a_usable_request_id_is_logged_under_the_one_it_was_given(
    client, log_lines
):
    answer = client.simulate_get("/healthz", headers={"X-Request-Id": "no spaces allowed"})
    (line,) = request_lines(log_lines)
    assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])
    assert line["request_id"] == answer.headers["X-Request-Id"]
    assert (line["route"], line["status"], line["read_source"]) == ("/healthz", 200, None)


def test_a_refused_request_is_timed_counted_and_logged_too(client, log_lines):
    answer = client.simulate_get(
        "/api/users/me/", headers={"Authorization": "Bearer x", "X-Request-Id": "refused-1"}
    )
    assert answer.status_code == 401
    (line,) = request_lines(log_lines)
    assert (line["route"], line["status"], line["request_id"]) == (
        "/api/users/me",
        401,
        "refused-1",
    )


class Explodes:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("SELECT password_hash FROM users WHERE id = 7 -- secret-detail")


def test_an_unexpected_error_is_logged_with_its_request_id_and_the_answer_leaks_nothing(
    settings: Settings, services: Services, log_lines
):
    app = create_app(settings, services)
    app.add_route("/explodes", Explodes())
    answer = falcon.testing.TestClient(app).simulate_get(
        "/explodes", headers={"X-Request-Id": "boom-7"}
    )
    assert answer.status_code == 500
    assert answer.json == {
        "error": {
            "type": "internal_error",
            "message": "Something went wrong on our side; it has been logged.",
        }
    }
    for secret in ("secret-detail", "password_hash", "SELECT", "Traceback", "RuntimeError"):
        assert secret not in answer.text
    error, request = logged(log_lines)
    assert (error["level"], error["logger"], error["message"]) == (
        "error",
        "gridlink.errors",
        "unhandled error",
    )
    assert error["request_id"] == "boom-7"
    assert "secret-detail" in error["exception"]  # the operator gets the whole story
    assert (request["status"], request["route"], request["request_id"]) == (
        500,
        "/explodes",
        "boom-7",
    )


# --------------------------------------------------------------------------- the admin page


def test_admin_page_is_self_contained_and_allows_only_its_own_inline_code(client):
    page = client.simulate_get("/admin/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert policy == inline_policy(page.content)
    assert policy.startswith("default-src 'self'; script-src 'sha256-")
    assert "unsafe-inline" not in policy
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    assert "localStorage" not in page.text
    assert "document.cookie" not in page.text
