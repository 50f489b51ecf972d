"""Tokens: how they are checked, cached and revoked, in one server process and across two."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import falcon.testing
import orjson
import pytest
from sqlalchemy import text

from gridlink.accounts.seals import Seal, new_key
from gridlink.accounts.tokens import hash_token, new_token
from gridlink.app import create_app
from gridlink.cache import TOKEN_CACHE_SECONDS, TokenCache
from gridlink.cli import main
from gridlink.errors import Unauthenticated
from gridlink.services import Services
from gridlink.settings import Settings
from tests.support.api import ApiUser, assert_error, auth, login, me_status, random_username
from tests.support.queries import count_queries, count_redis_round_trips
from tests.support.security_log import security_events
from tests.support.servers import server_environment


def forget_cached(services: Services, token: str) -> None:
    """Drop the token's cache entry, as its short lifetime would."""
    services.redis.delete(services.token_cache.key(hash_token(token)))


@pytest.fixture(scope="module")
def second_process(settings: Settings) -> Iterator[falcon.testing.TestClient]:
    """Another server process: its own connection pools, nothing shared in memory."""
    services = Services.connect(settings)
    yield falcon.testing.TestClient(create_app(settings, services))
    services.close()


# --- the Authorization header ----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Token not-a-real-token",
        "Token ",
        "Bearer abcdef",
        "abcdef",
        "Token " + "A" * 43,
    ],
)
def test_a_garbage_or_unknown_token_is_a_401(client, header):
    for result in (
        client.simulate_get("/api/users/me/", headers={"Authorization": header}),
        # Even where no token is needed: a client must not mistake a dead token for a live one.
        client.simulate_post(
            "/api/auth/login/", headers={"Authorization": header}, json={"username": "x"}
        ),
    ):
        assert_error(result, 401, "unauthenticated")
        assert result.headers["WWW-Authenticate"] == "Token"


def test_the_token_scheme_name_is_case_insensitive(client, user):
    result = client.simulate_get("/api/users/me/", headers={"Authorization": f"token {user.token}"})
    assert result.status_code == 200


def test_an_expired_token_is_a_401(client, services, user):
    with services.primary.begin() as connection:
        connection.execute(
            text(
                "UPDATE auth_tokens SET expires_on = now() - interval '1 second'"
                " WHERE token_hash = :h"
            ),
            {"h": hash_token(user.token)},
        )
    forget_cached(services, user.token)
    assert_error(
        client.simulate_get("/api/users/me/", headers=user.headers), 401, "unauthenticated"
    )


def test_tokens_expire_after_the_configured_number_of_days(client, services, user):
    with services.primary.connect() as connection:
        lifetime = connection.execute(
            text("SELECT expires_on - created_on FROM auth_tokens WHERE token_hash = :h"),
            {"h": hash_token(user.token)},
        ).scalar_one()
    assert abs(lifetime.total_seconds() - services.settings.token_ttl_days * 86400) < 60


def test_only_a_hash_of_the_token_is_stored(services, user):
    with services.primary.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT token_hash FROM auth_tokens t JOIN users u ON u.id = t.user_id"
                " WHERE u.username = :u"
            ),
            {"u": user.username},
        ).scalar_one()
    assert bytes(stored) == hash_token(user.token)
    assert user.token.encode() not in bytes(stored)


# --- the token cache -------------------------------------------------------------------------


def test_a_cached_token_check_costs_no_database_query(services, user):
    services.token_cache.authenticate(user.token)
    with count_queries(services.primary, *services.replicas) as counted:
        principal = services.token_cache.authenticate(user.token)
    assert counted.count == 0
    assert principal.username == user.username


def test_a_token_just_issued_is_in_the_cache_before_the_answer(client, services, user):
    token = login(client, user.username, user.password).json["token"]
    assert services.redis.exists(services.token_cache.key(hash_token(token)))
    with count_queries(services.primary, *services.replicas) as counted:
        services.token_cache.authenticate(token)
    assert counted.count == 0


def test_a_cache_miss_reads_the_primary_never_a_lagging_replica(services, user):
    forget_cached(services, user.token)
    with (
        count_queries(services.primary) as on_primary,
        count_queries(*services.replicas) as on_replicas,
    ):
        services.token_cache.authenticate(user.token)
    assert (on_primary.count, on_replicas.count) == (1, 0)


