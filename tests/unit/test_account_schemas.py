"""The accounts schemas: what a request may hold, and how Me is written."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gridlink.errors import InvalidRequest
from gridlink.schemas.accounts import (
    LoginIn,
    MeOut,
    MeUpdateIn,
    PasswordChangeIn,
    PasswordResetConfirmIn,
    SignupIn,
)
from gridlink.schemas.base import NoBodyIn, load

VALID = {"username": "Ada_1815", "email": "ada@example.com", "password": "analytical engine"}


@pytest.mark.parametrize("username", ["abc", "A" * 30, "under_score", "123", "MiXeD"])
def test_usernames_of_3_to_30_letters_digits_or_underscores_are_accepted(username):
    assert load(SignupIn(), {**VALID, "username": username})["username"] == username


@pytest.mark.parametrize(
    "username", ["ab", "A" * 31, "dot.ted", "da-sh", "sp ace", "émile", "new\nline", "tab\t", ""]
)
def test_other_usernames_are_refused(username):
    with pytest.raises(InvalidRequest) as refused:
        load(SignupIn(), {**VALID, "username": username})
    assert list(refused.value.fields or {}) == ["username"]


def test_display_name_defaults_to_empty():
    assert load(SignupIn(), VALID)["display_name"] == ""


def test_every_problem_is_named_at_once():
    with pytest.raises(InvalidRequest) as refused:
        load(SignupIn(), {"username": "x", "email": "nope", "password": "short", "extra": 1})
    assert refused.value.fields == {
        "username": ["Use 3 to 30 letters (A-Z, a-z), digits or underscores."],
        "email": ["Not a valid email address."],
        "password": ["Length must be between 12 and 128."],
        "extra": ["Unknown field."],
    }


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        (SignupIn, "password"),
        (PasswordChangeIn, "new_password"),
        (PasswordResetConfirmIn, "new_password"),
    ],
)
@pytest.mark.parametrize("password", ["Short pw 1", "x" * 11, "x" * 129])
def test_a_new_password_of_fewer_than_12_or_more_than_128_characters_is_refused(
    schema, field, password
):
    body = {**VALID, "current_password": "x", "token": "t"}
    body = {name: body[name] for name in schema().fields if name in body}
    with pytest.raises(InvalidRequest) as refused:
        load(schema(), {**body, field: password})
    assert refused.value.fields == {field: ["Length must be between 12 and 128."]}


def test_login_takes_any_non_empty_password():
    # Old passwords may predate today's rules; a wrong one is a 401, decided later.
    assert load(LoginIn(), {"username": "ada", "password": "x"})["password"] == "x"


def test_a_patch_may_leave_every_field_out():
    assert load(MeUpdateIn(), {}) == {}


def test_no_body_schema_refuses_any_field():
    with pytest.raises(InvalidRequest) as refused:
        load(NoBodyIn(), {"everywhere": True})
    assert refused.value.fields == {"everywhere": ["Unknown field."]}


def test_me_is_written_with_an_rfc3339_utc_time_with_microseconds():
    paris = timezone(timedelta(hours=1))
    me = MeOut().dump(
        {
            "username": "ada",
            "email": "ada@example.com",
            "display_name": "",
            "is_admin": False,
            "created_on": datetime(2026, 11, 27, 11, 0, 0, 123, tzinfo=paris),
            "password_hash": "$argon2id$...",
            "id": 7,
        }
    )
    assert me == {
        "username": "ada",
        "email": "ada@example.com",
        "display_name": "",
        "is_admin": False,
        "created_on": "2026-11-27T10:00:00.000123Z",
    }
