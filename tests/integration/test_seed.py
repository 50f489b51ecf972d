"""``gridlink seed`` against the real primary, replica and Redis of the session cluster.

Small sizes (a few dozen users): what matters here is that seeded rows are
exactly what the API's own writes would have made, not how fast they go in
(``make bench`` measures that).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import text

from gridlink.commands.profiles import refresh_profile
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.ops.seed import (
    HIGHEST_TEST_USER_NUMBER,
    SeedError,
    SeedPlan,
    SeedResult,
    secondary_indexes_and_keys,
    seed,
    warm_profiles,
)
from gridlink.services import Services
from gridlink.settings import Settings
from tests.support.servers import server_environment
from tests.support.waiting import wait_for_replica

SOURCE = "X-Gridlink-Read-Source"
SMALL = SeedPlan(users=30, grids=3, links=4)


def seed_small(services: Services, **options: Any) -> SeedResult:
    return seed(services, SMALL, progress=None, **options)


@pytest.fixture(scope="module")
def seeded(services: Services) -> SeedResult:
    result = seed_small(services, password="seeded password")
    # Anonymous reads of the seeded profiles may come from the replica.
    wait_for_replica(services)
    return result


def scalar(services: Services, statement: str, **params: Any) -> Any:
    with services.primary.connect() as connection:
        return connection.execute(text(statement), params).scalar_one()


def user_id(services: Services, username: str) -> int:
    found: int = scalar(services, "SELECT id FROM users WHERE username = :name", name=username)
    return found


def seeded_ids(result: SeedResult) -> list[str]:
    return [result.username(number) for number in range(result.first, result.last + 1)]


def test_seed_makes_every_user_grid_link_and_profile(services: Services, seeded: SeedResult):
    names = seeded_ids(seeded)
    counts = {
        table: scalar(
            services,
            f"SELECT count(*) FROM {table} t JOIN users u ON u.id = t.{column}"
            " WHERE u.username = ANY(:names)",
            names=names,
        )
        for table, column in (
            ("users", "id"),
            ("grids", "user_id"),
            ("links", "user_id"),
            ("profile_documents", "user_id"),
        )
    }
    assert counts == {"users": 30, "grids": 90, "links": 360, "profile_documents": 30}
    assert (seeded.grids, seeded.links) == (90, 360)


def test_each_grid_holds_its_links_at_positions_in_order(services: Services, seeded: SeedResult):
    positions = scalar(
        services,
        "SELECT array_agg(DISTINCT p ORDER BY p) FROM ("
        " SELECT array_agg(l.position ORDER BY l.position) AS p FROM links l"
        " JOIN users u ON u.id = l.user_id WHERE u.username = ANY(:names) GROUP BY l.grid_id) s",
        names=seeded_ids(seeded),
    )
    assert positions == [[0, 1, 2, 3]]
    # A link's owner is its grid's owner.
    mismatched = scalar(
        services,
        "SELECT count(*) FROM links l JOIN grids g ON g.id = l.grid_id"
        " WHERE l.user_id <> g.user_id",
    )
    assert mismatched == 0


def test_seeded_profile_is_byte_for_byte_what_a_write_rebuilds(
    services: Services, seeded: SeedResult
):
    username = seeded.username(seeded.first + 7)
    owner = user_id(services, username)
    stored = scalar(
        services, "SELECT document FROM profile_documents WHERE user_id = :id", id=owner
    )
    # Never committed: the seeded row stays as it is.
    with UnitOfWork.from_services(services) as uow:
        rebuilt = refresh_profile(uow, owner)
    assert rebuilt.document == bytes(stored)
    assert b'"links":[{' in rebuilt.document


def test_the_profile_endpoint_serves_the_seeded_document(
    client: falcon.testing.TestClient, services: Services, seeded: SeedResult
):
    username = seeded.username(seeded.last)
    stored = scalar(
        services,
        "SELECT document FROM profile_documents WHERE username = :name",
        name=username,
    )
    answer = client.simulate_get(f"/api/users/{username}/")
    assert answer.status_code == 200
    assert answer.content == bytes(stored)
    assert [len(grid["links"]) for grid in answer.json["grids"]] == [4, 4, 4]


def test_every_seeded_user_logs_in_with_the_one_password(
    client: falcon.testing.TestClient, seeded: SeedResult
):
    for number in (seeded.first, seeded.last):
        answer = client.simulate_post(
            "/api/auth/login/",
            json={"username": seeded.username(number), "password": "seeded password"},
        )
        assert answer.status_code == 200, answer.text


def test_a_second_seed_numbers_on_after_the_highest_username_or_email(
    client: falcon.testing.TestClient, services: Services, seeded: SeedResult
):
    later = seed_small(services)
    assert later.first > seeded.last
    # Someone signed up with a name (any case) or an email further on.
    taken_name = later.last + 5
    taken_email = later.last + 9
    for username, email in (
        (f"TEST_User_{taken_name}", f"someone{taken_name}@example.com"),
        (f"someone_{taken_email}", f"Test_User_{taken_email}@Example.com"),
    ):
        signed_up = client.simulate_post(
            "/api/auth/signup/",
            json={"username": username, "email": email, "password": "a seed test password"},
        )
        assert signed_up.status_code == 201, signed_up.text
    third = seed_small(services)
    assert third.first == taken_email + 1
    assert third.password != later.password  # random unless given


def test_warm_puts_every_new_profile_in_the_cache(
    client: falcon.testing.TestClient, services: Services
):
    cold = seed_small(services)
    assert client.simulate_get(f"/api/users/{cold.username(cold.first)}/").headers[SOURCE] != (
        "cache"
    )
    warm = seed_small(services, warm=True)
    sources = {
        client.simulate_get(f"/api/users/{username}/").headers[SOURCE]
        for username in seeded_ids(warm)
    }
    assert sources == {"cache"}


def test_warming_never_replaces_a_newer_cached_version(
    client: falcon.testing.TestClient, services: Services, seeded: SeedResult
):
    username = seeded.username(seeded.first + 3)
    owner = user_id(services, username)
    version = scalar(
        services, "SELECT version FROM profile_documents WHERE user_id = :id", id=owner
    )
    # As if a write had just stored a newer version than the one in the database.
    services.cache.store_profile(username, version + 1, b"the newer one")
    assert warm_profiles(services, [owner]) == 0
    assert client.simulate_get(f"/api/users/{username}/").content == b"the newer one"


@pytest.mark.parametrize("rebuild_indexes", [True, False])
def test_indexes_and_keys_come_back_exactly_as_the_migrations_made_them(
    services: Services, rebuild_indexes: bool
):
    def secondary() -> list[Any]:
        with services.primary.connect() as connection:
            driver: Any = connection.connection.driver_connection
            with driver.cursor() as cursor:
                return sorted(secondary_indexes_and_keys(cursor, ("grids", "links")))

    before = secondary()
    assert len(before) == 10  # 5 indexes (2 partial: maintenance), 2 unique keys, 3 foreign keys
    result = seed_small(services, rebuild_indexes=rebuild_indexes)
    assert secondary() == before
    assert result.links == 360


def test_a_seed_that_cannot_name_its_users_writes_nothing(
    client: falcon.testing.TestClient, services: Services
):
    users_before = scalar(services, "SELECT count(*) FROM users")
    # The next number would make a username longer than 30 characters.
    longest = "test_user_" + "9" * 20
    signed_up = client.simulate_post(
        "/api/auth/signup/",
        json={
            "username": longest,
            "email": "longest@example.com",
            "password": "a seed test password",
        },
    )
    assert signed_up.status_code == 201, signed_up.text
    try:
        with pytest.raises(SeedError, match="longer than a username"):
            seed_small(services)
        assert scalar(services, "SELECT count(*) FROM users") == users_before + 1
    finally:
        # Later seeds in this session must number on from a reachable number.
        with services.primary.begin() as connection:
            connection.execute(text("DELETE FROM users WHERE username = :name"), {"name": longest})


def run_cli(
    settings: Settings, *arguments: str, input: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridlink.cli", "seed", *arguments],
        input=input,
        env=server_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_password_read_from_standard_input_is_the_seeded_users_and_never_printed(
    client, settings: Settings, services: Services
):
    password = "-a seed password from stdin"  # a leading dash: read, never parsed as an option
    done = run_cli(
        settings,
        "--users",
        "1",
        "--grids",
        "1",
        "--links",
        "1",
        "--password-file=-",
        input=password + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr
    username = scalar(services, "SELECT username FROM users ORDER BY id DESC LIMIT 1")
    answer = client.simulate_post(
        "/api/auth/login/", json={"username": username, "password": password}
    )
    assert answer.status_code == 200


def test_an_empty_password_file_is_refused_with_one_line_and_status_2(settings, tmp_path):
    empty = tmp_path / "password"
    empty.write_text("\n")
    refused = run_cli(settings, "--users", "1", f"--password-file={empty}")
    assert (refused.returncode, refused.stderr.count("\n")) == (2, 1)
    assert "has no password on its first line" in refused.stderr


def test_the_command_prints_a_summary_and_draws_progress_on_stderr(settings: Settings):
    done = run_cli(settings, "--users", "5", "--grids", "2", "--links", "3", "--warm")
    assert done.returncode == 0, done.stderr
    assert "5 users" in done.stdout
    assert "10 grids and 30 links" in done.stdout
    assert "password of every seeded user: " in done.stdout
    assert "%|" not in done.stdout
    assert "100%|" in done.stderr
    assert "warm cache" in done.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--users", "0"), "--users must be at least 1 (got 0)"),
        (("--grids", "-3"), "--grids must be at least 1 (got -3)"),
        (("--links", "0"), "--links must be at least 1 (got 0)"),
        (("--grids", "101"), "--grids must be at most 100"),
        (("--links", "101"), "--links must be at most 100"),
        (("--users", "many"), "--users must be a whole number (got 'many')"),
    ],
)
def test_bad_counts_are_refused_with_one_line_and_status_2(
    settings: Settings, services: Services, arguments: tuple[str, ...], message: str
):
    users_before = scalar(services, "SELECT count(*) FROM users")
    refused = run_cli(settings, *arguments)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"gridlink: {message}")
    assert refused.stdout == ""
    assert scalar(services, "SELECT count(*) FROM users") == users_before


def test_a_sign_up_racing_the_seed_for_a_name_fails_the_seed_cleanly(services: Services):
    users_before = scalar(services, "SELECT count(*) FROM users")
    # The seed cannot see this uncommitted sign-up when it numbers its users,
    # so it picks the same name and waits on the unique index for the outcome.
    racer = services.primary.connect()
    racer.begin()
    next_number = scalar(services, HIGHEST_TEST_USER_NUMBER) + 1
    racer.execute(
        text("INSERT INTO users (username, email, password_hash) VALUES (:name, :email, 'x')"),
        {"name": f"test_user_{next_number}", "email": "racer@example.com"},
    )
    outcome: list[BaseException | SeedResult] = []

    def run_seed() -> None:
        try:
            outcome.append(seed_small(services, rebuild_indexes=False))
        except BaseException as problem:  # handed to the test thread
            outcome.append(problem)

    seeding = threading.Thread(target=run_seed)
    seeding.start()
    try:
        deadline = time.monotonic() + 60
        while scalar(services, "SELECT count(*) FROM pg_locks WHERE NOT granted") == 0:
            assert time.monotonic() < deadline, "the seed never waited for the sign-up"
            time.sleep(0.05)
        racer.commit()
    finally:
        racer.close()
        seeding.join()
    assert isinstance(outcome[0], SeedError)
    assert "signed up as one of the seeded names" in str(outcome[0])
    assert scalar(services, "SELECT count(*) FROM users") == users_before + 1