def test_cache_entries_are_short_lived(client, services, user):
    key = services.token_cache.key(hash_token(user.token))
    assert 0 < services.redis.ttl(key) <= TOKEN_CACHE_SECONDS
    client.simulate_post("/api/auth/logout/", headers=user.headers)
    assert 0 < services.redis.ttl(key) <= TOKEN_CACHE_SECONDS


def test_the_cache_holds_no_token_in_the_clear(services, user):
    raw = services.redis.get(services.token_cache.key(hash_token(user.token)))
    assert raw is not None
    assert user.token.encode() not in raw
    assert not any(
        user.token.encode() in key
        for key in services.redis.keys(f"{services.cache.keyspace()}:token:*")
    )


def test_an_unknown_token_is_remembered_as_not_valid(services):
    unknown = new_token()
    with pytest.raises(Unauthenticated):
        services.token_cache.authenticate(unknown)
    with (
        count_queries(services.primary, *services.replicas) as counted,
        pytest.raises(Unauthenticated),
    ):
        services.token_cache.authenticate(unknown)
    assert counted.count == 0


@pytest.mark.parametrize(
    "token",
    [
        "not-a-real-token",
        "A" * 42,
        "A" * 44,
        "A" * 42 + "=",
        "A" * 42 + "/",
        "A" * 42 + "\n",
        "é" * 43,
    ],
)
def test_a_token_of_the_wrong_form_is_refused_before_redis_is_asked(client, token):
    with count_redis_round_trips() as sent:
        result = client.simulate_get("/api/users/me/", headers={"Authorization": f"Token {token}"})
    assert_error(result, 401, "unauthenticated")
    assert sent == []


def test_a_token_of_the_right_form_is_looked_up(client):
    # The other side of the test above: the count does see a lookup.
    with count_redis_round_trips() as sent:
        result = client.simulate_get("/api/users/me/", headers=auth(new_token()))
    assert_error(result, 401, "unauthenticated")
    assert sent


def forged_entry(user_id: int, username: str) -> bytes:
    """What someone with write access to Redis would write to make a token an admin's."""
    far = (datetime.now(UTC) + timedelta(days=1)).timestamp()
    return orjson.dumps(
        {
            "user_id": user_id,
            "username": username,
            "is_admin": True,
            "expires_at": far,
            "last_used_at": far,
        }
    )


def test_a_token_entry_written_by_hand_into_redis_logs_no_one_in(client, services, user, log_lines):
    made_up = new_token()
    key = services.token_cache.key(hash_token(made_up))
    user_id = services.token_cache.authenticate(user.token).user_id
    # In the form the cache itself stores (a tag, a dot, the caller), with a tag no key made.
    for forged in (forged_entry(user_id, user.username), b"A" * 43 + b"." + forged_entry(1, "x")):
        services.redis.set(key, forged, ex=60)

        assert me_status(client, made_up) == 401
        assert_error(
            client.simulate_get("/api/admin/replicas/", headers=auth(made_up)),
            401,
            "unauthenticated",
        )
    assert security_events(log_lines, "token_cache_forged")


def test_a_real_tokens_entry_rewritten_by_hand_grants_nothing_more(client, services, user):
    key = services.token_cache.key(hash_token(user.token))
    user_id = services.token_cache.authenticate(user.token).user_id
    services.redis.set(key, forged_entry(user_id, user.username), ex=60)

    me = client.simulate_get("/api/users/me/", headers=user.headers)

    assert (me.status_code, me.json["username"], me.json["is_admin"]) == (200, user.username, False)
    assert client.simulate_get("/api/admin/replicas/", headers=user.headers).status_code == 403
    # The database decided, and its answer replaced the forgery: the next check costs no query.
    assert services.redis.get(key) != forged_entry(user_id, user.username)
    with count_queries(services.primary, *services.replicas) as counted:
        services.token_cache.authenticate(user.token)
    assert counted.count == 0


