"""Growth with bounds: `gridlink maintenance`'s retention rules, and the cap on live tokens."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import sys
from typing import Any

import falcon.testing
from sqlalchemy import text

from gridlink.accounts.tokens import hash_token
from gridlink.app import create_app
from gridlink.mail.outbox import deliver_pending_mail
from gridlink.ops.maintenance import run_maintenance
from gridlink.services import Services
from tests.support.abuse import an_address
from tests.support.api import ApiUser, random_username
from tests.support.servers import server_environment


def execute(services: Services, sql: str, **params: Any) -> list[Any]:
    with services.primary.begin() as connection:
        result = connection.execute(text(sql), params)
        return list(result) if result.returns_rows else []


def user_id(services: Services, user: ApiUser) -> int:
    [(found,)] = execute(services, "SELECT id FROM users WHERE username = :u", u=user.username)
    return int(found)


def count(services: Services, table: str, uid: int) -> int:
    [(found,)] = execute(services, f"SELECT count(*) FROM {table} WHERE user_id = :u", u=uid)
    return int(found)


def add_rows(services: Services, uid: int) -> None:
    """Give the user one row that must go and one that must stay, in every table with a rule."""
    for key, age in [("old", "25 hours"), ("new", "1 hour")]:
        execute(
            services,
            "INSERT INTO idempotency_keys (user_id, key, request_hash, status, response_body, "
            f"created_on) VALUES (:u, :k, '\\x00', 201, '\\x7b7d', now() - interval '{age}')",
            u=uid,
            k=key,
        )
    for table, columns in [
        ("auth_tokens", "revoked_on"),
        ("password_resets", "used_on"),
        ("email_changes", "used_on"),
    ]:
        extra = ", new_email" if table == "email_changes" else ""
        extra_value = ", 'x@example.com'" if table == "email_changes" else ""
        for expires, used in [("- interval '1 s'", "NULL"), ("+ interval '1 h'", "now()")]:
            execute(  # expired, and used (or revoked): both go
                services,
                f"INSERT INTO {table} (user_id, token_hash, expires_on, {columns}{extra}) "
                f"VALUES (:u, :h, now() {expires}, {used}{extra_value})",
                u=uid,
                h=secrets.token_bytes(32),
            )
        execute(  # live: stays
            services,
            f"INSERT INTO {table} (user_id, token_hash, expires_on{extra}) "
            f"VALUES (:u, :h, now() + interval '1 h'{extra_value})",
            u=uid,
            h=secrets.token_bytes(32),
        )


def soft_deleted_grid(client: falcon.testing.TestClient, user: ApiUser) -> str:
    grid = client.simulate_post("/api/grids/", headers=user.headers, json={"title": "G"}).json
    link = {"grid": grid["slug"], "url": "https://example.com/"}
    assert client.simulate_post("/api/links/", headers=user.headers, json=link).status_code == 201
    assert client.simulate_delete(f"/api/grids/{grid['slug']}/", headers=user.headers).status_code
    return str(grid["slug"])


def test_maintenance_deletes_exactly_what_its_rules_name(client, services, user):
    uid = user_id(services, user)
    add_rows(services, uid)
    old_grid, recent_grid = soft_deleted_grid(client, user), soft_deleted_grid(client, user)
    live_grid = client.simulate_post("/api/grids/", headers=user.headers, json={"title": "L"})
    for table in ("grids", "links"):
        execute(
            services,
            f"UPDATE {table} SET deleted_on = now() - interval '31 days' WHERE "
            + (
                "slug = :s"
                if table == "grids"
                else "grid_id = (SELECT id FROM grids WHERE slug = :s)"
            ),
            s=old_grid,
        )

    lines: list[str] = []
    run_maintenance(services.primary, services.settings, lines.append)

    assert count(services, "idempotency_keys", uid) == 1
    # The sign-up's token is live and stays, with the live one added.
    assert count(services, "auth_tokens", uid) == 2
    assert count(services, "password_resets", uid) == 1
    assert count(services, "email_changes", uid) == 1
    grids = {
        slug for (slug,) in execute(services, "SELECT slug FROM grids WHERE user_id = :u", u=uid)
    }
    assert grids == {recent_grid, live_grid.json["slug"]}
    assert count(services, "links", uid) == 1  # the recently deleted grid's link
    assert lines[-1].startswith("maintenance done: ")
    assert client.simulate_get("/api/users/me/", headers=user.headers).status_code == 200


def test_maintenance_runs_in_batches_and_a_second_run_finds_nothing(services, client, user):
    uid = user_id(services, user)
    for _ in range(5):
        execute(
            services,
            "INSERT INTO password_resets (user_id, token_hash, expires_on) "
            "VALUES (:u, :h, now() - interval '1 s')",
            u=uid,
            h=secrets.token_bytes(32),
        )
    lines: list[str] = []
    first = run_maintenance(services.primary, services.settings, lines.append, batch_size=2)
    assert first["password resets used or expired"] >= 5
    assert any("password resets used or expired: 2 deleted so far" in line for line in lines)
    second = run_maintenance(services.primary, services.settings, lambda line: None)
    assert second["password resets used or expired"] == 0
    assert count(services, "password_resets", uid) == 0


def test_the_maintenance_command_prints_a_summary(settings):
    environment = server_environment(settings)
    done = subprocess.run(
        [sys.executable, "-m", "gridlink.cli", "maintenance"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "maintenance done:" in done.stdout


def test_mail_older_than_its_tokens_is_dropped_unsent(services):
    address = f"{random_username('stale')}@example.com"
    execute(
        services,
        "INSERT INTO mail_outbox (to_address, subject, body, created_on) "
        "VALUES (:a, 'old', 'a dead token', now() - interval '2 hours')",
        a=address,
    )
    sent: list[str] = []

    class Recording:
        def send(self, to: str, subject: str, body: str) -> None:
            sent.append(to)

    deliver_pending_mail(services.primary, Recording())
    assert address not in sent
    assert execute(services, "SELECT 1 FROM mail_outbox WHERE to_address = :a", a=address) == []


def test_a_login_past_the_token_cap_revokes_the_oldest_token_at_once(services, client, user):
    capped = dataclasses.replace(
        services, settings=services.settings.replace(max_tokens_per_user=3)
    )
    app = falcon.testing.TestClient(create_app(capped.settings, capped))
    # The first token is in use, so it is in the token cache too.
    assert app.simulate_get("/api/users/me/", headers=user.headers).status_code == 200
    tokens = [user.token]
    for _ in range(3):
        login = app.simulate_post(
            "/api/auth/login/",
            json={"username": user.username, "password": user.password},
            remote_addr=an_address(),
        )
        assert login.status_code == 200
        tokens.append(login.json["token"])

    def me(token: str) -> int:
        status: int = app.simulate_get(
            "/api/users/me/", headers={"Authorization": f"Token {token}"}
        ).status_code
        return status

    assert [me(token) for token in tokens] == [401, 200, 200, 200]
    [(revoked_on,)] = execute(
        services,
        "SELECT revoked_on FROM auth_tokens WHERE token_hash = :h",
        h=hash_token(user.token),
    )
    assert revoked_on is not None
