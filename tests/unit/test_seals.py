"""Seals on cached identity: only the server's keys make an entry that opens, for its own token."""

from __future__ import annotations

import pytest

from gridlink.accounts.seals import Seal, new_key
from gridlink.settings import Settings, SettingsError

PAYLOAD = b'{"user_id": 7, "username": "ada", "is_admin": false}'


def test_a_sealed_entry_opens_for_its_own_context_only():
    seal = Seal([new_key()])
    sealed = seal.seal(b"token-a", PAYLOAD)

    assert seal.open(b"token-a", sealed) == PAYLOAD
    assert seal.open(b"token-b", sealed) is None


@pytest.mark.parametrize(
    "forge",
    [
        lambda sealed: sealed.replace(b'"is_admin": false', b'"is_admin": true'),
        lambda sealed: sealed[:-1],
        lambda sealed: PAYLOAD,
        lambda sealed: b"." + PAYLOAD,
        lambda sealed: b"A" * 43 + b"." + PAYLOAD,
        lambda sealed: b"",
    ],
)
def test_a_changed_or_hand_written_entry_does_not_open(forge):
    seal = Seal([new_key()])
    assert seal.open(b"token-a", forge(seal.seal(b"token-a", PAYLOAD))) is None


def test_another_servers_key_does_not_open_it():
    sealed = Seal([new_key()]).seal(b"token-a", PAYLOAD)
    assert Seal([new_key()]).open(b"token-a", sealed) is None


def test_rotation_seals_with_the_first_key_and_opens_with_any_listed():
    old, new = new_key(), new_key()
    sealed_before = Seal([old]).seal(b"t", PAYLOAD)
    during = Seal([new, old])
    sealed_during = during.seal(b"t", PAYLOAD)

    assert during.open(b"t", sealed_before) == PAYLOAD
    assert Seal([new]).open(b"t", sealed_during) == PAYLOAD
    assert Seal([new]).open(b"t", sealed_before) is None


def test_without_keys_each_process_gets_its_own():
    assert Seal.for_keys(()).open(b"t", Seal.for_keys(()).seal(b"t", PAYLOAD)) is None
    with pytest.raises(ValueError, match="at least one key"):
        Seal([])


def test_the_keys_setting_refuses_short_or_repeated_keys_without_repeating_them():
    key = new_key()
    assert Settings.from_env(
        {"GRIDLINK_TOKEN_CACHE_KEYS": f" {key} , {key[::-1]}"}
    ).token_cache_keys == (
        key,
        key[::-1],
    )
    for raw in ("short-key", f"{key},{key}"):
        with pytest.raises(SettingsError) as refused:
            Settings.from_env({"GRIDLINK_TOKEN_CACHE_KEYS": raw})
        assert "GRIDLINK_TOKEN_CACHE_KEYS" in str(refused.value)
        assert raw not in str(refused.value)
        assert key not in str(refused.value)


def test_a_bad_url_is_named_without_its_password():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"GRIDLINK_REDIS_URL": "ftp://api:hunter2-is-secret@10.0.0.5/0"})
    assert "hunter2-is-secret" not in str(refused.value)
    assert "api:***@10.0.0.5" in str(refused.value)
