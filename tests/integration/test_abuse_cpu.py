"""Abuse that costs CPU: sign-up floods, concurrent guesses, hashes under locks.

A password hash costs about 0.18 s of CPU and 64 MiB. Sign-up is throttled
(per client address and globally) before any hashing; a process runs only a
few hashes at once and answers 503 at once beyond them; login attempts are
reserved atomically before the password is checked, per account and client
and for the account's clients without a device together; no row
lock is held while a hash runs; and with Redis down the limits hold in each
process instead of lifting.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

import gridlink.accounts.password_rules
import gridlink.accounts.passwords
from gridlink.accounts.password_rules import TOO_GUESSABLE
from gridlink.accounts.passwords import HashSlots
from gridlink.accounts.ratelimit import Limiter
from gridlink.app import create_app
from gridlink.services import Services
from tests.support.abuse import an_address, assert_clean_result
from tests.support.accounts import reset_token
from tests.support.api import ApiUser, random_username, sign_up


def app_with(services: Services, **changes: Any) -> falcon.testing.TestClient:
    """A server process of its own (settings, hash slots, limiter) on the same servers."""
    settings = services.settings.replace(**changes)
    tuned = dataclasses.replace(
        services,
        settings=settings,
        passwords=HashSlots(settings.hash_slots),
        limiter=Limiter(services.redis, settings.server_processes),
    )
    return falcon.testing.TestClient(create_app(settings, tuned))


def sign_up_body() -> dict[str, str]:
    username = random_username("flood")
    return {"username": username, "email": f"{username}@example.com", "password": "a password 1"}


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every password hashed (the real hashing still runs)."""
    hashed: list[str] = []
    real = gridlink.accounts.passwords.hash_password

    def recorded(password: str) -> str:
        hashed.append(password)
        return real(password)

    monkeypatch.setattr(gridlink.accounts.passwords, "hash_password", recorded)
    return hashed


# --- sign-up throttling -----------------------------------------------------------------------


def test_sign_ups_from_one_address_are_limited_before_any_hashing(services, hashes):
    client = app_with(services, signups_per_address=2)
    address = an_address()
    for _ in range(2):
        result = client.simulate_post("/api/auth/signup/", json=sign_up_body(), remote_addr=address)
        assert result.status_code == 201
    hashed_before = len(hashes)
    refused = client.simulate_post("/api/auth/signup/", json=sign_up_body(), remote_addr=address)
    assert assert_clean_result(refused, 429) == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert len(hashes) == hashed_before
    # Another address is not held back by this one.
    other = client.simulate_post("/api/auth/signup/", json=sign_up_body(), remote_addr=an_address())
    assert other.status_code == 201


def test_sign_ups_are_limited_globally_whatever_the_address(services, hashes):
    # The global counter is shared by every test: start from an empty one.
    services.redis.delete("gl:signups:all")
    client = app_with(services, signups_per_minute=3)
    statuses = [
        client.simulate_post(
            "/api/auth/signup/", json=sign_up_body(), remote_addr=an_address()
        ).status_code
        for _ in range(4)
    ]
    services.redis.delete("gl:signups:all")
    assert statuses == [201, 201, 201, 429]
    assert len(hashes) == 3