def test_an_entry_sealed_with_a_retired_key_is_read_again_from_the_database(client, services, user):
    old_key_cache = TokenCache(
        services.cache.lifetime,
        services.primary,
        services.replicas,
        idle_days=services.settings.token_idle_days,
        seal=Seal([new_key()]),
    )
    principal = services.token_cache.authenticate(user.token)
    row_times = datetime.now(UTC) + timedelta(days=1), datetime.now(UTC)
    services.redis.delete(services.token_cache.key(hash_token(user.token)))
    old_key_cache.store(principal, *row_times)

    with count_queries(services.primary) as counted:
        assert services.token_cache.authenticate(user.token).user_id == principal.user_id
    assert counted.count == 1


def test_a_late_write_through_never_undoes_a_revocation(client, services, user):
    # A promotion that read the token as live just before a logout writes last.
    principal = services.token_cache.authenticate(user.token)
    client.simulate_post("/api/auth/logout/", headers=user.headers)
    now = datetime.now(UTC)
    services.token_cache.store(principal, now + timedelta(days=1), now)
    assert me_status(client, user.token) == 401


# --- logout, logout-all ----------------------------------------------------------------------


def test_logout_revokes_that_token_only(client, user):
    other = login(client, user.username, user.password).json["token"]
    result = client.simulate_post("/api/auth/logout/", headers=user.headers)
    assert result.status_code == 204, result.text
    assert result.text == ""
    assert_error(
        client.simulate_get("/api/users/me/", headers=user.headers), 401, "unauthenticated"
    )
    assert me_status(client, other) == 200


def test_a_revoked_token_stays_revoked_after_its_cache_entry_is_gone(client, services, user):
    client.simulate_post("/api/auth/logout/", headers=user.headers)
    forget_cached(services, user.token)
    assert me_status(client, user.token) == 401


def test_logout_is_served_without_the_trailing_slash_and_with_an_empty_json_body(client, user):
    second = login(client, user.username, user.password).json["token"]
    assert client.simulate_post("/api/auth/logout", headers=user.headers).status_code == 204
    result = client.simulate_post("/api/auth/logout/", headers=auth(second), json={})
    assert result.status_code == 204, result.text


def test_logout_refuses_a_field(client, user):
    result = client.simulate_post("/api/auth/logout/", headers=user.headers, json={"all": True})
    assert assert_error(result, 400, "invalid_request")["fields"] == {"all": ["Unknown field."]}
    assert me_status(client, user.token) == 200


@pytest.mark.parametrize("path", ["/api/auth/logout/", "/api/auth/logout-all/"])
def test_logging_out_needs_a_token(client, path):
    assert_error(client.simulate_post(path), 401, "unauthenticated")


def test_a_revoked_token_cannot_log_out_again(client, user):
    client.simulate_post("/api/auth/logout/", headers=user.headers)
    assert_error(
        client.simulate_post("/api/auth/logout/", headers=user.headers), 401, "unauthenticated"
    )


def test_logout_all_revokes_every_token_of_the_user_and_no_one_elses(client, user, other_user):
    tokens = [user.token] + [
        login(client, user.username, user.password).json["token"] for _ in range(2)
    ]
    result = client.simulate_post("/api/auth/logout-all/", headers=user.headers)
    assert result.status_code == 204, result.text
    assert [me_status(client, token) for token in tokens] == [401, 401, 401]
    assert me_status(client, other_user.token) == 200
    assert login(client, user.username, user.password).status_code == 200


# --- a second server process -----------------------------------------------------------------


def test_a_token_issued_by_one_process_works_at_once_in_another(client, second_process, user):
    token = login(client, user.username, user.password).json["token"]
    assert me_status(second_process, token) == 200


def test_a_logout_in_one_process_is_seen_at_once_by_another(client, second_process, user):
    assert me_status(second_process, user.token) == 200  # cached as valid there
    assert client.simulate_post("/api/auth/logout/", headers=user.headers).status_code == 204
    assert me_status(second_process, user.token) == 401


def test_logout_all_in_one_process_is_seen_at_once_by_another(client, second_process, user):
    other = login(second_process, user.username, user.password).json["token"]
    assert me_status(second_process, other) == 200
    assert client.simulate_post("/api/auth/logout-all/", headers=user.headers).status_code == 204
    assert me_status(second_process, other) == 401
    assert me_status(second_process, user.token) == 401


