"""The API as tests use it: users signed up, logins, error answers, grids and links created."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import falcon.testing


def create_grid(
    client: falcon.testing.TestClient, user: ApiUser, title: str = "Work"
) -> dict[str, Any]:
    result = client.simulate_post("/api/grids/", json={"title": title}, headers=user.headers)
    assert result.status_code == 201, result.text
    return dict(result.json)


def create_link(
    client: falcon.testing.TestClient, user: ApiUser, grid: str, **fields: Any
) -> dict[str, Any]:
    body = {"grid": grid, "url": "https://example.com/", **fields}
    result = client.simulate_post("/api/links/", json=body, headers=user.headers)
    assert result.status_code == 201, result.text
    return dict(result.json)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def me_status(client: falcon.testing.TestClient, token: str) -> int:
    return client.simulate_get("/api/users/me/", headers=auth(token)).status_code


def signup_body(**overrides: Any) -> dict[str, Any]:
    username = random_username("s")
    body = {"username": username, "email": f"{username}@example.com", "password": "correct horse"}
    body.update(overrides)
    return body


def login(client: falcon.testing.TestClient, username: str, password: str) -> falcon.testing.Result:
    # A fresh address per call: failures here must not add up in another test's throttle.
    return client.simulate_post(
        "/api/auth/login/",
        json={"username": username, "password": password},
        remote_addr=f"10.0.{secrets.randbelow(250)}.{secrets.randbelow(250)}",
    )


def assert_error(result: falcon.testing.Result, status: int, error_type: str) -> dict[str, Any]:
    assert result.status_code == status, result.text
    error: dict[str, Any] = result.json["error"]
    assert error["type"] == error_type
    assert error["message"]
    return error


def random_username(prefix: str = "u") -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


@dataclass(frozen=True)
class ApiUser:
    username: str
    email: str
    password: str
    token: str
    device: str = ""  # what sign-up answered: present it to log in as a known client

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


def sign_up(client: falcon.testing.TestClient, prefix: str = "u") -> ApiUser:
    """Create a user through the API and return it with its first token."""
    username = random_username(prefix)
    password = secrets.token_urlsafe(12)
    email = f"{username}@example.com"
    result = client.simulate_post(
        "/api/auth/signup/",
        json={"username": username, "email": email, "password": password},
    )
    assert result.status_code == 201, result.text
    return ApiUser(username, email, password, result.json["token"], result.json["device"])