@pytest.fixture
def estimates(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every password whose strength is estimated (the real estimate still runs)."""
    estimated: list[str] = []
    real = gridlink.accounts.password_rules.is_guessable

    def recorded(password: str, user_inputs: Iterable[str] = ()) -> bool:
        estimated.append(password)
        return real(password, user_inputs)

    monkeypatch.setattr(gridlink.accounts.password_rules, "is_guessable", recorded)
    return estimated


def test_a_throttled_sign_up_costs_no_strength_estimate_and_a_weak_password_no_hash(
    services, hashes, estimates
):
    client = app_with(services, signups_per_address=1)
    address = an_address()
    weak = {**sign_up_body(), "password": "password1234"}
    refused = client.simulate_post("/api/auth/signup/", json=weak, remote_addr=address)
    assert refused.json["error"]["fields"] == {"password": [TOO_GUESSABLE]}
    assert (estimates, hashes) == (["password1234"], [])
    throttled = client.simulate_post("/api/auth/signup/", json=sign_up_body(), remote_addr=address)
    assert assert_clean_result(throttled, 429) == "rate_limited"
    assert estimates == ["password1234"]


def test_a_reset_confirmation_with_an_unknown_token_costs_no_strength_estimate(client, estimates):
    body = {"token": "t" * 43, "new_password": "a reset password 2"}
    refused = client.simulate_post("/api/auth/password/reset/confirm/", json=body)
    assert list(refused.json["error"]["fields"]) == ["token"]
    assert estimates == []


# --- the cap on concurrent hashes -------------------------------------------------------------


HASHING_REQUESTS: dict[str, Callable[[ApiUser], tuple[str, str, dict[str, Any], bool]]] = {
    "sign-up": lambda u: ("POST", "/api/auth/signup/", sign_up_body(), False),
    "login": lambda u: (
        "POST",
        "/api/auth/login/",
        {"username": u.username, "password": "x"},
        False,
    ),
    "password change": lambda u: (
        "POST",
        "/api/auth/password/change/",
        {"current_password": u.password, "new_password": "a new password"},
        True,
    ),
    "account deletion": lambda u: ("DELETE", "/api/users/me/", {"password": u.password}, True),
    "email change": lambda u: (
        "PATCH",
        "/api/users/me/",
        {"email": f"x{u.email}", "current_password": u.password},
        True,
    ),
}


@pytest.mark.parametrize("request_name", sorted(HASHING_REQUESTS))
def test_with_every_hash_slot_taken_a_hashing_request_is_503_at_once(
    services, client, request_name
):
    user = sign_up(client, "busy")
    slots = HashSlots(1)
    busy = dataclasses.replace(services, passwords=slots)
    app = falcon.testing.TestClient(create_app(busy.settings, busy))
    method, path, body, with_token = HASHING_REQUESTS[request_name](user)
    headers = user.headers if with_token else {}
    with slots.taken():
        result = app.simulate_request(
            method, path, json=body, headers=headers, remote_addr=an_address()
        )
    assert assert_clean_result(result, 503) == "unavailable"
    assert result.headers["Retry-After"] == "1"
    # Nothing was done, and nothing counted as a failure: the same request works now.
    again = app.simulate_request(method, path, json=body, headers=headers, remote_addr=an_address())
    assert again.status_code in (200, 201, 204, 401), again.text


def test_with_every_hash_slot_taken_a_reset_confirmation_is_503(services, client, mail_dir):
    user = sign_up(client, "busy")
    token = reset_token(client, mail_dir, user.email)
    slots = HashSlots(1)
    busy = dataclasses.replace(services, passwords=slots)
    app = falcon.testing.TestClient(create_app(busy.settings, busy))
    body = {"token": token, "new_password": "a new password"}
    with slots.taken():
        result = app.simulate_post("/api/auth/password/reset/confirm/", json=body)
    assert assert_clean_result(result, 503) == "unavailable"
    assert app.simulate_post("/api/auth/password/reset/confirm/", json=body).status_code == 204


# --- no lock held while hashing ---------------------------------------------------------------


@contextmanager
def hashing_paused(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Make the next password check wait in the middle, until the event is set."""
    started, release = threading.Event(), threading.Event()
    real = gridlink.accounts.passwords.verify_password

    def paused(password_hash: str | None, password: str) -> bool:
        started.set()
        release.wait(30)
        return real(password_hash, password)

    monkeypatch.setattr(gridlink.accounts.passwords, "verify_password", paused)
    try:
        yield started
    finally:
        release.set()


def locked_rows(services: Services, user: ApiUser) -> list[str]:
    """Name the user's rows another transaction cannot lock right now (NOWAIT)."""
    locked = []
    for table, column in [("users", "id"), ("profile_documents", "user_id")]:
        try:
            with services.primary.begin() as connection:
                connection.execute(
                    text(
                        f"SELECT 1 FROM {table} WHERE {column} = "
                        "(SELECT id FROM users WHERE username = :u) FOR UPDATE NOWAIT"
                    ),
                    {"u": user.username},
                )
        except OperationalError:
            locked.append(table)
    return locked


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "/api/users/me/", lambda u: {"password": u.password}),
        (
            "POST",
            "/api/auth/password/change/",
            lambda u: {"current_password": u.password, "new_password": "another password"},
        ),
    ],
)
def test_no_row_lock_is_held_while_a_password_is_checked(
    client, services, monkeypatch, method, path, body
):
    user = sign_up(client, "lock")
    # The pause ends (release) before the pool waits for the request to finish.
    with ThreadPoolExecutor(1) as pool, hashing_paused(monkeypatch) as started:
        answer = pool.submit(
            client.simulate_request, method, path, json=body(user), headers=user.headers
        )
        assert started.wait(30)
        assert locked_rows(services, user) == []
    assert answer.result().status_code == 204