# --- password change -------------------------------------------------------------------------


def change_password(
    client: falcon.testing.TestClient, user: ApiUser, current: str, new: str
) -> falcon.testing.Result:
    return client.simulate_post(
        "/api/auth/password/change/",
        headers=user.headers,
        json={"current_password": current, "new_password": new},
    )


def test_changing_the_password_revokes_every_other_token(client, second_process, user):
    others = [login(client, user.username, user.password).json["token"] for _ in range(2)]
    assert me_status(second_process, others[0]) == 200
    result = change_password(client, user, user.password, "a brand new password")
    assert result.status_code == 204, result.text
    assert me_status(client, user.token) == 200
    assert me_status(second_process, user.token) == 200
    assert [me_status(second_process, token) for token in others] == [401, 401]
    assert login(client, user.username, user.password).status_code == 401
    assert login(client, user.username, "a brand new password").status_code == 200


def test_a_wrong_current_password_is_a_400_and_changes_nothing(client, user):
    other = login(client, user.username, user.password).json["token"]
    result = change_password(client, user, "not the password", "a brand new password")
    assert set(assert_error(result, 400, "invalid_request")["fields"]) == {"current_password"}
    assert me_status(client, other) == 200
    assert login(client, user.username, user.password).status_code == 200


@pytest.mark.parametrize("new", ["short", "x" * 129])
def test_a_new_password_out_of_bounds_is_a_400(client, user, new):
    result = change_password(client, user, user.password, new)
    assert set(assert_error(result, 400, "invalid_request")["fields"]) == {"new_password"}


def test_changing_the_password_needs_a_token(client):
    result = client.simulate_post(
        "/api/auth/password/change/", json={"current_password": "a" * 8, "new_password": "b" * 8}
    )
    assert_error(result, 401, "unauthenticated")


# --- administrators --------------------------------------------------------------------------


@pytest.fixture
def cli_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDLINK_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("GRIDLINK_REPLICA_URLS", ",".join(settings.replica_urls))
    monkeypatch.setenv("GRIDLINK_REDIS_URL", settings.redis_url)


def test_promotion_revokes_the_users_tokens_in_every_process_and_logs_it(
    client, second_process, user, cli_environment, capsys, log_lines
):
    other = login(client, user.username, user.password).json["token"]
    assert [me_status(second_process, token) for token in (user.token, other)] == [200, 200]
    assert main(["users", "promote", user.username.upper()]) == 0
    assert user.username in capsys.readouterr().out
    # A token taken before the promotion (stolen, maybe) never becomes an admin's.
    assert [me_status(second_process, token) for token in (user.token, other)] == [401, 401]
    admin_token = login(client, user.username, user.password).json["token"]
    assert client.simulate_get("/api/users/me/", headers=auth(admin_token)).json["is_admin"]
    [event] = security_events(log_lines, "user_promoted")
    assert event["user_id"] is not None
    assert event["sessions_revoked"] == 2
    assert user.token not in log_lines.getvalue()


def test_demotion_revokes_the_admins_tokens_in_every_process_and_logs_it(
    client, second_process, user, cli_environment, log_lines
):
    assert main(["users", "promote", user.username]) == 0
    admin_token = login(client, user.username, user.password).json["token"]
    assert me_status(second_process, admin_token) == 200
    assert main(["users", "demote", user.username]) == 0
    assert me_status(second_process, admin_token) == 401
    token = login(client, user.username, user.password).json["token"]
    assert client.simulate_get("/api/users/me/", headers=auth(token)).json["is_admin"] is False
    [event] = security_events(log_lines, "user_demoted")
    assert event["sessions_revoked"] == 1


def test_promoting_an_unknown_user_exits_1_with_a_message(cli_environment, capsys):
    name = random_username("ghost")
    assert main(["users", "promote", name]) == 1
    assert name in capsys.readouterr().err


def test_the_promote_command_writes_its_security_event_to_its_log(settings, user):
    done = subprocess.run(
        [sys.executable, "-m", "gridlink.cli", "users", "promote", user.username],
        env=server_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert [line["event"] for line in lines if line.get("event")] == ["user_promoted"]
