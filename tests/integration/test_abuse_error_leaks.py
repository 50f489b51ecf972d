"""Every kind of error the API gives, swept for leaks: traces, SQL, driver names, ids, hashes.

The module runs a cluster of its own (offset 140), so it can stop the primary
and sweep the 503s too. Each answer must be API.md's error body with the
expected status and type, and show nothing of the inside (``tests.abuse.leaks_in``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import text

from gridlink.app import create_app
from gridlink.services import Services
from gridlink.settings import Settings
from infra import cluster
from tests.support.abuse import an_address, assert_clean_result
from tests.support.api import ApiUser, create_grid, create_link, sign_up
from tests.support.clusters import cluster_layout, running
from tests.support.faults import stopped

MISSING_GRID = "gr_" + "0" * 32
FIRST_KEY = 7_350_000


@pytest.fixture(scope="module")
def leak_cluster() -> Iterator[cluster.ClusterLayout]:
    with running(cluster_layout("abuse-leaks")) as layout:
        yield layout


@pytest.fixture(scope="module")
def leak_services(leak_cluster: cluster.ClusterLayout) -> Iterator[Services]:
    settings = Settings(
        database_url=leak_cluster.database_url,
        replica_urls=leak_cluster.replica_urls,
        redis_url=leak_cluster.redis_url,
        max_grids_per_user=1,
        login_failures_per_client=1,
        login_failures_per_account=1,
    )
    services = Services.connect(settings)
    # Internal keys that stand out: a leaked one is then found by its value.
    with services.primary.begin() as connection:
        for table in ("users", "grids", "links", "auth_tokens"):
            connection.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {FIRST_KEY})")
            )
    yield services
    services.close()


@pytest.fixture(scope="module")
def leak_client(leak_services: Services) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(leak_services.settings, leak_services))


# (method, path, json body or raw bytes, headers) -> (status, type)
Case = tuple[str, str, Any, dict[str, str], int, str]


def error_cases(owner: ApiUser, stranger: ApiUser, grid: str, link: str) -> dict[str, Case]:
    """One request for each error the API can give while every server is up."""
    mine, theirs = owner.headers, stranger.headers
    json_type = {"Content-Type": "application/json"}
    return {
        "unknown route": ("GET", "/api/nope/", None, {}, 404, "not_found"),
        "wrong method": ("PUT", "/api/grids/", None, mine, 405, "method_not_allowed"),
        "no token": ("GET", "/api/users/me/", None, {}, 401, "unauthenticated"),
        "bad token": (
            "GET",
            "/api/grids/",
            None,
            {"Authorization": "Token forged"},
            401,
            "unauthenticated",
        ),
        "bad scheme": (
            "GET",
            "/api/grids/",
            None,
            {"Authorization": "Basic x"},
            401,
            "unauthenticated",
        ),
        "someone else's grid": (
            "PATCH",
            f"/api/grids/{grid}/",
            {"title": "x"},
            theirs,
            403,
            "permission_denied",
        ),
        "someone else's link": (
            "DELETE",
            f"/api/links/{link}/",
            None,
            theirs,
            403,
            "permission_denied",
        ),
        "missing grid": ("GET", f"/api/grids/{MISSING_GRID}/", None, {}, 404, "not_found"),
        "malformed slug": ("PATCH", "/api/links/li_1/", {"title": "x"}, mine, 404, "not_found"),
        "missing profile": ("GET", "/api/users/nobody_at_all/", None, {}, 404, "not_found"),
        "missing grid for a link": (
            "POST",
            "/api/links/",
            {"grid": MISSING_GRID, "url": "https://example.com/"},
            mine,
            404,
            "not_found",
        ),
        "invalid json": (
            "POST",
            "/api/grids/",
            b"{",
            {**mine, **json_type},
            400,
            "invalid_request",
        ),
        "invalid field": (
            "POST",
            "/api/links/",
            {"grid": grid, "url": "ftp://x", "width": 9},
            mine,
            400,
            "invalid_request",
        ),
        "unknown field": ("PATCH", "/api/users/me/", {"id": 1}, mine, 400, "invalid_request"),
        "bad limit": ("GET", "/api/grids/?limit=0", None, mine, 400, "invalid_request"),
        "unknown cursor": (
            "GET",
            f"/api/grids/?starting_after={MISSING_GRID}",
            None,
            mine,
            400,
            "invalid_request",
        ),
        "wrong password to delete": (
            "DELETE",
            "/api/users/me/",
            {"password": "wrong"},
            mine,
            400,
            "invalid_request",
        ),
        "unknown reset token": (
            "POST",
            "/api/auth/password/reset/confirm/",
            {"token": "t" * 43, "new_password": "a password 1"},
            {},
            400,
            "invalid_request",
        ),
        "taken username": (
            "POST",
            "/api/auth/signup/",
            {"username": owner.username, "email": owner.email, "password": "a password 1"},
            {},
            409,
            "conflict",
        ),
        "grid limit": ("POST", "/api/grids/", {"title": "second"}, mine, 409, "limit_reached"),
        "idempotency mismatch": (
            "POST",
            "/api/links/",
            {"grid": grid, "url": "https://example.com/other"},
            {**mine, "Idempotency-Key": "leak-key"},
            422,
            "idempotency_mismatch",
        ),
        "too large": (
            "POST",
            "/api/grids/",
            b" " * (65 * 1024),
            {**mine, **json_type},
            413,
            "payload_too_large",
        ),
        "wrong media type": (
            "POST",
            "/api/grids/",
            b"title=x",
            {**mine, "Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        "throttled login": (
            "POST",
            "/api/auth/login/",
            {"username": stranger.username, "password": "wrong"},
            {},
            429,
            "rate_limited",
        ),
    }


def send(client: falcon.testing.TestClient, case: Case, address: str) -> falcon.testing.Result:
    method, path, body, headers, _, _ = case
    path, _, query = path.partition("?")
    options: dict[str, Any] = {"headers": headers, "query_string": query, "remote_addr": address}
    if isinstance(body, bytes):
        options["body"] = body
    elif body is not None:
        options["json"] = body
    return client.simulate_request(method, path, **options)


def test_no_error_answer_of_the_api_leaks_anything(leak_client, leak_services, leak_cluster):
    owner, stranger = sign_up(leak_client, "leak"), sign_up(leak_client, "leak")
    grid = create_grid(leak_client, owner)["slug"]
    link = create_link(leak_client, owner, grid)["slug"]
    # Set up the stateful errors: a key used once, a login failed once (the limit is 1).
    leak_client.simulate_post(
        "/api/auth/login/",
        json={"username": stranger.username, "password": "wrong"},
        remote_addr=an_address(),
    )
    keyed = leak_client.simulate_post(
        "/api/links/",
        json={"grid": grid, "url": "https://example.com/"},
        headers={**owner.headers, "Idempotency-Key": "leak-key"},
    )
    assert keyed.status_code == 201
    cases = error_cases(owner, stranger, grid, link)
    internal_ids = internal_ids_of(leak_services, owner, stranger)
    for name, case in cases.items():
        result = send(leak_client, case, an_address())
        expected_status, expected_type = case[4], case[5]
        assert assert_clean_result(result, expected_status) == expected_type, name
        assert not [key for key in internal_ids if key in result.text], name


def internal_ids_of(services: Services, *users: ApiUser) -> set[str]:
    """The integer keys of ``users`` and of everything they own, as they would be printed."""
    with services.primary.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT u.id, g.id, l.id FROM users u LEFT JOIN grids g ON g.user_id = u.id "
                "LEFT JOIN links l ON l.user_id = u.id WHERE u.username = ANY(:names)"
            ),
            {"names": [user.username for user in users]},
        ).all()
    keys = {str(value) for row in rows for value in row if value is not None}
    assert keys
    assert all(int(key) > FIRST_KEY for key in keys)
    return keys


def test_with_the_primary_down_writes_answer_503_without_leaking(
    leak_client, leak_services, leak_cluster
):
    owner = sign_up(leak_client, "down")
    grid = create_grid(leak_client, owner)["slug"]
    writes = [
        (
            "POST",
            "/api/auth/signup/",
            {"username": "down_x", "email": "d@example.com", "password": "a password 1"},
            {},
        ),
        ("POST", "/api/auth/login/", {"username": owner.username, "password": owner.password}, {}),
        ("PATCH", f"/api/grids/{grid}/", {"title": "x"}, owner.headers),
        ("POST", "/api/links/", {"grid": grid, "url": "https://example.com/"}, owner.headers),
        ("DELETE", f"/api/grids/{grid}/", None, owner.headers),
        ("PATCH", "/api/users/me/", {"display_name": "x"}, owner.headers),
        ("POST", "/api/auth/password/reset/", {"email": owner.email}, {}),
    ]
    with stopped(leak_cluster, "primary"):
        for method, path, body, headers in writes:
            result = send(
                leak_client, (method, path, body, headers, 503, "unavailable"), an_address()
            )
            assert assert_clean_result(result, 503) == "unavailable", (method, path)
            assert int(result.headers["Retry-After"]) > 0
