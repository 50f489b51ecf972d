"""Sessions: each live token listed and ended by its owner; idle and admin lifetimes; last use.

Lifetimes are days long: they are tested with a token cache whose clock the
test sets, never by waiting. What real time would do meanwhile (a cache entry
or a last-use claim expiring) the test does by deleting the key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial

import falcon.testing
import pytest
from sqlalchemy import Engine, text

from gridlink.accounts.tokens import hash_token
from gridlink.app import create_app
from gridlink.cache import TokenCache
from gridlink.cache.token_use import USE_RECORD_SECONDS
from gridlink.commands.accounts import set_admin
from gridlink.commands.unit_of_work import run_command
from gridlink.errors import Unauthenticated
from gridlink.services import Services, make_engine
from gridlink.settings import Settings
from tests.support.api import ApiUser, assert_error, auth, login, me_status
from tests.support.queries import count_queries
from tests.support.security_log import security_events
from tests.support.waiting import wait_for_replica

SESSION_ID = re.compile(r"^se_[0-9a-f]{32}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
DAY = 86400.0


@pytest.fixture(scope="module")
def second_process(settings: Settings) -> Iterator[falcon.testing.TestClient]:
    """Another server process: its own connection pools, nothing shared in memory."""
    services = Services.connect(settings)
    yield falcon.testing.TestClient(create_app(settings, services))
    services.close()


def list_sessions(client: falcon.testing.TestClient, token: str) -> falcon.testing.Result:
    return client.simulate_get("/api/auth/sessions/", headers=auth(token))


def end_session(
    client: falcon.testing.TestClient, token: str, session_id: str
) -> falcon.testing.Result:
    return client.simulate_delete(f"/api/auth/sessions/{session_id}/", headers=auth(token))


def session_of(client: falcon.testing.TestClient, user: ApiUser, token: str) -> str:
    """The id of ``token``'s session, as ``user``'s list names it (asked with that token)."""
    [current] = [s for s in list_sessions(client, token).json["data"] if s["current"]]
    session_id: str = current["id"]
    return session_id


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def token_cache(services: Services, clock: Clock, primary: Engine | None = None) -> TokenCache:
    """A token cache like a server's, in the same Redis and database, reading ``clock``.

    ``primary``: the engine it writes to instead of the server's.
    """
    return TokenCache(
        services.cache.lifetime,
        primary or services.primary,
        services.replicas,
        idle_days=services.settings.token_idle_days,
        seal=services.token_cache.seal,
        clock=clock,
    )


def let_an_hour_pass(services: Services, token: str) -> None:
    """Expire what real time would: the token's cache entry and its last-use claim."""
    hex_hash = hash_token(token).hex()
    services.redis.delete(
        services.cache.lifetime.key("token", hex_hash),
        services.cache.lifetime.key("token-used", hex_hash),
    )


def token_row(services: Services, token: str) -> dict[str, datetime]:
    with services.primary.connect() as connection:
        row = connection.execute(
            text(
                "SELECT created_on, last_used_on, expires_on FROM auth_tokens WHERE token_hash = :h"
            ),
            {"h": hash_token(token)},
        ).one()
    return dict(row._mapping)


def updates_of_tokens(statements: list[str]) -> int:
    return sum(1 for statement in statements if statement.lstrip().startswith("UPDATE auth_tokens"))


# --- the list -------------------------------------------------------------------------------


def test_the_list_shows_each_live_token_with_the_current_one_marked(client, user):
    second = client.simulate_post(
        "/api/auth/login/",
        json={"username": user.username, "password": user.password},
        headers={"User-Agent": "Firefox/140.0 (a test)"},
        remote_addr="10.9.8.7",
    ).json["token"]
    result = list_sessions(client, second)
    assert result.status_code == 200, result.text
    assert result.headers["Cache-Control"] == "no-store"
    assert result.json["has_more"] is False
    first_session, second_session = result.json["data"]  # in the order they began
    for session in (first_session, second_session):
        assert set(session) == {
            "id",
            "created",
            "last_used",
            "client_address",
            "user_agent",
            "current",
        }
        assert SESSION_ID.match(session["id"])
        assert TIMESTAMP.match(session["created"])
        assert TIMESTAMP.match(session["last_used"])
    assert first_session["id"] != second_session["id"]
    assert (first_session["current"], second_session["current"]) == (False, True)
    assert second_session["client_address"] == "10.9.8.7"
    assert second_session["user_agent"] == "Firefox/140.0 (a test)"
    # The other token's view marks the other session.
    assert [s["current"] for s in list_sessions(client, user.token).json["data"]] == [True, False]
    for token in (user.token, second):
        assert token not in result.text
        assert hash_token(token).hex() not in result.text


