"""Login throttling that cannot be turned against the owner (API.md, "Login throttling").

Failures count per account and per client: a device of the account when the
login presents one (the value a login or sign-up answered), else the
address. Counted in the real Redis; devices stored in the real primary.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any

import falcon.testing
import orjson
import pytest
from sqlalchemy import text

from gridlink.accounts.passwords import hash_password
from gridlink.accounts.ratelimit import Limiter
from gridlink.accounts.throttles import LoginClient, LoginThrottle, account_key
from gridlink.accounts.tokens import hash_token
from gridlink.errors import RateLimited
from gridlink.services import Services
from tests.support.abuse import an_address, app_with
from tests.support.accounts import RESET_PASSWORD, attempt, confirm_reset, reset_token
from tests.support.api import ApiUser, assert_error, random_username, sign_up


def fail(
    client: falcon.testing.TestClient,
    username: str,
    address: str,
    times: int,
    device: str | None = None,
) -> None:
    for _ in range(times):
        result = attempt(client, username, "wrong password", address, device)
        assert result.status_code == 401, result.text


def assert_throttled(result: falcon.testing.Result, window_seconds: int = 900) -> None:
    assert_error(result, 429, "rate_limited")
    assert 1 <= int(result.headers["Retry-After"]) <= window_seconds


def logged_in_device(client: falcon.testing.TestClient, user: ApiUser, device: str) -> str:
    """Log ``user`` in presenting ``device`` from a new address; return the device answered."""
    result = attempt(client, user.username, user.password, an_address(), device)
    assert result.status_code == 200, result.text
    answered: str = result.json["device"]
    return answered


# --- per account and client ------------------------------------------------------------------


def test_after_five_failures_from_one_client_its_sixth_attempt_is_429(client, user):
    address = an_address()
    fail(client, user.username, address, 5)
    assert_throttled(attempt(client, user.username, user.password, address))
    # The same account, whatever the case of its name or whether by its email.
    assert_throttled(attempt(client, user.username.upper(), user.password, address))
    assert_throttled(attempt(client, user.email, user.password, address))


def test_five_failures_from_one_address_do_not_stop_the_right_password_from_another(client, user):
    fail(client, user.username, an_address(), 5)
    assert attempt(client, user.username, user.password, an_address()).status_code == 200


def test_an_unknown_username_is_throttled_the_same_way(client):
    username, address = random_username("nobody"), an_address()
    fail(client, username, address, 5)
    assert_throttled(attempt(client, username, "anything", address))


def test_a_throttled_client_does_not_block_other_users_from_the_same_address(
    client, user, other_user
):
    address = an_address()
    fail(client, user.username, address, 5)
    assert attempt(client, other_user.username, other_user.password, address).status_code == 200


def test_a_successful_login_clears_the_clients_failures(client, user):
    address = an_address()
    fail(client, user.username, address, 4)
    assert attempt(client, user.username, user.password, address).status_code == 200
    fail(client, user.username, address, 4)
    assert attempt(client, user.username, user.password, address).status_code == 200


def test_throttling_ends_when_the_failures_leave_the_window(services, user: ApiUser):
    # The limiter's clock is the test's: the window passes when the test says so.
    now = [time.time()]
    clocked = dataclasses.replace(
        services,
        limiter=Limiter(services.cache.client, services.settings.server_processes, lambda: now[0]),
    )
    client = app_with(clocked, login_window_seconds=5, login_failures_per_client=2)
    address = an_address()
    fail(client, user.username, address, 2)
    assert_throttled(attempt(client, user.username, user.password, address), 5)
    now[0] += 4.9
    assert_throttled(attempt(client, user.username, user.password, address), 5)
    now[0] += 0.2
    assert attempt(client, user.username, user.password, address).status_code == 200


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_slides_one_failure_at_a_time(services):
    clock = FakeClock()
    settings = services.settings.replace(login_failures_per_client=3, login_window_seconds=100)
    throttle = LoginThrottle(Limiter(services.redis, 1, clock), settings)
    client = LoginClient(account_key(None, random_username("clock")), an_address())
    for _ in range(3):
        throttle.admit(client, address_admitted=False)  # kept: each stands for a failure
        clock.now += 10  # failures at 0, 10 and 20
    clock.now = 1_000_000.0 + 50
    with pytest.raises(RateLimited) as refused:
        throttle.admit(client, address_admitted=False)
    assert refused.value.headers["Retry-After"] == "50"  # when the failure at 0 leaves
    clock.now = 1_000_000.0 + 100.5
    throttle.admit(client, address_admitted=False)  # two left in the window: allowed, counted
    with pytest.raises(RateLimited) as refused:
        throttle.admit(client, address_admitted=False)
    assert refused.value.headers["Retry-After"] == "10"  # the failure at 10 leaves at 110


# --- per address, whatever the accounts -------------------------------------------------------


def test_too_many_failures_from_one_address_throttle_every_username_from_it(services):
    client = app_with(services, login_failures_per_address=3)
    address = an_address()
    for _ in range(3):
        fail(client, random_username("spray"), address, 1)
    assert_throttled(attempt(client, random_username("spray"), "anything", address))
    assert attempt(client, random_username("spray"), "anything", an_address()).status_code == 401


def test_the_address_limit_is_fifty_by_default(client):
    address = an_address()
    for _ in range(50):
        fail(client, random_username("spray"), address, 1)
    assert_throttled(attempt(client, random_username("spray"), "anything", address))


# --- the account's wide limit, and devices ----------------------------------------------------


def test_a_thousand_failures_from_two_hundred_addresses_do_not_lock_the_owner_out(client):
    owner = sign_up(client, "owner")
    # The owner logged in before from this client: it holds the device that login answered.
    device = logged_in_device(client, owner, owner.device)
    attackers = [an_address() for _ in range(200)]
    statuses = [
        attempt(client, owner.username, f"guess {round_} {n}", address).status_code
        for round_ in range(5)
        for n, address in enumerate(attackers)
    ]
    # Past the account's 100, every client without a device is refused before any hashing.
    assert statuses == [401] * 100 + [429] * 900
    assert_throttled(attempt(client, owner.username, owner.password, an_address()))
    # The owner's client, first try, even from an address the attackers used.
    result = attempt(client, owner.username, owner.password, attackers[0], device)
    assert result.status_code == 200, result.text
    assert result.json["device"] == device


def test_a_client_with_a_device_keeps_its_own_five_failures(services):
    client = app_with(services, login_failures_per_account=3)
    user = sign_up(client, "dev")
    address = an_address()
    fail(client, user.username, address, 5, user.device)
    assert_throttled(attempt(client, user.username, user.password, address, user.device))
    # Its failures were its own: neither the address nor the account's wide count has them.
    assert attempt(client, user.username, user.password, address).status_code == 200


def test_a_device_is_never_refused_for_its_addresss_failures(services):
    client = app_with(services, login_failures_per_address=3)
    user = sign_up(client, "nat")
    shared = an_address()  # a NAT: an attacker and the owner behind one address
    for _ in range(3):
        fail(client, random_username("spray"), shared, 1)
    assert_throttled(attempt(client, user.username, user.password, shared))
    assert attempt(client, user.username, user.password, shared, user.device).status_code == 200


def test_a_device_is_bound_to_its_account(services):
    client = app_with(services, login_failures_per_account=2)
    victim, other = sign_up(client, "victim"), sign_up(client, "other")
    fail(client, victim.username, an_address(), 1)
    fail(client, victim.username, an_address(), 1)
    # Another account's device is no device of this one.
    assert_throttled(attempt(client, victim.username, victim.password, an_address(), other.device))
    assert attempt(client, victim.username, victim.password, an_address(), victim.device).json[
        "device"
    ] == (victim.device)


def devices_rows(services: Services, username: str) -> list[dict[str, Any]]:
    with services.primary.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT d.* FROM login_devices d JOIN users u ON u.id = d.user_id"
                " WHERE u.username = :username"
            ),
            {"username": username},
        ).mappings()
        return [dict(row) for row in rows]


def test_a_stolen_devices_row_cannot_be_used_as_a_device(services):
    client = app_with(services, login_failures_per_account=1)
    user = sign_up(client, "stolen")
    [row] = devices_rows(services, user.username)
    # Only the SHA-256 of the device is kept, with the account it is bound to.
    assert set(row) == {"id", "user_id", "device_hash", "created_on", "last_used_on"}
    assert bytes(row["device_hash"]) == hash_token(user.device)
    fail(client, user.username, an_address(), 1)  # the account's wide limit is reached
    stolen = bytes(row["device_hash"])
    for forged in (
        stolen.hex(),
        base64.urlsafe_b64encode(stolen).decode().rstrip("="),
        str(row["id"]),
    ):
        assert_throttled(attempt(client, user.username, user.password, an_address(), forged))
    assert attempt(client, user.username, user.password, an_address(), user.device).status_code == (
        200
    )


def test_login_and_sign_up_answer_a_device_that_later_logins_keep(client, user):
    same = attempt(client, user.username, user.password, an_address(), user.device)
    assert set(same.json) == {"user", "token", "device"}
    assert same.json["device"] == user.device
    new = attempt(client, user.username, user.password, an_address())
    assert new.json["device"] not in (user.device, "")
    unknown = attempt(client, user.username, user.password, an_address(), "not a device")
    assert unknown.status_code == 200
    assert unknown.json["device"] not in (user.device, "not a device")


def test_an_account_remembers_its_most_recently_used_devices(services):
    client = app_with(services, max_devices_per_user=2)
    user = sign_up(client, "cap")
    second = attempt(client, user.username, user.password, an_address()).json["device"]
    logged_in_device(client, user, user.device)  # the first device, used again
    attempt(client, user.username, user.password, an_address())  # a third
    assert len(devices_rows(services, user.username)) == 2
    assert logged_in_device(client, user, user.device) == user.device
    assert logged_in_device(client, user, second) != second  # forgotten


def test_a_password_reset_clears_the_accounts_wide_limit(services, mail_dir):
    client = app_with(services, login_failures_per_account=2)
    user = sign_up(client, "reset")
    fail(client, user.username, an_address(), 1)
    fail(client, user.username, an_address(), 1)
    assert_throttled(attempt(client, user.username, user.password, an_address()))
    assert confirm_reset(client, reset_token(client, mail_dir, user.email)).status_code == 204
    assert attempt(client, user.username, RESET_PASSWORD, an_address()).status_code == 200


def test_an_account_whose_password_predates_the_rules_still_logs_in(client, services, user):
    with services.primary.begin() as connection:
        connection.execute(
            text("UPDATE users SET password_hash = :h WHERE username = :u"),
            {"h": hash_password("short"), "u": user.username},
        )
    assert attempt(client, user.username, "short", an_address()).status_code == 200


# --- a token's checks of the current password --------------------------------------------------


def delete_with(client: falcon.testing.TestClient, token: str, password: str) -> int:
    result = client.simulate_delete(
        "/api/users/me/", headers={"Authorization": f"Token {token}"}, json={"password": password}
    )
    status: int = result.status_code
    return status


def change_with(
    client: falcon.testing.TestClient, token: str, current: str
) -> falcon.testing.Result:
    return client.simulate_post(
        "/api/auth/password/change/",
        headers={"Authorization": f"Token {token}"},
        json={"current_password": current, "new_password": "violet kettle summit"},
    )


def test_wrong_current_passwords_count_against_that_session_alone(client, user):
    assert [delete_with(client, user.token, "guess") for _ in range(5)] == [400] * 5
    assert_throttled(change_with(client, user.token, user.password))
    # Neither the account nor any address is held back by that session's failures.
    other = attempt(client, user.username, user.password, an_address())
    assert other.status_code == 200
    assert change_with(client, other.json["token"], user.password).status_code == 204


def test_failed_logins_do_not_refuse_a_sessions_password_check(services):
    client = app_with(services, login_failures_per_account=1, login_failures_per_address=1)
    user = sign_up(client, "sess")
    fail(client, user.username, an_address(), 1)
    assert_throttled(attempt(client, user.username, user.password, an_address()))
    assert change_with(client, user.token, user.password).status_code == 204


# --- security events ---------------------------------------------------------------------------


def security_lines(log_lines) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    return [line for line in lines if line.get("logger") == "gridlink.security"]


def test_logins_log_each_security_event_once_without_the_password(
    services, client, log_lines, user
):
    throttled = app_with(services, login_failures_per_client=1)
    address = an_address()
    fail(throttled, user.username, address, 1)
    assert_throttled(attempt(throttled, user.username, user.password, address))
    assert attempt(client, user.username, user.password, an_address(), user.device).status_code == (
        200
    )
    with services.primary.connect() as connection:
        user_id = connection.execute(
            text("SELECT id FROM users WHERE username = :u"), {"u": user.username}
        ).scalar_one()
    events = [(line["event"], line["user_id"]) for line in security_lines(log_lines)]
    assert events == [
        ("login_failed", user_id),
        ("login_throttled", user_id),
        ("login_succeeded", user_id),
    ]
    logged = log_lines.getvalue()
    assert user.password not in logged
    assert "wrong password" not in logged
    assert user.device not in logged
