"""What the abuse tests share: a user's whole state on the primary, and error-body checks.

"Nothing changed" is checked on the primary itself (every row the user owns,
their account row, tokens, resets, idempotency keys and their read-model
document), not through the API, whose reads may come from a cache or replica.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import falcon.testing
import orjson
import pytest
from sqlalchemy import text

import gridlink.accounts.passwords
from gridlink.accounts.passwords import hash_password
from gridlink.app import create_app
from gridlink.services import Services
from tests.support.api import ApiUser, sign_up

FAST_PASSWORD = "the fast sign-up password"


@functools.cache
def _fast_password_hash() -> str:
    return hash_password(FAST_PASSWORD)


def fast_sign_up(client: falcon.testing.TestClient, prefix: str = "u") -> ApiUser:
    """Sign up through the API, with a password hashed once per run (hashing costs ~0.3 s).

    The hostile-input tests need a fresh user for each of about a thousand
    cases; everything but the hashing is the real sign-up.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            gridlink.accounts.passwords, "hash_password", lambda password: _fast_password_hash()
        )
        user = sign_up(client, prefix)
    return ApiUser(user.username, user.email, FAST_PASSWORD, user.token, user.device)


# Everything the primary holds for one user, each table as a sorted list of rows.
_STATE_QUERIES = {
    "user": "SELECT username, email, password_hash, display_name, is_admin, modified_on "
    "FROM users WHERE id = :user_id",
    "grids": "SELECT slug, title, modified_on, is_deleted FROM grids WHERE user_id = :user_id "
    "ORDER BY slug",
    "links": "SELECT l.slug, g.slug, l.title, l.url, l.background, l.width, l.height, "
    "l.position, l.modified_on, l.is_deleted FROM links l JOIN grids g ON g.id = l.grid_id "
    "WHERE l.user_id = :user_id ORDER BY l.slug",
    "tokens": "SELECT token_hash, revoked_on FROM auth_tokens WHERE user_id = :user_id "
    "ORDER BY token_hash",
    "resets": "SELECT count(*) FROM password_resets WHERE user_id = :user_id",
    "idempotency": "SELECT count(*) FROM idempotency_keys WHERE user_id = :user_id",
    "profile": "SELECT version, document FROM profile_documents WHERE user_id = :user_id",
}


def primary_state(services: Services, username: str) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row the primary holds for ``username`` (empty lists if there is no user)."""
    with services.primary.connect() as connection:
        user_id = connection.execute(
            text("SELECT id FROM users WHERE username = :username"), {"username": username}
        ).scalar_one_or_none()
        return {
            name: [tuple(row) for row in connection.execute(text(query), {"user_id": user_id})]
            for name, query in _STATE_QUERIES.items()
        }


@contextmanager
def nothing_changes_on_primary(services: Services, *usernames: str) -> Iterator[None]:
    """Check that the block leaves every row the primary holds for ``usernames`` as it was."""
    before = {username: primary_state(services, username) for username in usernames}
    yield
    after = {username: primary_state(services, username) for username in usernames}
    assert after == before


def app_with(services: Services, **changes: Any) -> falcon.testing.TestClient:
    """A server process with other settings, on the same servers."""
    tuned = dataclasses.replace(services, settings=services.settings.replace(**changes))
    return falcon.testing.TestClient(create_app(tuned.settings, tuned))


def an_address() -> str:
    """A client address of the test's own, so no limit per address is shared between tests."""
    # Limits count an IPv6 client per /64: the random part is in the network.
    return f"2001:db8:{secrets.token_hex(2)}:{secrets.token_hex(2)}::1"


# What an error body must never show.
_LEAKS = {
    "a stack trace": re.compile(r"Traceback|File \"|line \d+, in "),
    "SQL": re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b.*\b(FROM|INTO|SET|WHERE)\b", re.I),
    "a driver or ORM name": re.compile(r"psycopg|sqlalchemy|marshmallow|redis\.|falcon\.", re.I),
    "a password hash": re.compile(r"\$argon2"),
    "a token hash or other long hex": re.compile(r"(\\x)?[0-9a-f]{40,}", re.I),
    "an internal key": re.compile(r"\b(user_id|grid_id|link_id|token_hash|password_hash)\b"),
}
# The only numbers an error message may carry: the limits API.md documents.
_DOCUMENTED_NUMBERS = {"0", "1", "3", "4", "8", "12", "24", "30", "64", "100", "128", "254"}
_DOCUMENTED_NUMBERS |= {"255"}
_DOCUMENTED_NUMBERS |= {"256", "512", "2048", "10000"}


def leaks_in(body: bytes) -> list[str]:
    """Name what an error ``body`` shows that it must not (empty: nothing).

    The names in ``fields`` are the client's own (an unknown field is named
    back as sent); the messages are the server's, and are what is searched.
    """
    error = orjson.loads(body)["error"]
    said = " ".join([error["message"], *(p for ps in error.get("fields", {}).values() for p in ps)])
    found = [what for what, pattern in _LEAKS.items() if pattern.search(said)]
    text_only = re.sub(r"\b[A-Za-z_]+\d+\b|(gr|li)_[0-9a-f]{32}", "", said)
    numbers = set(re.findall(r"\d+", text_only)) - _DOCUMENTED_NUMBERS
    if numbers:
        found.append(f"numbers that may be internal ids: {sorted(numbers)}")
    return found


def assert_clean_error(status: int, body: bytes, expected_status: int | None = None) -> str:
    """Assert an API.md error body with nothing leaked; return its type.

    The status must be ``expected_status``, or any 4xx if none is given.
    """
    if expected_status is None:
        assert 400 <= status < 500, (status, body[:300])
    else:
        assert status == expected_status, (status, body[:300])
    parsed = orjson.loads(body)
    assert set(parsed) == {"error"}, parsed
    error = parsed["error"]
    assert set(error) <= {"type", "message", "fields"}, error
    assert isinstance(error["type"], str), error
    assert isinstance(error["message"], str), error
    if "fields" in error:
        assert all(
            isinstance(problems, list) and all(isinstance(p, str) for p in problems)
            for problems in error["fields"].values()
        ), error
    assert leaks_in(body) == [], (leaks_in(body), body[:300])
    return str(error["type"])


def assert_clean_result(result: falcon.testing.Result, expected_status: int | None = None) -> str:
    """``assert_clean_error`` for an in-process answer."""
    return assert_clean_error(result.status_code, result.content, expected_status)
