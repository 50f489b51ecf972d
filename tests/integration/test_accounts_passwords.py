"""Password reset by mail (login throttling: ``test_login_throttling.py``)."""

from __future__ import annotations

import re
import secrets
from email.message import EmailMessage

import falcon.testing
import pytest
from sqlalchemy import text

from gridlink.accounts.tokens import hash_token
from tests.support.accounts import RESET_PASSWORD, confirm_reset, request_reset, reset_token
from tests.support.api import assert_error, login, random_username
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


@pytest.mark.parametrize("weak", ["Short pw 1", "password1234"])
def test_a_weak_new_password_is_a_400_and_leaves_the_token_usable(client, mail_dir, user, weak):
    token = reset_token(client, mail_dir, user.email)
    result = confirm_reset(client, token, weak)
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
