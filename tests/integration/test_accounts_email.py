"""Changing the email: the current password, a token mailed to the new address, a notice to the old.

A stolen token alone must not be enough to move an account's mail (and so
its password resets) to an attacker's address.
"""

from __future__ import annotations

from pathlib import Path

import falcon.testing
from sqlalchemy import text

from gridlink.accounts.tokens import hash_token
from tests.support.abuse import an_address
from tests.support.accounts import attempt, confirm_reset, reset_token
from tests.support.api import ApiUser, assert_error, login, me_status, random_username
from tests.support.mail import mails_to, token_in


def a_new_email() -> str:
    return f"{random_username('new')}@example.com"


def ask_email_change(
    client: falcon.testing.TestClient, user: ApiUser, email: str, password: str | None = None
) -> falcon.testing.Result:
    body = {"email": email}
    if password is not None:
        body["current_password"] = password
    return client.simulate_patch("/api/users/me/", headers=user.headers, json=body)


def confirm_email(
    client: falcon.testing.TestClient, user: ApiUser, token: str
) -> falcon.testing.Result:
    return client.simulate_post(
        "/api/users/me/email/confirm/", headers=user.headers, json={"token": token}
    )


def mailed_token(mail_dir: Path, email: str) -> str:
    [mail] = mails_to(mail_dir, email, expected=1)
    return token_in(mail)


def test_an_email_change_without_the_current_password_is_a_400_naming_it(client, user):
    result = ask_email_change(client, user, a_new_email())
    assert set(assert_error(result, 400, "invalid_request")["fields"]) == {"current_password"}
    me = client.simulate_get("/api/users/me/", headers=user.headers)
    assert me.json["email"] == user.email


def test_a_wrong_current_password_is_a_400_and_counts_against_the_session(
    client, mail_dir, user, other_user
):
    new_email = a_new_email()
    for _ in range(5):
        result = ask_email_change(client, user, new_email, "not the password")
        assert set(assert_error(result, 400, "invalid_request")["fields"]) == {"current_password"}
    assert_error(ask_email_change(client, user, new_email, user.password), 429, "rate_limited")
    # That session's allowance, not the account's: the owner still logs in.
    assert attempt(client, user.username, user.password, an_address()).status_code == 200
    # The outbox delivers in the order mails were queued: once a mail queued after
    # those requests has arrived, any mail they had queued would have arrived before it.
    later_email = a_new_email()
    assert ask_email_change(client, other_user, later_email, other_user.password).status_code == 200
    assert len(mails_to(mail_dir, later_email, expected=1)) == 1
    assert mails_to(mail_dir, new_email) == []


def test_the_email_changes_only_once_the_new_address_confirms(client, mail_dir, user):
    new_email = a_new_email()
    asked = ask_email_change(client, user, new_email, user.password)
    assert asked.status_code == 200, asked.text
    assert asked.json["email"] == user.email  # not yet
    assert login(client, new_email, user.password).status_code == 401

    confirmed = confirm_email(client, user, mailed_token(mail_dir, new_email))
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json["email"] == new_email
    assert login(client, new_email, user.password).status_code == 200
    assert login(client, user.email, user.password).status_code == 401


def test_the_old_address_is_told_of_the_change(client, mail_dir, user):
    new_email = a_new_email()
    assert ask_email_change(client, user, new_email, user.password).status_code == 200
    [notice] = mails_to(mail_dir, user.email, expected=1)
    body = notice.get_body(("plain",))
    assert body is not None
    assert new_email in body.get_content()
    assert '"token"' not in body.get_content()  # the notice carries nothing usable


def test_a_confirmation_token_is_single_use_and_stored_hashed(client, services, mail_dir, user):
    new_email = a_new_email()
    assert ask_email_change(client, user, new_email, user.password).status_code == 200
    token = mailed_token(mail_dir, new_email)
    with services.primary.connect() as connection:
        stored = connection.execute(
            text("SELECT token_hash FROM email_changes WHERE new_email = :e"), {"e": new_email}
        ).scalar_one()
    assert bytes(stored) == hash_token(token)
    assert confirm_email(client, user, token).status_code == 200
    again = confirm_email(client, user, token)
    assert set(assert_error(again, 400, "invalid_request")["fields"]) == {"token"}


