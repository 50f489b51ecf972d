"""Sign-up, login and the caller's own account (``/api/users/me/``) over HTTP."""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import text

import gridlink.commands.accounts
from gridlink.services import Services
from tests.support.api import ApiUser, assert_error, login, random_username, sign_up, signup_body

ME_FIELDS = {"username", "email", "display_name", "is_admin", "created_on"}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def assert_me(me: dict[str, Any], username: str, email: str, display_name: str = "") -> None:
    assert set(me) == ME_FIELDS
    assert (me["username"], me["email"], me["display_name"]) == (username, email, display_name)
    assert me["is_admin"] is False
    assert RFC3339_UTC.match(me["created_on"]), me["created_on"]


# --- sign-up ---------------------------------------------------------------------------------


def test_sign_up_answers_201_with_me_a_token_and_the_profile_location(client):
    body = signup_body(display_name="Ada L.")
    result = client.simulate_post("/api/auth/signup/", json=body)
    assert result.status_code == 201, result.text
    assert set(result.json) == {"user", "token", "device"}
    assert_me(result.json["user"], body["username"], body["email"], "Ada L.")
    assert len(result.json["token"]) >= 43  # 256 bits in URL-safe base64
    assert len(result.json["device"]) >= 43
    assert result.headers["Location"] == f"/api/users/{body['username']}/"


def test_sign_up_is_served_without_the_trailing_slash_too(client):
    result = client.simulate_post("/api/auth/signup", json=signup_body())
    assert result.status_code == 201, result.text


def test_the_username_is_kept_as_typed_and_its_profile_exists(client):
    body = signup_body(username=random_username("MiXeD"))
    result = client.simulate_post("/api/auth/signup/", json=body)
    assert result.json["user"]["username"] == body["username"]
    profile = client.simulate_get(f"/api/users/{body['username'].lower()}/")
    assert profile.status_code == 200, profile.text
    assert profile.json["username"] == body["username"]


def test_a_username_taken_in_another_case_is_a_conflict_naming_username(client, user):
    result = client.simulate_post(
        "/api/auth/signup/", json=signup_body(username=user.username.upper())
    )
    error = assert_error(result, 409, "conflict")
    assert set(error["fields"]) == {"username"}


def test_an_email_taken_in_another_case_is_a_conflict_naming_email(client, user):
    result = client.simulate_post("/api/auth/signup/", json=signup_body(email=user.email.upper()))
    error = assert_error(result, 409, "conflict")
    assert set(error["fields"]) == {"email"}


def test_a_conflict_names_both_fields_when_both_are_taken(client, user, other_user):
    result = client.simulate_post(
        "/api/auth/signup/", json=signup_body(username=user.username, email=other_user.email)
    )
    assert set(assert_error(result, 409, "conflict")["fields"]) == {"username", "email"}


def test_a_sign_up_that_loses_the_race_for_a_username_is_a_conflict(client, user, monkeypatch):
    # As if another sign-up committed the name between the check and the insert:
    # the unique index decides, and the answer is still a 409.
    monkeypatch.setattr(gridlink.commands.accounts, "refuse_taken", lambda *a, **k: None)
    result = client.simulate_post(
        "/api/auth/signup/", json=signup_body(username=user.username.swapcase())
    )
    assert set(assert_error(result, 409, "conflict")["fields"]) == {"username"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"username": "ab"}, "username"),
        ({"username": "a" * 31}, "username"),
        ({"username": "has space"}, "username"),
        ({"username": "dash-ed"}, "username"),
        ({"username": "ünïcode"}, "username"),
        ({"username": "trailing_newline\n"}, "username"),
        ({"username": 12345}, "username"),
        ({"username": None}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": "x" * 250 + "@example.com"}, "email"),
        ({"password": "Short pw 1"}, "password"),  # too short
        ({"password": "password1234"}, "password"),  # common
        ({"password": "qwertyuiop12"}, "password"),  # a keyboard walk
        ({"password": "p" * 129}, "password"),
        ({"display_name": "d" * 65}, "display_name"),
        ({"display_name": "nul\x00byte"}, "display_name"),
        ({"nickname": "extra"}, "nickname"),
    ],
)
def test_an_invalid_sign_up_is_a_400_naming_the_field(client, overrides, field):
    result = client.simulate_post("/api/auth/signup/", json=signup_body(**overrides))
    error = assert_error(result, 400, "invalid_request")
    assert list(error["fields"]) == [field]


