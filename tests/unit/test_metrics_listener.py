"""The internal listener answers /metrics alone without a token; every other request passes on."""

from __future__ import annotations

from typing import Any

from gridlink.web.metrics import CONTENT_TYPE, InternalListener

LISTENER = "10.77.0.31:9101"


def call(listener: InternalListener, server: str, method: str, path: str) -> tuple[str, bytes]:
    name, port = server.split(":")
    env = {"SERVER_NAME": name, "SERVER_PORT": port, "REQUEST_METHOD": method, "PATH_INFO": path}
    answered: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answered.update(status=status, headers=dict(headers))

    body = b"".join(listener(env, start_response))
    if answered["status"].startswith("200") and path.startswith("/metrics"):
        assert answered["headers"]["Content-Type"] == CONTENT_TYPE
    return answered["status"], body


def the_api(env: dict[str, Any], start_response: Any) -> list[bytes]:
    """Stand in for the Falcon app: say that the request reached it."""
    start_response("401 Unauthorized", [])
    return [b"the api"]


def listener() -> InternalListener:
    return InternalListener(the_api, LISTENER, lambda: b"gridlink_stream_up 1.0\n")


def test_metrics_on_the_internal_listener_need_no_token() -> None:
    assert call(listener(), LISTENER, "GET", "/metrics") == ("200 OK", b"gridlink_stream_up 1.0\n")
    assert call(listener(), LISTENER, "GET", "/metrics/")[0] == "200 OK"


def test_the_internal_listener_serves_nothing_else() -> None:
    for method, path in (("GET", "/api/users/someone/"), ("POST", "/metrics"), ("GET", "/admin/")):
        assert call(listener(), LISTENER, method, path) == ("404 Not Found", b"")


def test_metrics_on_the_public_listener_go_to_the_api_and_its_admin_check() -> None:
    answer = call(listener(), "10.77.0.31:8000", "GET", "/metrics")
    assert answer == ("401 Unauthorized", b"the api")