# --- login: reserved before checking, counted per account and client --------------------------


@pytest.mark.parametrize(
    ("limits", "same_address"),
    [
        ({}, True),  # one client's 5
        ({"login_failures_per_account": 5}, False),  # the account's wide limit, from 32 clients
    ],
)
def test_concurrent_wrong_guesses_past_the_limit_are_refused_before_checking(
    services, client, monkeypatch, limits, same_address
):
    user = sign_up(client, "race")
    address = an_address()
    checks: list[str | None] = []
    real = gridlink.accounts.passwords.verify_password

    def counted(password_hash: str | None, password: str) -> bool:
        checks.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(gridlink.accounts.passwords, "verify_password", counted)
    racing = app_with(services, concurrent_hashes=32, **limits)
    with ThreadPoolExecutor(32) as pool:
        results = list(
            pool.map(
                lambda n: racing.simulate_post(
                    "/api/auth/login/",
                    json={"username": user.username, "password": f"guess {n}"},
                    remote_addr=address if same_address else an_address(),
                ),
                range(32),
            )
        )
    statuses = sorted(result.status_code for result in results)
    assert len(checks) <= 5
    assert statuses == [401] * len(checks) + [429] * (32 - len(checks))


def test_the_username_and_the_email_share_one_counter(client, user):
    address = an_address()

    def guess(login: str) -> int:
        status: int = client.simulate_post(
            "/api/auth/login/",
            json={"username": login, "password": "wrong password"},
            remote_addr=address,
        ).status_code
        return status

    assert [guess(user.username) for _ in range(3)] == [401] * 3
    assert [guess(user.email.upper()) for _ in range(2)] == [401] * 2
    assert guess(user.username) == 429
    assert guess(user.email) == 429


def test_with_redis_unreachable_logins_are_limited_in_each_process(services, client):
    user = sign_up(client, "dead")
    dead = Services.connect(
        services.settings.replace(redis_url="redis://127.0.0.1:1/0", server_processes=2)
    )
    try:
        app = falcon.testing.TestClient(create_app(dead.settings, dead))
        address = an_address()
        statuses = [
            app.simulate_post(
                "/api/auth/login/",
                json={"username": user.username, "password": "wrong password"},
                remote_addr=address,
            ).status_code
            for _ in range(3)
        ]
        # Five per account and client across two processes: this one allows two.
        assert statuses == [401, 401, 429]
    finally:
        dead.close()


def test_with_redis_unreachable_sign_ups_are_limited_in_each_process(services):
    dead = Services.connect(
        services.settings.replace(redis_url="redis://127.0.0.1:1/0", signups_per_address=1)
    )
    try:
        app = falcon.testing.TestClient(create_app(dead.settings, dead))
        address = an_address()
        statuses = [
            app.simulate_post(
                "/api/auth/signup/", json=sign_up_body(), remote_addr=address
            ).status_code
            for _ in range(2)
        ]
        assert statuses == [201, 429]
    finally:
        dead.close()