def test_the_limits_themselves_are_accepted(client):
    body = signup_body(password=secrets.token_urlsafe(96), display_name="d" * 64)
    body["username"] = ("u" + secrets.token_hex(15))[:30]
    assert client.simulate_post("/api/auth/signup/", json=body).status_code == 201
    body = signup_body(password="Vq7 kettles!")  # 12 characters
    body["username"] = "u" + secrets.token_hex(1)  # 3 characters, only this test makes any
    assert client.simulate_post("/api/auth/signup/", json=body).status_code == 201


def test_an_unknown_field_is_named_in_fields(client):
    result = client.simulate_post("/api/auth/signup/", json=signup_body(is_admin=True))
    assert assert_error(result, 400, "invalid_request")["fields"] == {
        "is_admin": ["Unknown field."]
    }


def test_missing_fields_are_each_named(client):
    result = client.simulate_post("/api/auth/signup/", json={})
    assert set(assert_error(result, 400, "invalid_request")["fields"]) == {
        "username",
        "email",
        "password",
    }


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error_type"),
    [
        (b"{not json", "application/json", 400, "invalid_request"),
        (b"[1, 2]", "application/json", 400, "invalid_request"),
        (
            b"username=a&password=b",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (b'{"username": "abc"}', "text/plain", 415, "unsupported_media_type"),
        (None, None, 415, "unsupported_media_type"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(
    client, body, content_type, status, error_type
):
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/api/auth/signup/", "/api/auth/login/", "/api/auth/password/reset/"):
        result = client.simulate_post(path, body=body, headers=headers)
        assert_error(result, status, error_type)


def test_a_body_over_64_kib_is_refused(client):
    result = client.simulate_post("/api/auth/signup/", json=signup_body(display_name="x" * 70_000))
    assert_error(result, 413, "payload_too_large")


# --- login -----------------------------------------------------------------------------------


def test_login_with_the_username_in_any_case_gives_a_new_working_token(client, user):
    result = login(client, user.username.upper(), user.password)
    assert result.status_code == 200, result.text
    assert_me(result.json["user"], user.username, user.email)
    token = result.json["token"]
    assert token != user.token
    for each in (token, user.token):
        me = client.simulate_get("/api/users/me/", headers={"Authorization": f"Token {each}"})
        assert me.status_code == 200


def test_login_with_the_email_in_any_case(client, user):
    result = login(client, user.email.upper(), user.password)
    assert result.status_code == 200, result.text
    assert result.json["user"]["username"] == user.username


def test_each_login_gives_a_different_token(client, user):
    tokens = {login(client, user.username, user.password).json["token"] for _ in range(3)}
    assert len(tokens) == 3


def test_a_wrong_password_and_an_unknown_user_get_the_same_401(client, user):
    wrong_password = login(client, user.username, "not the password")
    unknown_user = login(client, random_username("nobody"), "not the password")
    for result in (wrong_password, unknown_user):
        assert_error(result, 401, "unauthenticated")
        assert result.headers["WWW-Authenticate"] == "Token"
    assert wrong_password.json == unknown_user.json


@pytest.mark.parametrize(
    "body",
    [{}, {"username": "someone"}, {"password": "secret123"}, {"username": "", "password": "x"}],
)
def test_a_login_missing_a_field_is_a_400(client, body):
    assert_error(client.simulate_post("/api/auth/login/", json=body), 400, "invalid_request")


def test_a_login_name_with_a_nul_byte_is_a_400_not_a_500(client):
    body = {"username": "nul\x00byte", "password": "whatever1"}
    assert_error(client.simulate_post("/api/auth/login/", json=body), 400, "invalid_request")


# --- /api/users/me/ --------------------------------------------------------------------------


def test_me_shows_the_callers_account_and_where_it_was_read(client, user):
    result = client.simulate_get("/api/users/me/", headers=user.headers)
    assert result.status_code == 200, result.text
    assert_me(result.json, user.username, user.email)
    assert result.headers["X-Gridlink-Read-Source"] in ("cache", "replica", "primary")
    assert client.simulate_get("/api/users/me", headers=user.headers).json == result.json


def test_me_needs_a_token(client):
    for method in ("GET", "PATCH", "DELETE"):
        result = client.simulate_request(method, "/api/users/me/", json={})
        assert_error(result, 401, "unauthenticated")
        assert result.headers["WWW-Authenticate"] == "Token"


def test_patching_display_name_shows_in_me_and_in_the_profile(client, user):
    result = client.simulate_patch(
        "/api/users/me/", headers=user.headers, json={"display_name": "Grace H."}
    )
    assert result.status_code == 200, result.text
    assert_me(result.json, user.username, user.email, "Grace H.")
    me = client.simulate_get("/api/users/me/", headers=user.headers)
    assert me.json["display_name"] == "Grace H."
    profile = client.simulate_get(f"/api/users/{user.username}/")
    assert profile.json["display_name"] == "Grace H."


def test_an_empty_patch_changes_nothing(client, user):
    result = client.simulate_patch("/api/users/me/", headers=user.headers, json={})
    assert result.status_code == 200, result.text
    assert_me(result.json, user.username, user.email)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"display_name": "d" * 65}, "display_name"),
        ({"email": "nope"}, "email"),
        ({"username": "renamed"}, "username"),
        ({"is_admin": True}, "is_admin"),
    ],
)
def test_an_invalid_patch_is_a_400_naming_the_field(client, user, body, field):
    result = client.simulate_patch("/api/users/me/", headers=user.headers, json=body)
    assert list(assert_error(result, 400, "invalid_request")["fields"]) == [field]