def test_an_expired_confirmation_token_is_a_400(client, services, mail_dir, user):
    new_email = a_new_email()
    assert ask_email_change(client, user, new_email, user.password).status_code == 200
    token = mailed_token(mail_dir, new_email)
    with services.primary.begin() as connection:
        connection.execute(
            text(
                "UPDATE email_changes SET expires_on = now() - interval '1 second' "
                "WHERE token_hash = :h"
            ),
            {"h": hash_token(token)},
        )
    assert_error(confirm_email(client, user, token), 400, "invalid_request")
    assert client.simulate_get("/api/users/me/", headers=user.headers).json["email"] == user.email


def test_another_accounts_token_confirms_nothing(client, mail_dir, user, other_user):
    new_email = a_new_email()
    assert ask_email_change(client, user, new_email, user.password).status_code == 200
    token = mailed_token(mail_dir, new_email)
    assert_error(confirm_email(client, other_user, token), 400, "invalid_request")
    assert confirm_email(client, user, token).status_code == 200


def test_a_taken_email_is_asked_for_like_any_other_and_refused_at_confirmation(
    client, mail_dir, user, other_user
):
    # Asking tells nothing: the same answer as for a free address, and a token is mailed.
    taken = other_user.email.upper()
    asked = ask_email_change(client, user, taken, user.password)
    assert asked.status_code == 200, asked.text
    assert asked.json["email"] == user.email
    token = mailed_token(mail_dir, taken)
    assert set(assert_error(confirm_email(client, user, token), 409, "conflict")["fields"]) == {
        "email"
    }
    assert client.simulate_get("/api/users/me/", headers=user.headers).json["email"] == user.email


def test_an_email_taken_between_asking_and_confirming_is_a_conflict(client, mail_dir, user):
    new_email = a_new_email()
    assert ask_email_change(client, user, new_email, user.password).status_code == 200
    token = mailed_token(mail_dir, new_email)
    username = random_username("late")
    signed_up = client.simulate_post(
        "/api/auth/signup/",
        json={"username": username, "email": new_email, "password": "a password 1"},
    )
    assert signed_up.status_code == 201
    assert set(assert_error(confirm_email(client, user, token), 409, "conflict")["fields"]) == {
        "email"
    }


def test_ones_own_email_in_another_case_is_not_a_conflict(client, mail_dir, user):
    assert ask_email_change(client, user, user.email.upper(), user.password).status_code == 200
    token = mailed_token(mail_dir, user.email.upper())
    assert confirm_email(client, user, token).json["email"] == user.email.upper()


def test_confirming_a_new_email_voids_reset_tokens_sent_to_the_old_one(client, mail_dir, user):
    reset = reset_token(client, mail_dir, user.email)
    new_email = a_new_email()
    assert ask_email_change(client, user, new_email, user.password).status_code == 200
    assert confirm_email(client, user, mailed_token(mail_dir, new_email)).status_code == 200
    assert_error(confirm_reset(client, reset), 400, "invalid_request")


def test_a_password_change_uses_up_outstanding_reset_tokens(client, mail_dir, user):
    reset = reset_token(client, mail_dir, user.email)
    changed = client.simulate_post(
        "/api/auth/password/change/",
        headers=user.headers,
        json={"current_password": user.password, "new_password": "another password 1"},
    )
    assert changed.status_code == 204
    assert_error(confirm_reset(client, reset), 400, "invalid_request")


def test_a_confirmed_email_change_ends_every_other_session(client, mail_dir, user):
    others = [login(client, user.username, user.password).json["token"] for _ in range(2)]
    new_email = a_new_email()
    assert ask_email_change(client, user, new_email, user.password).status_code == 200
    # Asking ends nothing: whoever asked may not own the new address.
    assert [me_status(client, token) for token in others] == [200, 200]
    assert confirm_email(client, user, mailed_token(mail_dir, new_email)).status_code == 200
    assert [me_status(client, token) for token in others] == [401, 401]
    assert me_status(client, user.token) == 200
