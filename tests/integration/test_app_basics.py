"""The app's ground rules: health, readiness, and one error body for every error."""

from __future__ import annotations

import falcon.testing

from gridlink.services import Services
from tests.support.relay import wait_for_stream


def test_healthz_answers_ok(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/healthz")
    assert result.status_code == 200
    assert result.json == {"status": "ok"}


def test_readyz_names_every_dependency_as_ok(
    client: falcon.testing.TestClient, services: Services
) -> None:
    # A test before this one may have stopped the primary or Redis: the relay
    # reconnects within a second or so, and only then holds a position again.
    wait_for_stream(services)
    result = client.simulate_get("/readyz")
    assert result.status_code == 200
    assert result.json["checks"] == {
        "primary": "ok",
        "replica1": "ok",
        "redis": "ok",
        "change_stream": "ok",
    }
    assert result.json["status"] == "ok"


def test_unknown_route_is_a_404_in_the_error_format(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/api/nothing-here/")
    assert result.status_code == 404
    assert result.json == {"error": {"type": "not_found", "message": "Not found."}}


def test_wrong_method_is_a_405_in_the_error_format(client: falcon.testing.TestClient) -> None:
    result = client.simulate_delete("/healthz")
    assert result.status_code == 405
    assert result.json["error"]["type"] == "method_not_allowed"


def test_request_id_is_echoed_or_made(client: falcon.testing.TestClient) -> None:
    given = client.simulate_get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = client.simulate_get("/healthz")
    assert len(made.headers["X-Request-Id"]) == 32


def test_body_over_64_kib_is_refused_before_reading(client: falcon.testing.TestClient) -> None:
    result = client.simulate_post(
        "/api/auth/signup/",
        body=b"{" + b" " * (64 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert result.status_code == 413
    assert result.json["error"]["type"] == "payload_too_large"
