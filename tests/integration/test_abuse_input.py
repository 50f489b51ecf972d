"""Hostile input in every field, body, header and query parameter: a clean 4xx, never a 5xx.

Every case is sent by a user of its own with a grid and a link. A refused
request (4xx) must carry API.md's error body with nothing leaked, and leave
every row of that user on the primary as it was. A hostile string that is a
valid value (SQL in a title, say) is accepted and kept exactly as sent: it is
data, never code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import falcon.testing
import pytest

from gridlink.services import Services
from tests.support.abuse import an_address, assert_clean_result, fast_sign_up, primary_state
from tests.support.api import ApiUser, create_grid, create_link, random_username


def encode(body: dict[str, Any]) -> bytes:
    # The standard library's encoder: orjson refuses integers past 64 bits.
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Target:
    user: ApiUser
    grid: str
    link: str


@pytest.fixture
def target(client: falcon.testing.TestClient) -> Target:
    user = fast_sign_up(client, "fuzz")
    grid = create_grid(client, user)["slug"]
    return Target(user, grid, create_link(client, user, grid)["slug"])


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: Callable[[Target], str]
    body: Callable[[Target], dict[str, Any]]
    authenticated: bool = True


def _fresh_signup(t: Target) -> dict[str, Any]:
    username = random_username("new")
    return {
        "username": username,
        "email": f"{username}@example.com",
        "password": "a password 1",
        "display_name": "New",
    }


ENDPOINTS: dict[str, Endpoint] = {
    "signup": Endpoint("POST", lambda t: "/api/auth/signup/", _fresh_signup, False),
    "login": Endpoint(
        "POST",
        lambda t: "/api/auth/login/",
        lambda t: {"username": t.user.username, "password": t.user.password},
        False,
    ),
    "logout": Endpoint("POST", lambda t: "/api/auth/logout/", lambda t: {}),
    "logout-all": Endpoint("POST", lambda t: "/api/auth/logout-all/", lambda t: {}),
    "password change": Endpoint(
        "POST",
        lambda t: "/api/auth/password/change/",
        lambda t: {"current_password": t.user.password, "new_password": "a new password"},
    ),
    "password reset": Endpoint(
        "POST", lambda t: "/api/auth/password/reset/", lambda t: {"email": t.user.email}, False
    ),
    "password reset confirm": Endpoint(
        "POST",
        lambda t: "/api/auth/password/reset/confirm/",
        lambda t: {"token": "x" * 43, "new_password": "a new password"},
        False,
    ),
    "patch me": Endpoint(
        "PATCH", lambda t: "/api/users/me/", lambda t: {"display_name": "Me", "email": t.user.email}
    ),
    "delete me": Endpoint(
        "DELETE", lambda t: "/api/users/me/", lambda t: {"password": "not the password"}
    ),
    "create grid": Endpoint("POST", lambda t: "/api/grids/", lambda t: {"title": "A grid"}),
    "rename grid": Endpoint(
        "PATCH", lambda t: f"/api/grids/{t.grid}/", lambda t: {"title": "Renamed"}
    ),
    "delete grid": Endpoint("DELETE", lambda t: f"/api/grids/{t.grid}/", lambda t: {}),
    "create link": Endpoint(
        "POST",
        lambda t: "/api/links/",
        lambda t: {
            "grid": t.grid,
            "url": "https://example.com/",
            "title": "A link",
            "background": "/bg.jpg",
            "width": 2,
            "height": 1,
            "position": 3,
        },
    ),
    "change link": Endpoint(
        "PATCH",
        lambda t: f"/api/links/{t.link}/",
        lambda t: {
            "grid": t.grid,
            "url": "https://example.org/",
            "title": "Changed",
            "background": "https://example.org/bg.png",
            "width": 3,
            "height": 2,
            "position": 1,
        },
    ),
    "delete link": Endpoint("DELETE", lambda t: f"/api/links/{t.link}/", lambda t: {}),
}

# Values for a field, hostile in content or in type.
HOSTILE_VALUES: dict[str, Any] = {
    "sql quote": "' OR '1'='1' --",
    "sql statement": "x'; DROP TABLE users; --",
    "sql sleep": "1; SELECT pg_sleep(10)",
    "nul byte": "ab\x00cd",
    "control characters": "a\r\nSet-Cookie: x=1\x1b[2J",
    "right-to-left override": "\u202egnp.exe",
    "zero-width and bom": "\ufeff\u200b\u200d",
    "astral plane over the limit": "\U0001d54f" * 600,
    "combining marks": "e" + "\u0301" * 300,
    "very long": "a" * 20000,
    "empty": "",
    "huge integer": 10**30,
    "negative integer": -(2**63),
    "float": 1.5,
    "boolean": True,
    "null": None,
    "list": ["a", 1],
    "object": {"$gt": ""},
    "path traversal": "../../../../etc/passwd",
    "javascript url": "javascript:alert(1)",
    "html": "<script>alert(1)</script>",
}

# Only to list each endpoint's fields.
_ANYONE = Target(ApiUser("anyone", "anyone@example.com", "password", "token"), "gr_", "li_")

FIELD_CASES = [
    pytest.param(endpoint, field, value, id=f"{name}-{field}-{value_id}")
    for name, endpoint in ENDPOINTS.items()
    for field in sorted(endpoint.body(_ANYONE))
    for value_id, value in HOSTILE_VALUES.items()
]


def send(
    client: falcon.testing.TestClient,
    endpoint: Endpoint,
    target: Target,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> falcon.testing.Result:
    sent = {"Content-Type": content_type, **(headers or {})}
    if endpoint.authenticated:
        sent.update(target.user.headers)
    # An address of its own: no login or reset limit is shared with other tests.
    return client.simulate_request(
        endpoint.method, endpoint.path(target), body=body, headers=sent, remote_addr=an_address()
    )


def assert_refused_and_unchanged(
    services: Services, target: Target, send_it: Callable[[], falcon.testing.Result]
) -> falcon.testing.Result:
    before = primary_state(services, target.user.username)
    result = send_it()
    assert result.status_code < 500, result.text
    if result.status_code >= 400:
        assert_clean_result(result)
        assert primary_state(services, target.user.username) == before
    return result


@pytest.mark.parametrize(("endpoint", "field", "value"), FIELD_CASES)
def test_a_hostile_field_is_refused_cleanly_or_kept_exactly(
    client, services, target, endpoint, field, value
):
    body = {**endpoint.body(target), field: value}
    result = assert_refused_and_unchanged(
        services, target, lambda: send(client, endpoint, target, encode(body))
    )
    if result.status_code < 300 and result.content:
        answered = result.json.get("user", result.json)
        if field in answered:
            assert answered[field] == value


MASS_ASSIGNMENT = {
    "is_admin": True,
    "id": 1,
    "user_id": 1,
    "user": "someone_else",
    "slug": "gr_" + "0" * 32,
    "created_on": "2000-01-01T00:00:00.000000Z",
    "password_hash": "$argon2id$",
}


@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@pytest.mark.parametrize(("field", "value"), MASS_ASSIGNMENT.items(), ids=MASS_ASSIGNMENT.keys())
def test_a_field_the_endpoint_does_not_take_is_a_400_naming_it(
    client, services, target, endpoint, field, value
):
    body = {**endpoint.body(target), field: value}
    result = assert_refused_and_unchanged(
        services, target, lambda: send(client, endpoint, target, encode(body))
    )
    assert result.status_code == 400
    assert field in result.json["error"]["fields"]


RAW_BODIES: dict[str, tuple[bytes, str]] = {
    "invalid utf-8": (b'{"title": "\xff\xfe"}', "application/json"),
    "lone surrogate": (b'{"title": "\\ud800"}', "application/json"),
    "deeply nested": (b'{"title": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json"),
    "nested within the depth limit": (
        b'{"t": ' + b"[" * 500 + b"]" * 500 + b"}",
        "application/json",
    ),
    "number too large for a double": (b'{"width": 1e400}', "application/json"),
    "huge integer literal": (b'{"width": ' + b"9" * 5000 + b"}", "application/json"),
    "truncated": (b'{"title": "a', "application/json"),
    "trailing garbage": (b'{"title": "a"} x', "application/json"),
    "a list": (b"[1, 2]", "application/json"),
    "a string": (b'"title"', "application/json"),
    "null": (b"null", "application/json"),
    "empty": (b"", "application/json"),
    "byte order mark": (b'\xef\xbb\xbf{"title": "a"}', "application/json"),
    "10 MB": (b'{"title": "' + b"a" * 10_000_000 + b'"}', "application/json"),
    "just over 64 KiB": (b'{"title": "' + b"a" * (64 * 1024) + b'"}', "application/json"),
    "form encoded": (b"title=a", "application/x-www-form-urlencoded"),
    "text": (b'{"title": "a"}', "text/plain"),
    "multipart": (b"--x\r\n\r\na\r\n--x--", "multipart/form-data; boundary=x"),
    "content type with odd parameters": (b'{"title": "a"}', "application/json; charset=ebcdic"),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@pytest.mark.parametrize(("raw", "content_type"), RAW_BODIES.values(), ids=RAW_BODIES.keys())
def test_a_hostile_body_is_a_clean_4xx_or_harmless(
    client, services, target, endpoint, raw, content_type
):
    result = assert_refused_and_unchanged(
        services, target, lambda: send(client, endpoint, target, raw, content_type)
    )
    if len(raw) > 64 * 1024:
        assert result.status_code == 413


HOSTILE_HEADERS: dict[str, dict[str, str]] = {
    "sql in the token": {"Authorization": "Token ' OR 1=1 --"},
    "a long token": {"Authorization": "Token " + "a" * 8000},
    "another scheme": {"Authorization": "Bearer abc"},
    "a scheme alone": {"Authorization": "Token"},
    "non-ascii token": {"Authorization": "Token \u00e9\u00e8"},
    "idempotency key too long": {"Idempotency-Key": "k" * 256},
    "idempotency key with control characters": {"Idempotency-Key": "a\tb"},
    "idempotency key non-ascii": {"Idempotency-Key": "cl\u00e9"},
    "odd request id": {"X-Request-Id": "<script>" + "x" * 300},
    "odd if-none-match": {"If-None-Match": 'W/"", "\u00e9", *, ,,'},
}


@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@pytest.mark.parametrize("headers", HOSTILE_HEADERS.values(), ids=HOSTILE_HEADERS.keys())
def test_a_hostile_header_is_a_clean_4xx_or_harmless(client, services, target, endpoint, headers):
    body = encode(endpoint.body(target))
    result = assert_refused_and_unchanged(
        services,
        target,
        lambda: client.simulate_request(
            endpoint.method,
            endpoint.path(target),
            body=body,
            headers={"Content-Type": "application/json", **target.user.headers, **headers},
            remote_addr=an_address(),
        ),
    )
    if "X-Request-Id" in headers:
        assert result.headers["X-Request-Id"] != headers["X-Request-Id"]


# --- query parameters and path segments ---------------------------------------------------

HOSTILE_TEXT = {
    "sql": "' OR 1=1 --",
    "nul": "\x00",
    "invalid utf-8": "%FF%FE",
    "percent-encoded nul": "%00",
    "very long": "a" * 10000,
    "unicode digits": "\u0661\u0660",
    "negative": "-1",
    "huge": "9" * 400,
    "exponent": "1e2",
    "spaces": " 1 ",
    "slug with a newline": "gr_" + "0" * 32 + "%0A",
    "traversal": "..%2F..%2Fetc%2Fpasswd",
    "empty": "",
}

QUERY_ENDPOINTS = {
    "my grids": ("/api/grids/", ("limit", "starting_after")),
    "my links": ("/api/links/", ("limit", "starting_after")),
    "a grid's links": ("/api/links/", ("grid", "limit", "starting_after")),
}


@pytest.mark.parametrize(
    ("path", "parameter", "value"),
    [
        pytest.param(path, parameter, value, id=f"{name}-{parameter}-{value_id}")
        for name, (path, parameters) in QUERY_ENDPOINTS.items()
        for parameter in parameters
        for value_id, value in HOSTILE_TEXT.items()
    ],
)
def test_a_hostile_query_parameter_is_a_clean_4xx_or_a_page(client, target, path, parameter, value):
    query = f"{parameter}={value if '%' in value else quote(value)}"
    if parameter != "grid" and path == "/api/links/" and "grid" in query:
        query += f"&grid={target.grid}"
    result = client.simulate_get(path, query_string=query, headers=target.user.headers)
    assert result.status_code < 500, result.text
    if result.status_code >= 400:
        assert_clean_result(result)
    else:
        assert set(result.json) == {"data", "has_more"}


PATH_CASES = [
    pytest.param(method, prefix, value, id=f"{method}-{prefix}-{value_id}")
    for value_id, value in HOSTILE_TEXT.items()
    if value  # an empty segment is the collection itself, covered above
    for prefix in ("/api/users/", "/api/grids/", "/api/links/")
    for method in ("GET", "PATCH", "DELETE")
    if prefix != "/api/users/" or method == "GET"  # profiles are read-only
]


@pytest.mark.parametrize(("method", "prefix", "value"), PATH_CASES)
def test_a_hostile_path_segment_is_a_clean_4xx(client, services, target, method, prefix, value):
    segment = value if "%" in value else quote(value, safe="")
    result = assert_refused_and_unchanged(
        services,
        target,
        lambda: client.simulate_request(
            method,
            prefix + segment + "/",
            json={"title": "x"},
            headers=target.user.headers,
        ),
    )
    assert result.status_code >= 400
