"""Password reset by mail, and login throttling (counted in the real Redis)."""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from email.message import EmailMessage

import falcon.testing
import pytest
from sqlalchemy import text

from gridlink.accounts.ratelimit import Limiter
from gridlink.accounts.throttles import LoginThrottle
from gridlink.accounts.tokens import hash_token
from gridlink.errors import RateLimited
from tests.support.abuse import an_address, app_with
from tests.support.accounts import (
    RESET_PASSWORD,
    attempt,
    confirm_reset,
    request_reset,
    reset_token,
)
from tests.support.api import ApiUser, assert_error, login, random_username
from tests.support.mail import mails_to

# --- password reset --------------------------------------------------------------------------


def me_status(client: falcon.testing.TestClient, token: str) -> int:
    return client.simulate_get(
        "/api/users/me/", headers={"Authorization": f"Token {token}"}
    ).status_code


def test_a_reset_mails_a_token_that_sets_a_new_password_and_revokes_every_token(
    client, mail_dir, user
):
    other = login(client, user.username, user.password).json["token"]
    token = reset_token(client, mail_dir, user.email)
    [mail] = mails_to(mail_dir, user.email)
    assert "password" in mail["Subject"].lower()
    assert token not in mail["Subject"]
    assert confirm_reset(client, token, "the reset password").status_code == 204
    assert [me_status(client, each) for each in (user.token, other)] == [401, 401]
    assert login(client, user.username, user.password).status_code == 401
    assert login(client, user.username, "the reset password").status_code == 200


def test_a_reset_for_an_unknown_email_answers_the_same_and_sends_nothing(
    client, services, mail_dir
):
    address = f"{random_username('nobody')}@example.com"
    result = request_reset(client, address)
    assert result.status_code == 202
    services.mail.deliver_now()
    assert mails_to(mail_dir, address) == []


def test_a_known_and_an_unknown_email_get_the_same_answer(client, user):
    known = request_reset(client, user.email)
    unknown = request_reset(client, f"{random_username('nobody')}@example.com")
    assert (known.status_code, known.text) == (unknown.status_code, unknown.text)


def test_the_email_is_matched_ignoring_case_and_the_mail_goes_to_the_stored_address(
    client, mail_dir, user
):
    assert request_reset(client, user.email.upper()).status_code == 202
    assert len(mails_to(mail_dir, user.email, expected=1)) == 1


@pytest.mark.parametrize(
    "body", [{"email": "not-an-email"}, {}, {"email": "a@example.com", "username": "x"}]
)
def test_a_malformed_reset_request_is_a_400(client, body):
    result = client.simulate_post("/api/auth/password/reset/", json=body)
    assert_error(result, 400, "invalid_request")


def test_a_reset_token_works_once(client, mail_dir, user):
    token = reset_token(client, mail_dir, user.email)
    assert confirm_reset(client, token).status_code == 204
    error = assert_error(confirm_reset(client, token, "another password"), 400, "invalid_request")
    assert set(error["fields"]) == {"token"}
    assert login(client, user.username, "another password").status_code == 401


def test_an_expired_reset_token_is_a_400(client, services, mail_dir, user):
    token = reset_token(client, mail_dir, user.email)
    with services.primary.begin() as connection:
        connection.execute(
            text(
                "UPDATE password_resets SET expires_on = now() - interval '1 second'"
                " WHERE token_hash = :h"
            ),
            {"h": hash_token(token)},
        )
    assert_error(confirm_reset(client, token), 400, "invalid_request")
    assert me_status(client, user.token) == 200


def test_a_reset_token_is_valid_for_one_hour(client, services, mail_dir, user):
    token = reset_token(client, mail_dir, user.email)
    with services.primary.connect() as connection:
        lifetime = connection.execute(
            text("SELECT expires_on - created_on FROM password_resets WHERE token_hash = :h"),
            {"h": hash_token(token)},
        ).scalar_one()
    assert abs(lifetime.total_seconds() - 3600) < 60


def test_an_unknown_reset_token_is_a_400(client):
    result = confirm_reset(client, secrets.token_urlsafe(32))
    assert set(assert_error(result, 400, "invalid_request")["fields"]) == {"token"}


def test_a_too_short_new_password_is_a_400_and_leaves_the_token_usable(client, mail_dir, user):
    token = reset_token(client, mail_dir, user.email)
    result = confirm_reset(client, token, "short")
    assert set(assert_error(result, 400, "invalid_request")["fields"]) == {"new_password"}
    assert confirm_reset(client, token).status_code == 204


def test_using_one_reset_token_voids_the_others(client, mail_dir, user):
    first = reset_token(client, mail_dir, user.email)
    second = reset_token(client, mail_dir, user.email)
    assert first != second
    assert confirm_reset(client, second).status_code == 204
    assert_error(confirm_reset(client, first), 400, "invalid_request")


# --- the owner is told ------------------------------------------------------------------------


def assert_grants_nothing(mail: EmailMessage, *secrets_: str) -> str:
    """Check a notice holds no token, link or secret; return its text."""
    body = mail.get_body(("plain",))
    assert body is not None
    content = body.get_content()
    assert '"token"' not in content
    assert not re.search(r"[A-Za-z0-9_-]{40,}|https?://", content), content
    for secret in secrets_:
        assert secret not in content
    return str(content)