def test_an_ipv6_client_is_listed_as_the_throttles_count_it(client, user):
    token = client.simulate_post(
        "/api/auth/login/",
        json={"username": user.username, "password": user.password},
        remote_addr="2001:db8:1:2:3:4:5:6",
    ).json["token"]
    [_, session] = list_sessions(client, token).json["data"]
    assert session["client_address"] == "2001:db8:1:2::/64"


def test_a_long_or_odd_user_agent_is_kept_cut_short_and_printable(client, user):
    agent = "Mozilla\x7f/5.0 " + "x" * 1000
    token = client.simulate_post(
        "/api/auth/login/",
        json={"username": user.username, "password": user.password},
        headers={"User-Agent": agent},
    ).json["token"]
    [_, session] = list_sessions(client, token).json["data"]
    assert session["user_agent"] == ("Mozilla/5.0 " + "x" * 1000)[:256]


def test_ended_revoked_and_idle_tokens_are_not_listed(client, services, user):
    tokens = [login(client, user.username, user.password).json["token"] for _ in range(3)]
    client.simulate_post("/api/auth/logout/", headers=auth(tokens[0]))
    with services.primary.begin() as connection:
        connection.execute(
            text(
                "UPDATE auth_tokens SET expires_on = now() - interval '1 second'"
                " WHERE token_hash = :h"
            ),
            {"h": hash_token(tokens[1])},
        )
        connection.execute(
            text(
                "UPDATE auth_tokens SET last_used_on = now() - make_interval(days => :d)"
                " WHERE token_hash = :h"
            ),
            {"h": hash_token(tokens[2]), "d": services.settings.token_idle_days},
        )
    assert len(list_sessions(client, user.token).json["data"]) == 1


def test_the_list_needs_a_token(client):
    assert_error(client.simulate_get("/api/auth/sessions/"), 401, "unauthenticated")


def test_me_is_never_stored_by_any_cache(client, user):
    result = client.simulate_get("/api/users/me/", headers=user.headers)
    assert result.status_code == 200
    assert result.headers["Cache-Control"] == "no-store"


# --- ending a session -----------------------------------------------------------------------


def test_an_ended_session_is_refused_at_once_in_every_process_and_logged(
    client, second_process, user, log_lines
):
    other = login(client, user.username, user.password).json["token"]
    assert me_status(second_process, other) == 200  # cached as valid there
    other_session = session_of(client, user, other)
    result = end_session(client, user.token, other_session)
    assert result.status_code == 204, result.text
    assert result.text == ""
    assert me_status(second_process, other) == 401
    assert me_status(second_process, user.token) == 200
    assert [s["id"] for s in list_sessions(client, user.token).json["data"]] == [
        session_of(client, user, user.token)
    ]
    [event] = security_events(log_lines, "session_revoked")
    assert (event["reason"], event["session"], event["sessions"]) == (
        "session_ended",
        other_session,
        1,
    )
    assert other not in log_lines.getvalue()
    assert user.token not in log_lines.getvalue()


def test_a_session_can_end_itself_without_the_trailing_slash(client, user):
    session_id = session_of(client, user, user.token)
    result = client.simulate_delete(f"/api/auth/sessions/{session_id}", headers=user.headers)
    assert result.status_code == 204
    assert me_status(client, user.token) == 401


def test_another_users_session_is_not_found_and_stays(client, user, other_user):
    theirs = session_of(client, other_user, other_user.token)
    assert_error(end_session(client, user.token, theirs), 404, "not_found")
    assert me_status(client, other_user.token) == 200


@pytest.mark.parametrize(
    "session_id", ["se_" + "0" * 32, "se_" + "A" * 32, "gr_" + "0" * 32, "nope", "se_%00"]
)
def test_an_unknown_or_malformed_session_is_not_found(client, user, session_id):
    assert_error(end_session(client, user.token, session_id), 404, "not_found")
    assert me_status(client, user.token) == 200


def test_an_ended_session_cannot_be_ended_again(client, user):
    other = login(client, user.username, user.password).json["token"]
    other_session = session_of(client, user, other)
    assert end_session(client, user.token, other_session).status_code == 204
    assert_error(end_session(client, user.token, other_session), 404, "not_found")


def test_ending_a_session_refuses_a_body_field(client, user):
    other = login(client, user.username, user.password).json["token"]
    result = client.simulate_delete(
        f"/api/auth/sessions/{session_of(client, user, other)}/",
        headers=user.headers,
        json={"all": True},
    )
    assert assert_error(result, 400, "invalid_request")["fields"] == {"all": ["Unknown field."]}
    assert me_status(client, other) == 200


