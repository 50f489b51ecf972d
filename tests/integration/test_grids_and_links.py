"""Grids and links through the API, against the real primary, replica and Redis.

Reads that follow a write are made with the writer's token: read-your-writes
is promised to the writer, while an anonymous reader may see a replica that
has not replayed the write yet (tests/integration/test_read_side.py covers
what anonymous readers are promised).
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from typing import Any

import falcon.testing
import orjson
import pytest
from sqlalchemy import text

from gridlink.app import create_app
from gridlink.services import Services
from tests.support.abuse import nothing_changes_on_primary, primary_state
from tests.support.api import create_grid, create_link, sign_up
from tests.support.profile_reads import evict
from tests.support.queries import count_queries

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
MISSING_GRID = "gr_" + "0" * 32
MISSING_LINK = "li_" + "0" * 32


def profile(client: falcon.testing.TestClient, username: str) -> dict[str, Any]:
    result = client.simulate_get(f"/api/users/{username}/")
    assert result.status_code == 200, result.text
    return dict(result.json)


def version_of(client: falcon.testing.TestClient, username: str) -> int:
    return int(client.simulate_get(f"/api/users/{username}/").headers["ETag"].strip('"'))


# --- grids -------------------------------------------------------------------------


def test_create_grid_answers_the_grid_with_its_location(client, user) -> None:
    result = client.simulate_post("/api/grids/", json={"title": "Work"}, headers=user.headers)
    assert result.status_code == 201
    grid = result.json
    assert re.fullmatch(r"gr_[0-9a-f]{32}", grid["slug"])
    assert result.headers["Location"] == f"/api/grids/{grid['slug']}/"
    assert grid["user"] == user.username
    assert grid["title"] == "Work"
    assert grid["links"] == []
    assert TIMESTAMP.match(grid["created_on"])
    assert grid["modified_on"] is None
    assert list(grid) == ["slug", "user", "title", "created_on", "modified_on", "links"]


def test_grid_title_defaults_to_empty(client, user) -> None:
    result = client.simulate_post("/api/grids/", json={}, headers=user.headers)
    assert result.status_code == 201
    assert result.json["title"] == ""


def test_grid_is_readable_with_and_without_trailing_slash(client, user) -> None:
    grid = create_grid(client, user)
    for path in (f"/api/grids/{grid['slug']}/", f"/api/grids/{grid['slug']}"):
        result = client.simulate_get(path, headers=user.headers)
        assert result.status_code == 200
        assert result.json == grid
        assert result.headers["X-Gridlink-Read-Source"] in ("primary", "replica", "cache")


def test_rename_grid_sets_modified_on(client, user) -> None:
    grid = create_grid(client, user)
    result = client.simulate_patch(
        f"/api/grids/{grid['slug']}/", json={"title": "Play"}, headers=user.headers
    )
    assert result.status_code == 200
    assert result.json["title"] == "Play"
    assert TIMESTAMP.match(result.json["modified_on"])
    assert (
        client.simulate_get(f"/api/grids/{grid['slug']}/", headers=user.headers).json["title"]
        == "Play"
    )


def test_deleting_a_grid_hides_it_and_its_links_but_keeps_the_rows(client, services, user):
    grid = create_grid(client, user)
    link = create_link(client, user, grid["slug"])
    result = client.simulate_delete(f"/api/grids/{grid['slug']}/", headers=user.headers)
    assert result.status_code == 204
    assert (
        client.simulate_get(f"/api/grids/{grid['slug']}/", headers=user.headers).status_code == 404
    )
    assert (
        client.simulate_get(f"/api/links/{link['slug']}/", headers=user.headers).status_code == 404
    )
    assert (
        client.simulate_get(
            "/api/links/", params={"grid": grid["slug"]}, headers=user.headers
        ).status_code
        == 404
    )
    assert profile(client, user.username)["grids"] == []
    with services.primary.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT g.is_deleted AS g_deleted, g.deleted_on IS NOT NULL AS g_when,"
                " l.is_deleted AS l_deleted, l.deleted_on IS NOT NULL AS l_when"
                " FROM grids g JOIN links l ON l.grid_id = g.id WHERE g.slug = :slug"
            ),
            {"slug": grid["slug"]},
        ).all()
    assert [tuple(row) for row in rows] == [(True, True, True, True)]


def test_deleted_grid_cannot_be_changed_or_deleted_again(client, services, user) -> None:
    grid = create_grid(client, user)
    client.simulate_delete(f"/api/grids/{grid['slug']}/", headers=user.headers)
    path = f"/api/grids/{grid['slug']}/"
    with nothing_changes_on_primary(services, user.username):
        for result in (
            client.simulate_patch(path, json={"title": "x"}, headers=user.headers),
            client.simulate_delete(path, headers=user.headers),
        ):
            assert result.status_code == 404
            assert result.json["error"]["type"] == "not_found"


@pytest.mark.parametrize("slug", [MISSING_GRID, "gr_123", "nonsense", "li_" + "a" * 32, "gr_%00"])
def test_unknown_and_malformed_grid_slugs_are_not_found(client, services, user, slug) -> None:
    path = f"/api/grids/{slug}/"
    with nothing_changes_on_primary(services, user.username):
        for result in (
            client.simulate_get(path),
            client.simulate_patch(path, json={"title": "x"}, headers=user.headers),
            client.simulate_delete(path, headers=user.headers),
        ):
            assert result.status_code == 404
            assert result.json["error"]["type"] == "not_found"


def test_grid_commands_need_a_token(client, services, user) -> None:
    grid = create_grid(client, user)
    path = f"/api/grids/{grid['slug']}/"
    with nothing_changes_on_primary(services, user.username):
        for result in (
            client.simulate_get("/api/grids/"),
            client.simulate_post("/api/grids/", json={"title": "x"}),
            client.simulate_patch(path, json={"title": "x"}),
            client.simulate_delete(path),
        ):
            assert result.status_code == 401
            assert result.headers["WWW-Authenticate"] == "Token"
            assert result.json["error"]["type"] == "unauthenticated"


def test_another_users_grid_cannot_be_changed(client, services, user, other_user) -> None:
    grid = create_grid(client, user)
    path = f"/api/grids/{grid['slug']}/"
    with nothing_changes_on_primary(services, user.username, other_user.username):
        patch = client.simulate_patch(path, json={"title": "mine"}, headers=other_user.headers)
        delete = client.simulate_delete(path, headers=other_user.headers)
        link = client.simulate_post(
            "/api/links/",
            json={"grid": grid["slug"], "url": "https://evil.example/"},
            headers=other_user.headers,
        )
    for result in (patch, delete, link):
        assert result.status_code == 403
        assert result.json["error"]["type"] == "permission_denied"
    assert link.json["error"]["message"] == "You don't have permission to add links to this grid."
    assert client.simulate_get(path, headers=user.headers).json == grid


@pytest.mark.parametrize(
    ("title", "status"), [("t" * 128, 201), ("t" * 129, 400), ("", 201), (5, 400), (None, 400)]
)
def test_grid_title_bounds(client, services, user, title, status) -> None:
    before = primary_state(services, user.username)
    result = client.simulate_post("/api/grids/", json={"title": title}, headers=user.headers)
    assert result.status_code == status
    if status == 400:
        assert "title" in result.json["error"]["fields"]
        assert primary_state(services, user.username) == before
    else:
        assert result.json["title"] == title
        grids = primary_state(services, user.username)["grids"]
        assert (result.json["slug"], title) in [(slug, stored) for slug, stored, *_ in grids]


def test_unknown_grid_field_is_named(client, services, user) -> None:
    with nothing_changes_on_primary(services, user.username):
        result = client.simulate_post(
            "/api/grids/", json={"title": "x", "owner": "me"}, headers=user.headers
        )
    assert result.status_code == 400
    assert result.json["error"]["fields"] == {"owner": ["Unknown field."]}


def test_grid_body_must_be_json(client, services, user) -> None:
    with nothing_changes_on_primary(services, user.username):
        not_json = client.simulate_post(
            "/api/grids/",
            body=b"{nope",
            headers={**user.headers, "Content-Type": "application/json"},
        )
        wrong_type = client.simulate_post(
            "/api/grids/", body=b"title=x", headers={**user.headers, "Content-Type": "text/plain"}
        )
    assert not_json.status_code == 400
    assert not_json.json["error"]["type"] == "invalid_request"
    assert wrong_type.status_code == 415
    assert wrong_type.json["error"]["type"] == "unsupported_media_type"


# --- links -------------------------------------------------------------------------


def test_create_link_answers_the_link(client, user) -> None:
    grid = create_grid(client, user)
    result = client.simulate_post(
        "/api/links/",
        json={
            "grid": grid["slug"],
            "title": "Portfolio",
            "url": "https://example.com/",
            "background": "/bg/colours.jpg",
            "width": 2,
            "height": 1,
        },
        headers=user.headers,
    )
    assert result.status_code == 201
    link = result.json
    assert result.headers["Location"] == f"/api/links/{link['slug']}/"
    assert re.fullmatch(r"li_[0-9a-f]{32}", link["slug"])
    assert link == {
        "slug": link["slug"],
        "grid": grid["slug"],
        "title": "Portfolio",
        "url": "https://example.com/",
        "background": "/bg/colours.jpg",
        "width": 2,
        "height": 1,
        "position": 0,
        "created_on": link["created_on"],
        "modified_on": None,
    }
    assert list(link) == list(orjson.loads(result.content))  # API.md's key order, as sent
    assert TIMESTAMP.match(link["created_on"])


def test_link_defaults_and_position_after_the_last(client, user) -> None:
    grid = create_grid(client, user)
    first = create_link(client, user, grid["slug"])
    assert (first["title"], first["background"], first["width"], first["height"]) == ("", "", 1, 1)
    assert first["position"] == 0
    create_link(client, user, grid["slug"], position=7)
    assert create_link(client, user, grid["slug"])["position"] == 8
    create_link(client, user, grid["slug"], position=10000)
    assert create_link(client, user, grid["slug"])["position"] == 10000


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("url", "http://a.example/" + "x" * (2048 - 17), True),
        ("url", "http://a.example/" + "x" * (2049 - 17), False),
        ("url", "ftp://example.com/", False),
        ("url", "javascript:alert(1)", False),
        ("url", "/relative", False),
        ("url", "", False),
        ("background", "", True),
        ("background", "/" + "b" * 511, True),
        ("background", "/" + "b" * 512, False),
        ("background", "https://cdn.example/bg.png", True),
        ("background", "bg.png", False),
        ("background", "data:image/png;base64,xx", False),
        ("width", 1, True),
        ("width", 4, True),
        ("width", 0, False),
        ("width", 5, False),
        ("height", 4, True),
        ("height", 0, False),
        ("width", 2.5, False),
        ("width", "2", False),
        ("width", True, False),
        ("position", 0, True),
        ("position", 10000, True),
        ("position", -1, False),
        ("position", 10001, False),
        ("position", 10**30, False),
        ("title", "t" * 128, True),
        ("title", "t" * 129, False),
        ("title", "nul\x00byte", False),
    ],
)
def test_link_field_bounds(client, services, user, field, value, ok) -> None:
    grid = create_grid(client, user)
    body = {"grid": grid["slug"], "url": "https://example.com/", field: value}
    before = primary_state(services, user.username)
    result = client.simulate_post("/api/links/", json=body, headers=user.headers)
    if ok:
        assert result.status_code == 201, result.text
        assert result.json[field] == value
        assert len(primary_state(services, user.username)["links"]) == 1
    else:
        assert result.status_code == 400, result.text
        assert field in result.json["error"]["fields"]
        assert primary_state(services, user.username) == before


def test_link_needs_a_url_and_a_grid(client, services, user) -> None:
    with nothing_changes_on_primary(services, user.username):
        result = client.simulate_post("/api/links/", json={}, headers=user.headers)
    assert result.status_code == 400
    assert set(result.json["error"]["fields"]) == {"grid", "url"}


def test_link_in_an_unknown_grid_is_not_found(client, services, user) -> None:
    for grid in (MISSING_GRID, "gr_bad"):
        with nothing_changes_on_primary(services, user.username):
            result = client.simulate_post(
                "/api/links/",
                json={"grid": grid, "url": "https://x.example/"},
                headers=user.headers,
            )
        assert result.status_code == 404
        assert result.json["error"]["type"] == "not_found"


def test_unknown_link_field_is_named(client, services, user) -> None:
    grid = create_grid(client, user)
    with nothing_changes_on_primary(services, user.username):
        result = client.simulate_post(
            "/api/links/",
            json={"grid": grid["slug"], "url": "https://x.example/", "slug": "li_" + "1" * 32},
            headers=user.headers,
        )
    assert result.status_code == 400
    assert result.json["error"]["fields"] == {"slug": ["Unknown field."]}


def test_patch_link_changes_fields_and_modified_on(client, user) -> None:
    grid = create_grid(client, user)
    link = create_link(client, user, grid["slug"])
    result = client.simulate_patch(
        f"/api/links/{link['slug']}/",
        json={"title": "New", "width": 3, "position": 5},
        headers=user.headers,
    )
    assert result.status_code == 200
    assert (result.json["title"], result.json["width"], result.json["position"]) == ("New", 3, 5)
    assert TIMESTAMP.match(result.json["modified_on"])
    assert (
        client.simulate_get(f"/api/links/{link['slug']}/", headers=user.headers).json == result.json
    )


def test_patch_link_rejects_bad_values_and_changes_nothing(client, services, user) -> None:
    grid = create_grid(client, user)
    link = create_link(client, user, grid["slug"])
    with nothing_changes_on_primary(services, user.username):
        result = client.simulate_patch(
            f"/api/links/{link['slug']}/",
            json={"title": "ok", "height": 9},
            headers=user.headers,
        )
    assert result.status_code == 400
    assert set(result.json["error"]["fields"]) == {"height"}
    assert client.simulate_get(f"/api/links/{link['slug']}/", headers=user.headers).json == link


def test_link_moves_to_another_grid_of_the_same_owner(client, user) -> None:
    first, second = create_grid(client, user, "one"), create_grid(client, user, "two")
    link = create_link(client, user, first["slug"])
    moved = client.simulate_patch(
        f"/api/links/{link['slug']}/", json={"grid": second["slug"]}, headers=user.headers
    )
    assert moved.status_code == 200
    assert moved.json["grid"] == second["slug"]
    assert (
        client.simulate_get(f"/api/grids/{first['slug']}/", headers=user.headers).json["links"]
        == []
    )
    assert client.simulate_get(f"/api/grids/{second['slug']}/", headers=user.headers).json[
        "links"
    ] == [moved.json]


def test_link_cannot_move_to_another_users_grid(client, services, user, other_user) -> None:
    grid = create_grid(client, user)
    theirs = create_grid(client, other_user)
    link = create_link(client, user, grid["slug"])
    with nothing_changes_on_primary(services, user.username, other_user.username):
        result = client.simulate_patch(
            f"/api/links/{link['slug']}/", json={"grid": theirs["slug"]}, headers=user.headers
        )
    assert result.status_code == 403
    assert result.json["error"]["type"] == "permission_denied"
    assert client.simulate_get(f"/api/links/{link['slug']}/", headers=user.headers).json == link


def test_another_users_link_cannot_be_changed_or_deleted(
    client, services, user, other_user
) -> None:
    grid = create_grid(client, user)
    link = create_link(client, user, grid["slug"])
    path = f"/api/links/{link['slug']}/"
    with nothing_changes_on_primary(services, user.username, other_user.username):
        patch = client.simulate_patch(path, json={"title": "pwned"}, headers=other_user.headers)
        delete = client.simulate_delete(path, headers=other_user.headers)
    assert (patch.status_code, delete.status_code) == (403, 403)
    assert {patch.json["error"]["type"], delete.json["error"]["type"]} == {"permission_denied"}
    assert client.simulate_get(path, headers=user.headers).json == link


def test_deleted_link_is_gone_from_every_read(client, services, user) -> None:
    grid = create_grid(client, user)
    kept = create_link(client, user, grid["slug"])
    gone = create_link(client, user, grid["slug"])
    assert client.simulate_delete(f"/api/links/{gone['slug']}/", headers=user.headers).status == (
        falcon.HTTP_204
    )
    assert (
        client.simulate_get(f"/api/links/{gone['slug']}/", headers=user.headers).status_code == 404
    )
    listed = client.simulate_get(
        "/api/links/", params={"grid": grid["slug"]}, headers=user.headers
    ).json["data"]
    assert [link["slug"] for link in listed] == [kept["slug"]]
    mine = client.simulate_get("/api/links/", headers=user.headers).json["data"]
    assert gone["slug"] not in [link["slug"] for link in mine]
    assert [link["slug"] for link in profile(client, user.username)["grids"][0]["links"]] == [
        kept["slug"]
    ]
    path = f"/api/links/{gone['slug']}/"
    with nothing_changes_on_primary(services, user.username):
        again = client.simulate_patch(path, json={"title": "x"}, headers=user.headers)
    assert again.status_code == 404


@pytest.mark.parametrize("slug", [MISSING_LINK, "li_xyz", "gr_" + "a" * 32, "%27%20OR%201=1"])
def test_unknown_and_malformed_link_slugs_are_not_found(client, services, user, slug) -> None:
    path = f"/api/links/{slug}/"
    with nothing_changes_on_primary(services, user.username):
        for result in (
            client.simulate_get(path, headers=user.headers),
            client.simulate_patch(path, json={"title": "x"}, headers=user.headers),
            client.simulate_delete(path, headers=user.headers),
        ):
            assert result.status_code == 404
            assert result.json["error"]["type"] == "not_found"


# --- lists -------------------------------------------------------------------------


def test_pagination_walk_over_250_links_returns_each_exactly_once(client, services, user):
    many = replace(services, settings=services.settings.replace(max_links_per_grid=300))
    roomy = falcon.testing.TestClient(create_app(many.settings, many))
    grid = create_grid(roomy, user)
    created = [
        create_link(roomy, user, grid["slug"], position=index % 7)["slug"] for index in range(250)
    ]
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"grid": grid["slug"], "limit": 100}
    while True:
        page = client.simulate_get("/api/links/", params=params, headers=user.headers).json
        seen.extend(page["data"])
        if not page["has_more"]:
            break
        params["starting_after"] = page["data"][-1]["slug"]
    assert sorted(link["slug"] for link in seen) == sorted(created)
    assert len(seen) == 250
    order = [(link["position"], created.index(link["slug"])) for link in seen]
    assert order == sorted(order)  # by position, then creation order


def test_has_more_is_exact_at_the_page_boundary(client, user) -> None:
    grid = create_grid(client, user)
    for _ in range(4):
        create_link(client, user, grid["slug"])
    first = client.simulate_get(
        "/api/links/", params={"grid": grid["slug"], "limit": 2}, headers=user.headers
    ).json
    assert first["has_more"] is True
    second = client.simulate_get(
        "/api/links/",
        params={"grid": grid["slug"], "limit": 2, "starting_after": first["data"][-1]["slug"]},
        headers=user.headers,
    ).json
    assert (len(second["data"]), second["has_more"]) == (2, False)


def test_my_grids_in_creation_order_with_paging(client, user, other_user) -> None:
    made = [create_grid(client, user, f"g{i}")["slug"] for i in range(3)]
    create_grid(client, other_user)
    first = client.simulate_get("/api/grids/", params={"limit": 2}, headers=user.headers).json
    assert [g["slug"] for g in first["data"]] == made[:2]
    assert first["has_more"] is True
    rest = client.simulate_get(
        "/api/grids/", params={"starting_after": made[1]}, headers=user.headers
    ).json
    assert [g["slug"] for g in rest["data"]] == made[2:]
    assert rest["has_more"] is False


def test_my_links_span_my_grids_only(client, user, other_user) -> None:
    mine = [create_link(client, user, create_grid(client, user)["slug"]) for _ in range(2)]
    create_link(client, other_user, create_grid(client, other_user)["slug"])
    listed = client.simulate_get("/api/links/", headers=user.headers).json
    assert sorted(link["slug"] for link in listed["data"]) == sorted(made["slug"] for made in mine)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"limit": "-1"},
        {"starting_after": MISSING_LINK},
        {"starting_after": "garbage"},
        {"starting_after": "li_\x00"},
    ],
)
def test_bad_list_parameters_are_400(client, user, params) -> None:
    grid = create_grid(client, user)
    result = client.simulate_get(
        "/api/links/", params={"grid": grid["slug"], **params}, headers=user.headers
    )
    assert result.status_code == 400
    assert result.json["error"]["type"] == "invalid_request"


def test_list_of_an_unknown_grid_is_404(client) -> None:
    for grid in (MISSING_GRID, "bad"):
        result = client.simulate_get("/api/links/", params={"grid": grid})
        assert result.status_code == 404
        assert result.json["error"]["type"] == "not_found"


def test_my_lists_need_a_token(client) -> None:
    for path in ("/api/links/", "/api/grids/"):
        result = client.simulate_get(path)
        assert result.status_code == 401
        assert result.json["error"]["type"] == "unauthenticated"


# --- limits under concurrency ----------------------------------------------------------


def limited_client(services: Services, **limits: int) -> falcon.testing.TestClient:
    limited = replace(services, settings=services.settings.replace(**limits))
    return falcon.testing.TestClient(create_app(limited.settings, limited))


def race(requests: list[Any]) -> list[int]:
    """Fire the requests from threads at once; return their statuses."""
    statuses: list[int] = []
    barrier = threading.Barrier(len(requests))

    def fire(request: Any) -> None:
        barrier.wait()
        statuses.append(request().status_code)

    threads = [threading.Thread(target=fire, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_link_limit_holds_under_racing_posts(services, user) -> None:
    limited = limited_client(services, max_links_per_grid=5)
    grid = create_grid(limited, user)
    for _ in range(3):
        create_link(limited, user, grid["slug"])
    body = {"grid": grid["slug"], "url": "https://race.example/"}
    statuses = race(
        [
            lambda: limited.simulate_post("/api/links/", json=body, headers=user.headers)
            for _ in range(6)
        ]
    )
    assert sorted(statuses) == [201, 201, 409, 409, 409, 409]
    listed = limited.simulate_get(
        "/api/links/", params={"grid": grid["slug"]}, headers=user.headers
    ).json["data"]
    assert len(listed) == 5
    refused = limited.simulate_post("/api/links/", json=body, headers=user.headers)
    assert refused.json["error"]["type"] == "limit_reached"


def test_grid_limit_holds_under_racing_posts(services) -> None:
    limited = limited_client(services, max_grids_per_user=2)
    owner = sign_up(limited)
    statuses = race(
        [
            lambda: limited.simulate_post("/api/grids/", json={}, headers=owner.headers)
            for _ in range(5)
        ]
    )
    assert sorted(statuses) == [201, 201, 409, 409, 409]
    assert len(limited.simulate_get("/api/grids/", headers=owner.headers).json["data"]) == 2


def test_moving_a_link_into_a_full_grid_is_refused(services, user) -> None:
    limited = limited_client(services, max_links_per_grid=1)
    full, other = create_grid(limited, user), create_grid(limited, user)
    create_link(limited, user, full["slug"])
    link = create_link(limited, user, other["slug"])
    result = limited.simulate_patch(
        f"/api/links/{link['slug']}/", json={"grid": full["slug"]}, headers=user.headers
    )
    assert result.status_code == 409
    assert result.json["error"]["type"] == "limit_reached"


# --- idempotency ---------------------------------------------------------------------


def test_idempotent_replay_returns_the_first_answer_and_creates_nothing(client, user) -> None:
    headers = {**user.headers, "Idempotency-Key": "grid-create-1"}
    first = client.simulate_post("/api/grids/", json={"title": "Once"}, headers=headers)
    again = client.simulate_post("/api/grids/", json={"title": "Once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    listed = client.simulate_get("/api/grids/", headers=user.headers).json["data"]
    assert len(listed) == 1


def test_idempotency_key_with_a_different_body_is_422(client, user) -> None:
    headers = {**user.headers, "Idempotency-Key": "k-mismatch"}
    client.simulate_post("/api/grids/", json={"title": "A"}, headers=headers)
    result = client.simulate_post("/api/grids/", json={"title": "B"}, headers=headers)
    assert result.status_code == 422
    assert result.json["error"]["type"] == "idempotency_mismatch"


def test_idempotency_keys_belong_to_one_user(client, user, other_user) -> None:
    key = {"Idempotency-Key": "shared-key"}
    mine = client.simulate_post("/api/grids/", json={}, headers={**user.headers, **key})
    theirs = client.simulate_post("/api/grids/", json={}, headers={**other_user.headers, **key})
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json["slug"] != theirs.json["slug"]
    assert "Idempotent-Replayed" not in theirs.headers


def test_idempotent_request_still_in_flight_is_409(client, services, user) -> None:
    key = "in-flight-key"
    with services.primary.connect() as connection, connection.begin():
        user_id = connection.execute(
            text("SELECT id FROM users WHERE username = :u"), {"u": user.username}
        ).scalar_one()
        # Hold the key the way a first request does while it runs.
        connection.execute(
            text(
                "SELECT pg_advisory_xact_lock("
                "hashtextextended(CAST(:user_id AS text) || ':' || :key, 0))"
            ),
            {"user_id": user_id, "key": key},
        )
        result = client.simulate_post(
            "/api/grids/", json={}, headers={**user.headers, "Idempotency-Key": key}
        )
    assert result.status_code == 409
    assert result.json["error"]["type"] == "conflict"
    after = client.simulate_post(
        "/api/grids/", json={}, headers={**user.headers, "Idempotency-Key": key}
    )
    assert after.status_code == 201


def test_a_refused_request_does_not_use_up_its_key(services, user) -> None:
    limited = limited_client(services, max_links_per_grid=1)
    grid = create_grid(limited, user)
    first = create_link(limited, user, grid["slug"])
    headers = {**user.headers, "Idempotency-Key": "retry-after-limit"}
    body = {"grid": grid["slug"], "url": "https://x.example/"}
    assert limited.simulate_post("/api/links/", json=body, headers=headers).status_code == 409
    limited.simulate_delete(f"/api/links/{first['slug']}/", headers=user.headers)
    assert limited.simulate_post("/api/links/", json=body, headers=headers).status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there"])
def test_malformed_idempotency_key_is_400(client, user, key) -> None:
    result = client.simulate_post(
        "/api/grids/", json={}, headers={**user.headers, "Idempotency-Key": key}
    )
    assert result.status_code == 400


# --- the profile read model ---------------------------------------------------------------


def test_profile_document_equals_the_grid_and_link_reads(client, user) -> None:
    grids = [create_grid(client, user, f"grid {i}") for i in range(2)]
    for grid in grids:
        for position in (3, 1, 2):
            create_link(client, user, grid["slug"], position=position, title=f"p{position}")
    document = profile(client, user.username)
    assert list(document) == ["username", "display_name", "created_on", "grids"]
    assert document["username"] == user.username
    assert TIMESTAMP.match(document["created_on"])
    assert document["grids"] == [
        client.simulate_get(f"/api/grids/{grid['slug']}/", headers=user.headers).json
        for grid in grids
    ]
    for grid in document["grids"]:
        assert [link["position"] for link in grid["links"]] == [1, 2, 3]
        for link in grid["links"]:
            assert (
                client.simulate_get(f"/api/links/{link['slug']}/", headers=user.headers).json
                == link
            )


def test_profile_never_shows_private_fields(client, user) -> None:
    create_link(client, user, create_grid(client, user)["slug"])
    raw = client.simulate_get(f"/api/users/{user.username}/").text
    assert user.email not in raw
    assert user.token not in raw
    assert '"id"' not in raw
    assert "argon2" not in raw


def test_profile_username_is_matched_ignoring_case(client, user) -> None:
    assert profile(client, user.username.upper())["username"] == user.username


@pytest.mark.parametrize("username", ["nobody_here_at_all", "a%00b", "x" * 31, "%27%20OR%201=1"])
def test_unknown_or_impossible_profile_is_404(client, username) -> None:
    result = client.simulate_get(f"/api/users/{username}/")
    assert result.status_code == 404
    assert result.json["error"]["type"] == "not_found"


def test_profile_version_increases_on_every_change(client, user) -> None:
    versions = [version_of(client, user.username)]
    grid = create_grid(client, user)
    versions.append(version_of(client, user.username))
    link = create_link(client, user, grid["slug"])
    versions.append(version_of(client, user.username))
    client.simulate_patch(f"/api/links/{link['slug']}/", json={"title": "t"}, headers=user.headers)
    versions.append(version_of(client, user.username))
    client.simulate_patch(f"/api/grids/{grid['slug']}/", json={"title": "t"}, headers=user.headers)
    versions.append(version_of(client, user.username))
    client.simulate_delete(f"/api/links/{link['slug']}/", headers=user.headers)
    versions.append(version_of(client, user.username))
    client.simulate_delete(f"/api/grids/{grid['slug']}/", headers=user.headers)
    versions.append(version_of(client, user.username))
    assert versions == sorted(set(versions))


def test_if_none_match_with_the_current_etag_is_304(client, user) -> None:
    first = client.simulate_get(f"/api/users/{user.username}/")
    etag = first.headers["ETag"]
    assert re.fullmatch(r'"\d+"', etag)
    unchanged = client.simulate_get(f"/api/users/{user.username}/", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    create_grid(client, user)
    changed = client.simulate_get(f"/api/users/{user.username}/", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag


def test_refused_command_leaves_the_document_untouched(client, user, other_user) -> None:
    grid = create_grid(client, user)
    before = client.simulate_get(f"/api/users/{user.username}/")
    client.simulate_patch(
        f"/api/grids/{grid['slug']}/", json={"title": "x"}, headers=other_user.headers
    )
    client.simulate_post("/api/links/", json={"grid": grid["slug"]}, headers=user.headers)
    after = client.simulate_get(f"/api/users/{user.username}/")
    assert (after.headers["ETag"], after.content) == (before.headers["ETag"], before.content)


# --- query counts (the seed asserted assertNumQueries(3)) ---------------------------------


def test_reads_cost_at_most_their_query_budget(client, services, user) -> None:
    grid = create_grid(client, user)
    link = create_link(client, user, grid["slug"])
    create_link(client, user, grid["slug"])
    engines = (services.primary, *services.replicas)
    client.simulate_get("/api/grids/", headers=user.headers)  # the token lookup is now cached
    budget = [
        (f"/api/users/{user.username}/", {}, 1),
        (f"/api/links/{link['slug']}/", {}, 1),
        (f"/api/grids/{grid['slug']}/", {}, 2),
        ("/api/links/", {"grid": grid["slug"]}, 2),
        ("/api/links/", {"starting_after": link["slug"]}, 2),
        ("/api/grids/", {}, 2),
    ]
    for path, params, most in budget:
        with count_queries(*engines) as counted:
            result = client.simulate_get(path, params=params, headers=user.headers)
        assert result.status_code == 200, (path, result.text)
        assert counted.count <= most, (path, counted.statements)
    evict(services.cache, user.username)
    with count_queries(*engines) as counted:
        miss = client.simulate_get(f"/api/users/{user.username}/")
    assert (miss.status_code, counted.count) == (200, 1)
