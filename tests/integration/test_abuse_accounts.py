"""Account abuse: password-reset flooding, and telling registered users from others.

Resets are limited per email and per client address, counted in the real
Redis whether or not the email is registered, so the 429 tells nothing
either. Login, reset and sign-up do the same work for a known and an unknown
user, and an email change for a free and a taken address; the one answer
that must differ is sign-up's 409 for a taken username or email (API.md:
the client has to be told to pick another).
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import text

import gridlink.accounts.passwords
from gridlink.app import create_app
from gridlink.services import Services
from gridlink.settings import MailBackend
from tests.support.abuse import an_address, app_with, assert_clean_result, primary_state
from tests.support.api import ApiUser, assert_error, random_username, sign_up
from tests.support.mail import mails_to
from tests.support.queries import count_queries
from tests.support.waiting import wait_for


def reset(client: falcon.testing.TestClient, email: str, address: str) -> falcon.testing.Result:
    return client.simulate_post(
        "/api/auth/password/reset/", json={"email": email}, remote_addr=address
    )


def unknown_email() -> str:
    return f"{random_username('nobody')}@example.com"


def queued_mail_to(services: Services, address: str) -> int:
    with services.primary.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM mail_outbox WHERE to_address = :a"), {"a": address}
            ).scalar_one()
        )


def comparable(result: falcon.testing.Result) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers, less what differs on every answer anyway."""
    headers = {k: v for k, v in result.headers.items() if k.lower() != "x-request-id"}
    if "retry-after" in headers:
        headers["retry-after"] = "<seconds>"
    return result.status_code, result.content, headers


# --- reset limits -----------------------------------------------------------------------------


def test_one_email_gets_three_resets_an_hour_by_default_from_any_address(client, mail_dir, user):
    for _ in range(3):
        assert reset(client, user.email, an_address()).status_code == 202
    refused = reset(client, user.email.upper(), an_address())
    assert assert_clean_result(refused, 429) == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    # The refused request mailed nothing.
    assert len(mails_to(mail_dir, user.email, expected=3)) == 3


def test_an_unknown_email_is_limited_alike_and_answered_alike(services, user):
    client = app_with(services, password_resets_per_email=2)
    known = [reset(client, user.email, an_address()) for _ in range(3)]
    unknown_address = unknown_email()
    unknown = [reset(client, unknown_address, an_address()) for _ in range(3)]
    assert [comparable(result) for result in known] == [comparable(result) for result in unknown]
    assert [result.status_code for result in known] == [202, 202, 429]


def test_one_address_asking_for_many_emails_is_limited(services, user):
    client = app_with(services, password_resets_per_address=3)
    address = an_address()
    for email in [unknown_email(), unknown_email(), user.email]:
        assert reset(client, email, address).status_code == 202
    assert assert_clean_result(reset(client, unknown_email(), address), 429) == "rate_limited"
    assert reset(client, user.email, address).status_code == 429
    # Another address is not held back by this one.
    assert reset(client, unknown_email(), an_address()).status_code == 202


def test_the_address_limit_is_twenty_by_default(client):
    address = an_address()
    for _ in range(20):
        assert reset(client, unknown_email(), address).status_code == 202
    assert reset(client, unknown_email(), address).status_code == 429


def test_a_refused_reset_changes_nothing(services, mail_dir, user):
    client = app_with(services, password_resets_per_email=1)
    assert reset(client, user.email, an_address()).status_code == 202
    # The accepted one's token is made when it is mailed: wait until that has committed.
    wait_for(lambda: queued_mail_to(services, user.email) == 0, 10, "the reset mailed")
    assert len(mails_to(mail_dir, user.email, expected=1)) == 1
    before = primary_state(services, user.username), queued_mail_to(services, user.email)
    assert reset(client, user.email, an_address()).status_code == 429
    assert (primary_state(services, user.username), queued_mail_to(services, user.email)) == before


def test_with_redis_unreachable_resets_are_limited_in_the_process(services, user):
    # A Redis nobody listens on: the limit is kept in this process's memory, never lifted.
    dead = Services.connect(
        services.settings.replace(redis_url="redis://127.0.0.1:1/0", password_resets_per_email=2)
    )
    try:
        client = falcon.testing.TestClient(create_app(dead.settings, dead))
        statuses = [reset(client, user.email, an_address()).status_code for _ in range(3)]
        assert statuses == [202, 202, 429]
    finally:
        dead.close()