def test_a_changed_password_is_told_to_the_owner(client, mail_dir, user):
    new_password = "a changed password 1"
    changed = client.simulate_post(
        "/api/auth/password/change/",
        headers=user.headers,
        json={"current_password": user.password, "new_password": new_password},
    )
    assert changed.status_code == 204
    [notice] = mails_to(mail_dir, user.email, expected=1)
    assert notice["Subject"] == "Your Gridlink password was changed"
    content = assert_grants_nothing(notice, user.password, new_password, user.token)
    assert user.username in content


def test_a_reset_password_is_told_to_the_owner(client, mail_dir, user):
    token = reset_token(client, mail_dir, user.email)
    assert confirm_reset(client, token).status_code == 204
    notices = [
        mail
        for mail in mails_to(mail_dir, user.email, expected=2)
        if mail["Subject"] == "Your Gridlink password was reset"
    ]
    assert len(notices) == 1
    assert_grants_nothing(notices[0], token, RESET_PASSWORD, user.token)


# --- login throttling ------------------------------------------------------------------------


def fail(client: falcon.testing.TestClient, username: str, address: str, times: int) -> None:
    for _ in range(times):
        assert attempt(client, username, "wrong password", address).status_code == 401


def assert_throttled(result: falcon.testing.Result, window_seconds: int) -> None:
    assert_error(result, 429, "rate_limited")
    assert 1 <= int(result.headers["Retry-After"]) <= window_seconds


def test_after_five_failures_for_a_username_the_sixth_attempt_is_429(client, user):
    address = an_address()
    fail(client, user.username, address, 5)
    assert_throttled(attempt(client, user.username, user.password, address), 900)
    # Per username, whatever the address, and whatever its case.
    assert_throttled(attempt(client, user.username.upper(), user.password, an_address()), 900)


def test_an_unknown_username_is_throttled_the_same_way(client):
    username, address = random_username("nobody"), an_address()
    fail(client, username, address, 5)
    assert_throttled(attempt(client, username, "anything", address), 900)


def test_a_throttled_username_does_not_block_other_users_from_the_same_address(
    client, user, other_user
):
    address = an_address()
    fail(client, user.username, address, 5)
    assert attempt(client, other_user.username, other_user.password, address).status_code == 200


def test_too_many_failures_from_one_address_throttle_every_username_from_it(services):
    client = app_with(services, login_failures_per_address=3)
    address = an_address()
    for _ in range(3):
        fail(client, random_username("spray"), address, 1)
    assert_throttled(attempt(client, random_username("spray"), "anything", address), 900)
    assert attempt(client, random_username("spray"), "anything", an_address()).status_code == 401


def test_the_address_limit_is_fifty_by_default(client):
    address = an_address()
    for _ in range(50):
        fail(client, random_username("spray"), address, 1)
    assert_throttled(attempt(client, random_username("spray"), "anything", address), 900)


def test_a_successful_login_clears_the_usernames_failures(client, user):
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
    client = app_with(clocked, login_window_seconds=5, login_failures_per_username=2)
    address = an_address()
    fail(client, user.username, address, 2)
    assert_throttled(attempt(client, user.username, user.password, address), 5)
    now[0] += 4.9
    assert_throttled(attempt(client, user.username, user.password, address), 5)
    now[0] += 0.2
    assert attempt(client, user.username, user.password, address).status_code == 200


def test_a_password_reset_clears_the_throttle(client, mail_dir, user):
    fail(client, user.username, an_address(), 5)
    assert confirm_reset(client, reset_token(client, mail_dir, user.email)).status_code == 204
    assert attempt(client, user.username, RESET_PASSWORD, an_address()).status_code == 200


def test_wrong_passwords_sent_with_a_token_count_too(client, user):
    # A stolen token must not become a way around the login throttle.
    for _ in range(5):
        result = client.simulate_delete(
            "/api/users/me/", headers=user.headers, json={"password": "guess"}
        )
        assert result.status_code == 400
    result = client.simulate_post(
        "/api/auth/password/change/",
        headers=user.headers,
        json={"current_password": user.password, "new_password": "whatever123"},
    )
    assert_throttled(result, 900)
    assert_throttled(attempt(client, user.username, user.password, an_address()), 900)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_slides_one_failure_at_a_time(services):
    clock = FakeClock()
    settings = services.settings.replace(login_failures_per_username=3, login_window_seconds=100)
    throttle = LoginThrottle(Limiter(services.redis, 1, clock), settings)
    username = random_username("clock")
    for _ in range(3):
        throttle.reserve(username, None)  # kept: each stands for a failure
        clock.now += 10  # failures at 0, 10 and 20
    clock.now = 1_000_000.0 + 50
    with pytest.raises(RateLimited) as refused:
        throttle.reserve(username, None)
    assert refused.value.headers["Retry-After"] == "50"  # when the failure at 0 leaves
    clock.now = 1_000_000.0 + 100.5
    throttle.reserve(username, None)  # two failures left in the window: allowed, and counted
    with pytest.raises(RateLimited) as refused:
        throttle.reserve(username, None)
    assert refused.value.headers["Retry-After"] == "10"  # the failure at 10 leaves at 110
