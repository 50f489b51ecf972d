"""New passwords: common and easily guessed ones refused, offline, however they are dressed up."""

from __future__ import annotations

import secrets

import pytest

from gridlink.accounts.password_rules import account_words, is_guessable, refuse_weak_password
from gridlink.errors import InvalidRequest


@pytest.mark.parametrize(
    "password",
    [
        "password1234",  # a leaked password
        "Password1234!",  # ... capitalised, with a symbol
        "qwertyuiop12",  # a keyboard walk
        "123456789012",  # a sequence
        "aaaaaaaaaaaa",  # a repeat
        "iloveyou2024",  # a leaked password and a year
        "p4ssw0rd1234",  # l33t
        "p" * 128,  # as long as allowed, and still a repeat
        "password" * 16,
    ],
)
def test_common_and_easily_guessed_passwords_are_guessable(password):
    assert is_guessable(password)


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery",
        "analytical engine",
        "tab\there \u202e reversed",
        secrets.token_urlsafe(12),
        secrets.token_urlsafe(96)[:128],
        # Strong from the start, whatever follows.
        secrets.token_urlsafe(30) + "a" * 88,
    ],
)
def test_uncommon_passwords_are_not(password):
    assert not is_guessable(password)


def test_the_accounts_own_words_make_a_password_guessable():
    words = account_words("Grace_Hopper", "grace.hopper@example.com")
    assert not is_guessable("Grace_Hopper1906")
    assert is_guessable("Grace_Hopper1906", words)
    assert is_guessable("grace.hopper1906", words)


def test_a_weak_password_is_refused_naming_the_field():
    with pytest.raises(InvalidRequest) as refused:
        refuse_weak_password("password1234", field="new_password")
    assert refused.value.status == 400
    assert list(refused.value.fields or {}) == ["new_password"]
    assert "common" in (refused.value.fields or {})["new_password"][0]


def test_a_strong_password_passes():
    refuse_weak_password("analytical engine", field="password")
