"""Reads at the edges: usernames that cannot exist, and HEAD wherever GET is served."""

from __future__ import annotations

import falcon.testing
import pytest

from gridlink.services import Services
from tests.support.api import sign_up
from tests.support.queries import count_queries, count_redis_round_trips

KELVIN_SIGN = "\u212a"  # lowercases to "k", as does "K"


def test_a_username_that_cannot_exist_is_404_without_asking_redis_or_the_database(
    client: falcon.testing.TestClient, services: Services
) -> None:
    owner = sign_up(client, "k")  # "k_<hex>": its profile is in the cache now
    assert (
        client.simulate_get(f"/api/users/{owner.username}/").headers["X-Gridlink-Read-Source"]
        == "cache"
    )
    lookalike = KELVIN_SIGN + owner.username[1:]
    assert lookalike.lower() == owner.username.lower()
    engines = (services.primary, *services.replicas)
    with count_queries(*engines) as queries, count_redis_round_trips() as redis_calls:
        result = client.simulate_get(f"/api/users/{lookalike}/")
    assert result.status_code == 404
    assert result.json["error"]["type"] == "not_found"
    assert owner.username not in result.text
    assert queries.count == 0, queries.statements
    assert redis_calls == []


def get_paths(client: falcon.testing.TestClient) -> list[tuple[str, dict[str, str]]]:
    user = sign_up(client)
    grid = client.simulate_post("/api/grids/", json={"title": "Work"}, headers=user.headers).json
    link = client.simulate_post(
        "/api/links/",
        json={"grid": grid["slug"], "url": "https://example.com/"},
        headers=user.headers,
    ).json
    return [
        (f"/api/users/{user.username}/", {}),
        (f"/api/grids/{grid['slug']}/", {}),
        (f"/api/links/{link['slug']}/", {}),
        (f"/api/links/?grid={grid['slug']}", {}),
        ("/api/grids/", user.headers),
        ("/api/users/me/", user.headers),
        ("/healthz", {}),
        ("/api/openapi.json", {}),
    ]


def test_head_answers_like_get_without_a_body(client: falcon.testing.TestClient) -> None:
    for path, headers in get_paths(client):
        got = client.simulate_get(path, headers=headers)
        head = client.simulate_head(path, headers=headers)
        assert (path, got.status_code, head.status_code) == (path, 200, 200)
        assert head.content == b""
        assert head.headers["Content-Type"] == got.headers["Content-Type"]
        assert int(head.headers["Content-Length"]) == len(got.content)
        for header in ("ETag", "Cache-Control", "X-Gridlink-Read-Source"):
            assert (header in head.headers) == (header in got.headers), (path, header)


@pytest.mark.parametrize(
    ("path", "status"), [("/api/users/nobody_there/", 404), ("/api/grids/", 401)]
)
def test_head_answers_gets_errors_without_a_body(
    client: falcon.testing.TestClient, path: str, status: int
) -> None:
    head = client.simulate_head(path)
    assert head.status_code == status
    assert head.content == b""


def test_head_where_no_get_is_served_is_405(client: falcon.testing.TestClient) -> None:
    head = client.simulate_head("/api/auth/login/")
    assert head.status_code == 405
    assert head.content == b""
