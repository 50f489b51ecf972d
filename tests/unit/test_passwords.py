"""Password hashing: argon2id, and the same work whether or not the account exists."""

from __future__ import annotations

from typing import Any

import pytest

from gridlink.accounts import passwords


def test_a_password_is_stored_as_an_argon2id_hash():
    hashed = passwords.hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed


def test_the_right_password_matches_and_a_wrong_one_does_not():
    hashed = passwords.hash_password("correct horse")
    assert passwords.verify_password(hashed, "correct horse")
    assert not passwords.verify_password(hashed, "correct horse ")
    assert not passwords.verify_password(hashed, "")


def test_the_same_password_hashes_differently_each_time():
    assert passwords.hash_password("same") != passwords.hash_password("same")


class SpyHasher:
    """Record which hashes are verified; do everything else as the real hasher."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.verified: list[str] = []

    def verify(self, hashed: str, password: str) -> bool:
        self.verified.append(hashed)
        return bool(self.real.verify(hashed, password))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_missing_account_is_checked_against_a_dummy_hash(monkeypatch: pytest.MonkeyPatch):
    spy = SpyHasher(passwords._HASHER)
    monkeypatch.setattr(passwords, "_HASHER", spy)
    assert not passwords.verify_password(None, "any password")
    [dummy] = spy.verified
    # Same algorithm and parameters as a real hash: the same work, the same time.
    real = passwords.hash_password("x")
    assert dummy.split("$")[1:4] == real.split("$")[1:4]


def test_the_dummy_hash_never_matches_even_its_own_password():
    assert not passwords.verify_password(None, passwords._dummy_hash())


def test_a_corrupt_stored_hash_is_a_mismatch_not_a_crash():
    assert not passwords.verify_password("not-a-hash", "whatever")


def test_a_fresh_hash_needs_no_rehash_and_a_weaker_one_does():
    assert not passwords.needs_rehash(passwords.hash_password("x"))
    weak = "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ"
    assert passwords.needs_rehash(weak)