# --- the same work for known and unknown users ------------------------------------------------


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[Any]]:
    """Record the calls of a function of gridlink.accounts.passwords (the real one still runs)."""

    def watch(name: str) -> list[Any]:
        calls: list[Any] = []
        real = getattr(gridlink.accounts.passwords, name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(gridlink.accounts.passwords, name, recorded)
        return calls

    return watch


def test_a_login_for_an_unknown_user_does_what_a_wrong_password_does(client, services, user, spy):
    checks = spy("verify_password")
    answers, queries = [], []
    for login in [user.username, random_username("nobody")]:
        with count_queries(services.primary) as counted:
            result = client.simulate_post(
                "/api/auth/login/",
                json={"username": login, "password": "wrong password"},
                remote_addr=an_address(),
            )
        answers.append(comparable(result))
        queries.append(counted.count)
    assert answers[0] == answers[1]
    assert answers[0][0] == 401
    assert queries[0] == queries[1]
    # One full argon2 check each: against the account's hash, and against a dummy hash.
    assert [hash_ is not None for hash_, _ in checks] == [True, False]


def test_a_reset_for_a_known_email_does_not_wait_for_the_mail_server(services, user):
    """The answer comes while the mail is still on its way: no timing tells known from unknown."""
    with socket.create_server(("127.0.0.1", 0)) as silent_smtp:
        # It accepts connections (the kernel does) and never says a word.
        port = silent_smtp.getsockname()[1]
        smtp = Services.connect(
            services.settings.replace(mail_backend=MailBackend("smtp", host="127.0.0.1", port=port))
        )
        try:
            client = falcon.testing.TestClient(create_app(smtp.settings, smtp))
            known = reset(client, user.email, an_address())
            unknown = reset(client, unknown_email(), an_address())
            assert comparable(known) == comparable(unknown)
            assert known.status_code == 202
            # Answered with the mail in the outbox: the request did not wait for the server.
            assert queued_mail_to(services, user.email) >= 1
        finally:
            silent_smtp.close()  # the send fails now; it is logged, never answered
            smtp.close()


def test_a_reset_sends_the_same_statements_for_a_known_and_an_unknown_email(client, services, user):
    sent = []
    for email in (user.email, unknown_email()):
        with count_queries(services.primary) as counted:
            assert reset(client, email, an_address()).status_code == 202
        sent.append(counted.statements)
    # The same statements, and so the same commit (on staging, the same wait for the standby).
    assert sent[0] == sent[1]
    assert any(statement.startswith("INSERT INTO mail_outbox") for statement in sent[0])


def ask_email_change(
    client: falcon.testing.TestClient, user: ApiUser, email: str
) -> falcon.testing.Result:
    return client.simulate_patch(
        "/api/users/me/",
        headers=user.headers,
        json={"email": email, "current_password": user.password},
    )


def test_an_email_change_answers_and_works_the_same_for_a_free_and_a_taken_address(
    client, services, other_user
):
    askers = [sign_up(client, "asker"), sign_up(client, "asker")]
    sent, answers = [], []
    for asker, email in zip(askers, [unknown_email(), other_user.email], strict=True):
        with count_queries(services.primary) as counted:
            result = ask_email_change(client, asker, email)
        sent.append(counted.statements)
        # The email stays as it is until the new one is confirmed.
        assert result.json["email"] == asker.email
        status, _, headers = comparable(result)
        others = {k: v for k, v in result.json.items() if k not in ("username", "email")}
        answers.append((status, headers, others | {"created_on": "<time>"}))
    assert sent[0] == sent[1]
    assert answers[0] == answers[1]
    assert answers[0][0] == 200


def test_email_changes_are_throttled_per_account(services, user, other_user):
    client = app_with(services, email_changes_per_account=2)
    # A wrong password mails nothing, and is not counted here (the password checks count it).
    wrong = ask_email_change(client, dataclasses.replace(user, password="wrong"), unknown_email())
    assert set(assert_error(wrong, 400, "invalid_request")["fields"]) == {"current_password"}
    for _ in range(2):
        assert ask_email_change(client, user, unknown_email()).status_code == 200
    refused = ask_email_change(client, user, unknown_email())
    assert assert_clean_result(refused, 429) == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    # Another account is not held back by this one's.
    assert ask_email_change(client, other_user, unknown_email()).status_code == 200


def test_a_taken_username_is_refused_before_any_hashing(client, user, spy):
    """Sign-up says a username is taken (API.md) without paying for a hash first."""
    hashes = spy("hash_password")
    taken = client.simulate_post(
        "/api/auth/signup/",
        json={"username": user.username, "email": unknown_email(), "password": "a password 1"},
    )
    assert taken.status_code == 409
    assert taken.json["error"]["fields"] == {"username": ["This username is taken."]}
    assert hashes == []


def test_a_stranger_cannot_tell_a_registered_email_by_login_or_reset(client, user):
    """Emails are not public: login and reset answer alike for a registered one and not.

    (Sign-up does tell, with its 409: see the module's docstring.)
    """
    answers = {}
    for email in (user.email, unknown_email()):
        login = {"username": email, "password": "wrong password"}
        answers[email == user.email] = [
            comparable(client.simulate_post(path, json=body, remote_addr=an_address()))
            for path, body in [
                ("/api/auth/login/", login),
                ("/api/auth/password/reset/", {"email": email}),
            ]
        ]
    assert answers[True] == answers[False]
    assert [status for status, _, _ in answers[True]] == [401, 202]
