"""A profile document has a size bound: a write past it is a 409 and changes nothing."""

from __future__ import annotations

import falcon.testing

from gridlink.services import Services
from tests.support.abuse import app_with, assert_clean_result, primary_state
from tests.support.api import ApiUser, sign_up

MAX_PROFILE_BYTES = 8 * 1024
MAX_LINKS = 20  # of about 1.7 KB each: the bound is reached long before


def add_link(client: falcon.testing.TestClient, user: ApiUser, grid: str) -> falcon.testing.Result:
    return client.simulate_post(
        "/api/links/",
        json={"grid": grid, "title": "t" * 128, "url": "https://example.com/" + "p" * 1500},
        headers=user.headers,
    )


def profile_size(client: falcon.testing.TestClient, user: ApiUser) -> int:
    return len(client.simulate_get(f"/api/users/{user.username}/", headers=user.headers).content)


def test_a_write_that_would_pass_the_bound_is_409_and_nothing_is_written(
    services: Services,
) -> None:
    client = app_with(services, max_profile_bytes=MAX_PROFILE_BYTES)
    user = sign_up(client, "big")
    slug = client.simulate_post("/api/grids/", json={}, headers=user.headers).json["slug"]
    sizes = [profile_size(client, user)]
    for _ in range(MAX_LINKS):
        if add_link(client, user, slug).status_code != 201:
            break
        sizes.append(profile_size(client, user))
    else:
        raise AssertionError(f"{MAX_LINKS} links never reached {MAX_PROFILE_BYTES} bytes")
    # Every write up to the bound went through; the next would have passed it.
    assert max(sizes) <= MAX_PROFILE_BYTES
    assert sizes[-1] + (sizes[-1] - sizes[-2]) > MAX_PROFILE_BYTES

    before = primary_state(services, user.username)
    cached_before = services.cache.get_profile(user.username)
    refused = add_link(client, user, slug)
    assert assert_clean_result(refused, 409) == "limit_reached"
    # The rebuild ran and was rolled back: no link, no new document or version.
    assert primary_state(services, user.username) == before
    assert services.cache.get_profile(user.username) == cached_before
    # A write that makes the profile smaller still goes through.
    renamed = client.simulate_patch(f"/api/grids/{slug}/", json={"title": ""}, headers=user.headers)
    assert renamed.status_code == 200