def test_a_patch_that_is_not_json_is_refused(client, user):
    headers = {**user.headers, "Content-Type": "text/plain"}
    result = client.simulate_patch("/api/users/me/", headers=headers, body=b"display_name=x")
    assert_error(result, 415, "unsupported_media_type")


# --- account deletion ------------------------------------------------------------------------


def add_grid_with_a_link(services: Services, username: str) -> None:
    """Give the user a grid and a link straight in the database (independent of their API)."""
    with services.primary.begin() as connection:
        connection.execute(
            text(
                """
                WITH g AS (
                    INSERT INTO grids (slug, user_id, title)
                    SELECT 'gr_' || md5(random()::text), id, 'Work' FROM users WHERE username = :u
                    RETURNING id, user_id)
                INSERT INTO links (slug, grid_id, user_id, url, position)
                SELECT 'li_' || md5(random()::text), g.id, g.user_id, 'https://example.com/', 0
                FROM g
                """
            ),
            {"u": username},
        )


def rows_of(services: Services, username: str) -> dict[str, int]:
    with services.primary.connect() as connection:
        return dict(
            connection.execute(
                text(
                    """
                    SELECT 'users', count(*) FROM users WHERE username = :u
                    UNION ALL SELECT 'grids', count(*) FROM grids g
                        JOIN users u ON u.id = g.user_id WHERE u.username = :u
                    UNION ALL SELECT 'profiles', count(*) FROM profile_documents
                        WHERE username = :u
                    """
                ),
                {"u": username},
            ).all()
        )


