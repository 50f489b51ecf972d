"""The anonymous profile read answered before Falcon: the same answers as the resource gives.

``GridlinkApp`` hands an anonymous ``GET`` of ``/api/users/<name>/`` to
``AnonymousProfileReads``; ``falcon.App.__call__`` on the same app is the
``Profile`` resource behind the whole middleware stack. Each request here is
sent both ways and the answers must agree header for header.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import falcon
import falcon.testing
import orjson
import pytest

from gridlink.app import create_app
from gridlink.services import Services
from gridlink.settings import Settings
from tests.support.api import ApiUser, random_username, sign_up
from tests.support.queries import count_queries, count_redis_round_trips

ALLOWED_ORIGIN = "https://app.example"
REQUEST_ID = re.compile(r"[0-9a-f]{32}")


@dataclasses.dataclass(frozen=True)
class TwoWays:
    fast: falcon.testing.TestClient
    resource: falcon.testing.TestClient


@pytest.fixture(scope="module")
def two_ways(settings: Settings, services: Services) -> TwoWays:
    with_cors = dataclasses.replace(settings, cors_origins=(ALLOWED_ORIGIN,))
    app = create_app(with_cors, services)

    def through_falcon(env: dict[str, Any], start_response: Any) -> Any:
        return falcon.App.__call__(app, env, start_response)

    return TwoWays(falcon.testing.TestClient(app), falcon.testing.TestClient(through_falcon))


@pytest.fixture(scope="module")
def author(two_ways: TwoWays) -> ApiUser:
    return sign_up(two_ways.fast, "hit")


def comparable(result: falcon.testing.Result) -> tuple[int, dict[str, str], bytes]:
    headers = {name.lower(): value for name, value in result.headers.items()}
    given_or_made = headers.pop("x-request-id")
    assert given_or_made == "trace-7" or REQUEST_ID.fullmatch(given_or_made)
    return result.status_code, headers, result.content


def both(two_ways: TwoWays, method: str, path: str, **options: Any) -> falcon.testing.Result:
    fast = two_ways.fast.simulate_request(method, path, **options)
    assert comparable(fast) == comparable(
        two_ways.resource.simulate_request(method, path, **options)
    )
    return fast


def version_of(two_ways: TwoWays, username: str) -> str:
    return str(two_ways.fast.simulate_get(f"/api/users/{username}/").headers["ETag"]).strip('"')


@pytest.mark.parametrize("path", ["/api/users/{name}/", "/api/users/{name}", "/api/users/{NAME}/"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_cached_profile_is_answered_alike_by_both_ways(two_ways, author, method, path):
    name = author.username
    answer = both(two_ways, method, path.format(name=name, NAME=name.upper()))
    assert answer.status_code == 200
    assert answer.headers["X-Gridlink-Read-Source"] == "cache"
    assert answer.headers["Cache-Control"] == "no-cache"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    if method == "HEAD":  # GET's headers, no body (the fast path leaves HEAD to Falcon)
        assert answer.content == b""
        return
    assert orjson.loads(answer.content)["username"] == name


@pytest.mark.parametrize(
    ("tags", "status"),
    [("{etag}", 304), ("W/{etag}", 304), ('"1", {etag}', 304), ("*", 304), ('"0"', 200)],
)
def test_if_none_match_is_honoured_alike(two_ways, author, tags, status):
    etag = f'"{version_of(two_ways, author.username)}"'
    answer = both(
        two_ways,
        "GET",
        f"/api/users/{author.username}/",
        headers={"If-None-Match": tags.format(etag=etag)},
    )
    assert answer.status_code == status
    assert answer.headers["ETag"] == etag


def test_an_unknown_user_is_a_404_alike(two_ways):
    answer = both(two_ways, "GET", f"/api/users/{random_username('nobody')}/")
    assert answer.status_code == 404
    assert answer.json == {"error": {"type": "not_found", "message": "No such user."}}
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": ALLOWED_ORIGIN},
        {"Origin": "https://elsewhere.example"},
        {"X-Request-Id": "trace-7"},
        {"X-Request-Id": "not a usable id"},
    ],
)
def test_cors_and_request_ids_are_answered_alike(two_ways, author, headers):
    answer = both(two_ways, "GET", f"/api/users/{author.username}/", headers=headers)
    assert answer.headers["Vary"] == "Origin"
    if headers.get("Origin") == ALLOWED_ORIGIN:
        assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        assert "X-Gridlink-Read-Source" in answer.headers["Access-Control-Expose-Headers"]
    else:
        assert "Access-Control-Allow-Origin" not in answer.headers
    if headers.get("X-Request-Id") == "trace-7":
        assert answer.headers["X-Request-Id"] == "trace-7"


def test_a_username_of_another_form_is_a_404_without_a_redis_call(two_ways, services):
    # U+212A KELVIN SIGN lower-cases to "k": read from the cache first, it was karl's profile.
    karl = sign_up(two_ways.fast, "k")
    lookalike = "\u212a" + karl.username[1:]
    with (
        count_queries(services.primary, *services.replicas) as counted,
        count_redis_round_trips() as redis_calls,
    ):
        answer = two_ways.fast.simulate_get(f"/api/users/{lookalike}/")
    assert answer.status_code == 404
    assert answer.json["error"]["type"] == "not_found"
    assert counted.count == 0
    assert redis_calls == []


def test_a_read_with_a_token_or_a_body_goes_through_the_middleware(two_ways, author):
    refused = two_ways.fast.simulate_get(
        f"/api/users/{author.username}/", headers={"Authorization": "Token not-a-token"}
    )
    assert refused.status_code == 401
    own = two_ways.fast.simulate_get(f"/api/users/{author.username}/", headers=author.headers)
    assert own.status_code == 200
    assert own.headers["Cache-Control"] == "private, no-cache"
    too_big = two_ways.fast.simulate_get(
        f"/api/users/{author.username}/",
        body=b"x" * (64 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    assert too_big.status_code == 413


def test_the_fast_path_logs_and_counts_each_read_like_the_middleware(two_ways, author, log_lines):
    for client in (two_ways.fast, two_ways.resource):
        client.simulate_get(f"/api/users/{author.username}/", headers={"X-Request-Id": "trace-7"})
        client.simulate_get(f"/api/users/{random_username('nobody')}/")
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    lines = [line for line in lines if line["logger"] == "gridlink.requests"]
    assert len(lines) == 4
    for line in lines:
        assert line.pop("duration_ms") >= 0
        line.pop("timestamp")
        if line["status"] == 404:
            assert line.pop("path").startswith("/api/users/nobody_")
            assert REQUEST_ID.fullmatch(line.pop("request_id"))
            assert line.pop("read_source") in ("replica", "primary")
    fast_hit, fast_missing, resource_hit, resource_missing = lines
    assert fast_hit == resource_hit
    assert fast_missing == resource_missing
    assert fast_hit["path"] == f"/api/users/{author.username}"
    assert (fast_hit["route"], fast_hit["status"], fast_hit["read_source"]) == (
        "/api/users/{username}",
        200,
        "cache",
    )


def test_a_read_the_fast_path_cannot_answer_gets_the_apps_error_answer(services, log_lines):
    # No database answers: the fast path's miss fails, and the app's error
    # handlers answer it as for any other request (503, logged once).
    unreachable = "postgresql+psycopg2://gridlink@127.0.0.1:1/gridlink"
    down = Services.connect(
        services.settings.replace(database_url=unreachable, replica_urls=(unreachable,))
    )
    try:
        client = falcon.testing.TestClient(create_app(down.settings, down))
        answer = client.simulate_get(f"/api/users/{random_username('uncached')}/")
    finally:
        down.close()
    assert answer.status_code == 503
    assert answer.json["error"]["type"] == "unavailable"
    assert answer.headers["Retry-After"]
    assert answer.headers["Cache-Control"] == "no-store"
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    (request,) = [line for line in lines if line["logger"] == "gridlink.requests"]
    assert (request["route"], request["status"]) == ("/api/users/{username}", 503)
