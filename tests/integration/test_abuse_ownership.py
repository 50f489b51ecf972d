"""Nobody changes what another user owns: every mutating endpoint, with another's slug.

Each row of ``ATTACKS`` is one way an attacker might reach the victim's grids
or links through API.md's endpoints. Each must answer 403 ``permission_denied``
and leave every row of the victim (and of the attacker) as it was on the
primary, and the victim's profile unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import falcon.testing
import pytest

from gridlink.slugs import GRID_PREFIX, LINK_PREFIX, new_slug
from tests.support.abuse import assert_clean_result, primary_state
from tests.support.api import ApiUser, create_grid, create_link, sign_up


@dataclass(frozen=True)
class Scene:
    """A victim with a grid and a link, and an attacker with a grid and a link of their own."""

    victim: ApiUser
    victim_grid: str
    victim_link: str
    attacker: ApiUser
    attacker_grid: str
    attacker_link: str


@pytest.fixture
def scene(client: falcon.testing.TestClient) -> Scene:
    victim, attacker = sign_up(client, "victim"), sign_up(client, "attacker")
    victim_grid = create_grid(client, victim)["slug"]
    attacker_grid = create_grid(client, attacker)["slug"]
    return Scene(
        victim=victim,
        victim_grid=victim_grid,
        victim_link=create_link(client, victim, victim_grid)["slug"],
        attacker=attacker,
        attacker_grid=attacker_grid,
        attacker_link=create_link(client, attacker, attacker_grid)["slug"],
    )


# (method, path, body) for one attack, made from the scene.
Attack = Callable[[Scene], tuple[str, str, dict[str, Any] | None]]

ATTACKS: dict[str, Attack] = {
    "rename another's grid": lambda s: (
        "PATCH",
        f"/api/grids/{s.victim_grid}/",
        {"title": "pwned"},
    ),
    "delete another's grid": lambda s: ("DELETE", f"/api/grids/{s.victim_grid}/", None),
    "add a link to another's grid": lambda s: (
        "POST",
        "/api/links/",
        {"grid": s.victim_grid, "url": "https://evil.example/"},
    ),
    "change another's link": lambda s: (
        "PATCH",
        f"/api/links/{s.victim_link}/",
        {"url": "https://evil.example/", "title": "pwned"},
    ),
    "move another's link into one's own grid": lambda s: (
        "PATCH",
        f"/api/links/{s.victim_link}/",
        {"grid": s.attacker_grid},
    ),
    "move one's own link into another's grid": lambda s: (
        "PATCH",
        f"/api/links/{s.attacker_link}/",
        {"grid": s.victim_grid},
    ),
    "move another's link within its grid": lambda s: (
        "PATCH",
        f"/api/links/{s.victim_link}/",
        {"position": 9, "width": 4},
    ),
    "delete another's link": lambda s: ("DELETE", f"/api/links/{s.victim_link}/", None),
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_another_users_slug_is_403_and_nothing_changes(
    client: falcon.testing.TestClient, services, scene: Scene, attack: Attack
) -> None:
    before = {
        who.username: primary_state(services, who.username)
        for who in (scene.victim, scene.attacker)
    }
    profile_before = client.simulate_get(f"/api/users/{scene.victim.username}/")
    method, path, body = attack(scene)
    result = client.simulate_request(method, path, json=body, headers=scene.attacker.headers)
    assert assert_clean_result(result, 403) == "permission_denied"
    after = {
        who.username: primary_state(services, who.username)
        for who in (scene.victim, scene.attacker)
    }
    assert after == before
    profile_after = client.simulate_get(f"/api/users/{scene.victim.username}/")
    assert (profile_after.headers["ETag"], profile_after.json) == (
        profile_before.headers["ETag"],
        profile_before.json,
    )


# What each method answers when it does what was asked.
DONE = {"POST": 201, "PATCH": 200, "DELETE": 204}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_the_same_request_on_ones_own_grids_and_links_is_allowed(
    client: falcon.testing.TestClient, services, attack: Attack
) -> None:
    """The table holds real attacks: each is refused only because of who owns the target."""
    owner = sign_up(client, "owner")
    grids = [create_grid(client, owner)["slug"] for _ in range(2)]
    links = [create_link(client, owner, grid)["slug"] for grid in grids]
    own = Scene(owner, grids[0], links[0], owner, grids[1], links[1])
    before = primary_state(services, owner.username)
    method, path, body = attack(own)
    result = client.simulate_request(method, path, json=body, headers=owner.headers)
    assert result.status_code == DONE[method], result.text
    after = primary_state(services, owner.username)
    changed = {table for table in before if before[table] != after[table]}
    # The grid or link itself changed, and with it the owner's profile.
    assert changed & {"grids", "links"}, changed
    assert "profile" in changed, changed


def test_an_idempotency_key_replays_only_to_the_user_who_sent_it(
    client: falcon.testing.TestClient, services, scene: Scene
) -> None:
    key = {"Idempotency-Key": "shared-key-1"}
    first = client.simulate_post(
        "/api/grids/", json={"title": "mine"}, headers={**scene.victim.headers, **key}
    )
    assert first.status_code == 201
    before = primary_state(services, scene.victim.username)
    second = client.simulate_post(
        "/api/grids/", json={"title": "mine"}, headers={**scene.attacker.headers, **key}
    )
    # A grid of the attacker's own, never the victim's answer replayed.
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert second.json["user"] == scene.attacker.username
    assert second.json["slug"] != first.json["slug"]
    assert primary_state(services, scene.victim.username) == before


def test_a_token_only_ever_acts_on_its_own_account(
    client: falcon.testing.TestClient, services, scene: Scene
) -> None:
    before = primary_state(services, scene.victim.username)
    for method, path, body in [
        (
            "PATCH",
            "/api/users/me/",
            {
                "display_name": "pwned",
                "email": "evil@example.com",
                "current_password": scene.attacker.password,
            },
        ),
        ("POST", "/api/auth/logout-all/", None),
    ]:
        result = client.simulate_request(method, path, json=body, headers=scene.attacker.headers)
        assert result.status_code in (200, 204), result.text
    assert primary_state(services, scene.victim.username) == before
    # They acted, on the attacker's own account: renamed, and every token revoked.
    attacker = primary_state(services, scene.attacker.username)
    [(_username, _email, _hash, display_name, _admin, _modified)] = attacker["user"]
    assert display_name == "pwned"
    assert attacker["tokens"]
    assert all(revoked_on is not None for _hash, revoked_on in attacker["tokens"])


# --- slugs ------------------------------------------------------------------------------------

SLUG_SAMPLE = 256


@pytest.mark.parametrize("prefix", [GRID_PREFIX, LINK_PREFIX])
def test_slugs_carry_128_random_bits_with_no_fixed_bit(prefix: str) -> None:
    slugs = [new_slug(prefix) for _ in range(SLUG_SAMPLE)]
    assert all(re.fullmatch(re.escape(prefix) + "[0-9a-f]{32}", slug) for slug in slugs)
    assert len(set(slugs)) == SLUG_SAMPLE
    values = [int(slug[len(prefix) :], 16) for slug in slugs]
    # Every one of the 128 bits is 1 in some slug and 0 in another: no bit is fixed,
    # as 6 are in a UUID4. (Chance that a truly random bit looks fixed: 2**-255.)
    for bit in range(128):
        ones = sum(value >> bit & 1 for value in values)
        assert 0 < ones < SLUG_SAMPLE, f"bit {bit} never changes"


def test_slugs_the_api_gives_out_have_the_128_bit_form(
    client: falcon.testing.TestClient, scene: Scene
) -> None:
    for slug, prefix in [(scene.victim_grid, GRID_PREFIX), (scene.victim_link, LINK_PREFIX)]:
        assert re.fullmatch(re.escape(prefix) + "[0-9a-f]{32}", slug)