def test_deleting_the_account_removes_it_its_grids_links_profile_and_tokens(client, services, user):
    add_grid_with_a_link(services, user.username)
    second = login(client, user.username, user.password).json["token"]
    result = client.simulate_delete(
        "/api/users/me/", headers=user.headers, json={"password": user.password}
    )
    assert result.status_code == 204, result.text
    assert rows_of(services, user.username) == {"users": 0, "grids": 0, "profiles": 0}
    with services.primary.connect() as connection:
        orphans = connection.execute(
            text("SELECT count(*) FROM links WHERE user_id NOT IN (SELECT id FROM users)")
        ).scalar_one()
    assert orphans == 0
    assert_error(client.simulate_get(f"/api/users/{user.username}/"), 404, "not_found")
    for token in (user.token, second):
        me = client.simulate_get("/api/users/me/", headers={"Authorization": f"Token {token}"})
        assert_error(me, 401, "unauthenticated")
    assert_error(login(client, user.username, user.password), 401, "unauthenticated")


def test_a_deleted_username_can_be_signed_up_again(client, user):
    client.simulate_delete("/api/users/me/", headers=user.headers, json={"password": user.password})
    result = client.simulate_post(
        "/api/auth/signup/", json=signup_body(username=user.username, email=user.email)
    )
    assert result.status_code == 201, result.text


def test_deleting_with_a_wrong_password_is_a_400_and_keeps_the_account(client, services, user):
    result = client.simulate_delete(
        "/api/users/me/", headers=user.headers, json={"password": "not the password"}
    )
    assert set(assert_error(result, 400, "invalid_request")["fields"]) == {"password"}
    assert rows_of(services, user.username)["users"] == 1
    assert client.simulate_get("/api/users/me/", headers=user.headers).status_code == 200


def test_deleting_without_a_body_asks_for_the_password(client, user):
    result = client.simulate_delete("/api/users/me/", headers=user.headers)
    assert set(assert_error(result, 400, "invalid_request")["fields"]) == {"password"}


# --- what answers never show -----------------------------------------------------------------


def all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for child in value.values() for key in all_keys(child)}
    if isinstance(value, list):
        return {key for child in value for key in all_keys(child)}
    return set()


def test_no_answer_shows_a_password_hash_a_token_hash_or_an_internal_id(client, services):
    answers: list[falcon.testing.Result] = []
    body = signup_body()
    answers.append(client.simulate_post("/api/auth/signup/", json=body))
    token = answers[-1].json["token"]
    headers = {"Authorization": f"Token {token}"}
    answers.append(login(client, body["username"], body["password"]))
    answers.append(login(client, body["username"], "wrong password"))
    answers.append(client.simulate_get("/api/users/me/", headers=headers))
    answers.append(
        client.simulate_patch("/api/users/me/", headers=headers, json={"display_name": "x"})
    )
    answers.append(client.simulate_post("/api/auth/signup/", json=body))
    answers.append(client.simulate_get(f"/api/users/{body['username']}/"))
    with services.primary.connect() as connection:
        user_id, password_hash = connection.execute(
            text("SELECT id, password_hash FROM users WHERE username = :u"),
            {"u": body["username"]},
        ).one()
        token_hashes = (
            connection.execute(
                text("SELECT token_hash FROM auth_tokens WHERE user_id = :id"), {"id": user_id}
            )
            .scalars()
            .all()
        )
    assert len(token_hashes) == 2
    for result in answers:
        shown = result.text + "".join(f"{k}: {v}\n" for k, v in result.headers.items())
        assert "$argon2" not in shown
        assert password_hash not in shown
        for token_hash in map(bytes, token_hashes):
            assert token_hash.hex() not in shown
            assert base64.b64encode(token_hash).decode() not in shown
            assert base64.urlsafe_b64encode(token_hash).decode().rstrip("=") not in shown
        if result.text:
            keys = all_keys(result.json)
            assert not {key for key in keys if key == "id" or key.endswith(("_id", "hash"))}
            assert "password" not in keys


def test_a_signed_up_user_fixture_can_use_the_api(user: ApiUser, client):
    """The shared ``sign_up`` helper (other suites rely on it) gives a working token."""
    assert client.simulate_get("/api/users/me/", headers=user.headers).status_code == 200
    assert sign_up(client).token != user.token