@pytest.mark.parametrize(("path", "reason"), [("logout", "logout"), ("logout-all", "logout_all")])
def test_logging_out_logs_the_revoked_sessions(client, user, log_lines, path, reason):
    login(client, user.username, user.password)
    assert client.simulate_post(f"/api/auth/{path}/", headers=user.headers).status_code == 204
    [event] = security_events(log_lines, "session_revoked")
    assert event["reason"] == reason
    assert event["sessions"] == (1 if path == "logout" else 2)
    assert user.token not in log_lines.getvalue()


# --- lifetimes, against a clock the test sets ----------------------------------------------


@pytest.mark.parametrize(("unused_for", "valid"), [(-60.0, True), (1.0, False)])
def test_a_token_unused_for_its_idle_lifetime_ends(services, user, unused_for, valid):
    clock = Clock()
    clock.now += services.settings.token_idle_days * DAY + unused_for
    cache = token_cache(services, clock)
    for _ in ("from the cache entry the sign-up wrote", "from the database"):
        if valid:
            assert cache.authenticate(user.token).username == user.username
        else:
            with pytest.raises(Unauthenticated):
                cache.authenticate(user.token)
        let_an_hour_pass(services, user.token)


def test_a_token_in_use_outlives_its_idle_lifetime_but_not_its_lifetime(services, user):
    clock = Clock()
    cache = token_cache(services, clock)
    issued = clock.now
    for day in (10, 20, 29):
        clock.now = issued + day * DAY
        assert cache.authenticate(user.token).username == user.username
        let_an_hour_pass(services, user.token)
    # Each of those uses was recorded: the last one, at day 29, is on record.
    last_used = token_row(services, user.token)["last_used_on"].timestamp()
    assert last_used == pytest.approx(issued + 29 * DAY, abs=1)
    clock.now = issued + services.settings.token_ttl_days * DAY + 1
    with pytest.raises(Unauthenticated):
        cache.authenticate(user.token)


def test_an_admins_token_lives_twelve_hours(client, services, user):
    run_command(services, partial(set_admin, username=user.username, is_admin=True))
    token = login(client, user.username, user.password).json["token"]
    row = token_row(services, token)
    lifetime = row["expires_on"] - row["created_on"]
    hours = services.settings.admin_token_ttl_hours
    assert abs(lifetime - timedelta(hours=hours)) < timedelta(minutes=1)
    clock = Clock()
    cache = token_cache(services, clock)
    clock.now += hours * 3600 - 60
    assert cache.authenticate(token).is_admin is True
    let_an_hour_pass(services, token)
    clock.now += 61
    with pytest.raises(Unauthenticated):
        cache.authenticate(token)


# --- the last use: recorded at most once an hour -------------------------------------------


def test_requests_with_a_fresh_token_write_nothing(client, services, user):
    with count_queries(services.primary) as counted:
        for _ in range(10):
            assert client.simulate_get("/api/users/me/", headers=user.headers).status_code == 200
    assert updates_of_tokens(counted.statements) == 0


def test_a_last_use_a_demoted_primary_refuses_leaves_the_request_authenticated(
    services, user, test_cluster
):
    # The token cache's primary engine reaches a server in recovery, as a pooled
    # connection to a demoted primary does after a failover: the last use's
    # UPDATE is refused (SQLSTATE 25006). The request goes on, as it does when
    # the primary is unreachable; the token was read from that server.
    wait_for_replica(services)
    demoted = make_engine(test_cluster.replica_urls[0])
    clock = Clock()
    cache = token_cache(services, clock, demoted)
    clock.now += 2 * USE_RECORD_SECONDS
    let_an_hour_pass(services, user.token)
    try:
        with count_queries(demoted) as counted:
            principal = cache.authenticate(user.token)
    finally:
        demoted.dispose()

    assert principal.username == user.username
    assert updates_of_tokens(counted.statements) == 1  # tried, refused, given up


def test_the_last_use_is_written_once_an_hour_whatever_the_processes(services, user):
    clock = Clock()
    processes = [token_cache(services, clock), token_cache(services, clock)]
    clock.now += 2 * USE_RECORD_SECONDS
    with count_queries(services.primary) as counted:
        for _ in range(3):
            for cache in processes:
                cache.authenticate(user.token)
    assert updates_of_tokens(counted.statements) == 1
    assert token_row(services, user.token)["last_used_on"].timestamp() == pytest.approx(
        clock.now, abs=1
    )

    # Within the hour, the claim in Redis keeps every process from writing again,
    # even once the cache entry (still showing the old last use) is refilled.
    clock.now += USE_RECORD_SECONDS / 2
    with count_queries(services.primary) as counted:
        for cache in processes:
            cache.authenticate(user.token)
    assert updates_of_tokens(counted.statements) == 0

    let_an_hour_pass(services, user.token)
    clock.now += USE_RECORD_SECONDS
    with count_queries(services.primary) as counted:
        for _ in range(3):
            for cache in processes:
                cache.authenticate(user.token)
    assert updates_of_tokens(counted.statements) == 1
