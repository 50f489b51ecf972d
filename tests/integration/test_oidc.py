"""Sign-in with OpenID Connect providers, against real providers on loopback (oidc-provider).

Each test plays the client's browser part at a real provider (its dev login
and consent forms, over HTTP) and sends Gridlink the code, as a single-page
or mobile app would.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterator
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import text

from gridlink.app import create_app
from gridlink.cache.stream import ChangeRelay
from gridlink.oidc.provider import ProviderClient
from gridlink.services import Services
from gridlink.settings import Settings
from tests.support.accounts import find_user_id, user_id_of
from tests.support.api import (
    ApiUser,
    assert_error,
    auth,
    create_grid,
    create_link,
    login,
    random_username,
    sign_up,
)
from tests.support.mail import mails_to, token_in
from tests.support.oidc_provider import Authorization, OpenIdProvider
from tests.support.security_log import security_events
from tests.support.waiting import wait_for

IDENTITY_ID = r"^id_[0-9a-f]{32}$"
# Low enough to reach in a test; each test's sign-ins come from an address of its own.
FAILURES_PER_ADDRESS = 4


@pytest.fixture(scope="module")
def oidc_services(
    settings: Settings, services: Services, openid_providers: dict[str, OpenIdProvider]
) -> Services:
    """The session's services, with the test providers configured (their own clients)."""
    configured = settings.replace(
        oidc_providers=tuple(provider.configured() for provider in openid_providers.values()),
        login_failures_per_address=FAILURES_PER_ADDRESS,
    )
    return dataclasses.replace(
        services,
        settings=configured,
        identity_providers={
            provider.name: ProviderClient(provider) for provider in configured.oidc_providers
        },
    )


@pytest.fixture(scope="module")
def app_client(oidc_services: Services, relay: ChangeRelay) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(oidc_services.settings, oidc_services))


@pytest.fixture(scope="module")
def local(openid_providers: dict[str, OpenIdProvider]) -> OpenIdProvider:
    return openid_providers["local"]


@pytest.fixture
def address() -> str:
    """A client address of this test's own: throttles count per address."""
    return _elsewhere()


def _elsewhere() -> str:
    return f"10.23.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


@pytest.fixture
def flaky(openid_providers: dict[str, OpenIdProvider]) -> Iterator[OpenIdProvider]:
    provider = openid_providers["flaky"]
    yield provider
    if not provider.running:
        provider.start()


def sign_in(
    client: falcon.testing.TestClient,
    provider: str,
    authorization: Authorization | dict[str, Any],
    address: str,
) -> falcon.testing.Result:
    body = authorization.body() if isinstance(authorization, Authorization) else authorization
    return client.simulate_post(f"/api/auth/oidc/{provider}/", json=body, remote_addr=address)


def new_account(prefix: str = "ada") -> str:
    """An account name at the provider (its email: <name>@example.test, verified)."""
    return f"{prefix}{secrets.token_hex(5)}"


def sign_up_through(
    client: falcon.testing.TestClient, provider: OpenIdProvider, account: str, address: str
) -> dict[str, Any]:
    offered = sign_in(client, provider.name, provider.sign_in(account), address)
    assert offered.status_code == 202, offered.text
    created = client.simulate_post(
        "/api/auth/oidc/signup/",
        json={
            "signup_ticket": offered.json["signup_ticket"],
            "username": random_username("o"),
        },
        remote_addr=address,
    )
    assert created.status_code == 201, created.text
    return dict(created.json)


def link(
    client: falcon.testing.TestClient, token: str, provider: OpenIdProvider, account: str
) -> falcon.testing.Result:
    body = {"provider": provider.name, **provider.sign_in(account).body()}
    return client.simulate_post("/api/users/me/identities/", json=body, headers=auth(token))


def identities_of(client: falcon.testing.TestClient, token: str) -> list[dict[str, Any]]:
    listed = client.simulate_get("/api/users/me/identities/", headers=auth(token))
    assert listed.status_code == 200, listed.text
    assert listed.json["has_more"] is False
    return list(listed.json["data"])


# --------------------------------------------------------------------------- the providers


def test_the_providers_are_listed_with_what_a_client_needs_to_start(app_client, local):
    listed = app_client.simulate_get("/api/auth/oidc/")
    assert listed.status_code == 200
    by_name = {entry["name"]: entry for entry in listed.json["data"]}
    assert by_name["local"] == {
        "name": "local",
        "issuer": local.issuer,
        "authorization_endpoint": f"{local.issuer}/auth",
        "client_id": "gridlink-test",
        "scopes": ["openid", "email", "profile"],
    }
    assert local.client_secret not in listed.text


def test_an_unknown_provider_is_not_found(app_client, local, address):
    result = sign_in(app_client, "nowhere", local.sign_in(new_account()), address)
    assert_error(result, 404, "not_found")


def test_a_malformed_redemption_is_refused_before_the_provider_is_asked(app_client, address):
    body = {"code": "x", "code_verifier": "short", "redirect_uri": "https://a/", "nonce": "n"}
    error = assert_error(sign_in(app_client, "local", body, address), 400, "invalid_request")
    assert "code_verifier" in error["fields"]
    body = {**body, "code_verifier": "v" * 43, "state": "extra"}
    error = assert_error(sign_in(app_client, "local", body, address), 400, "invalid_request")
    assert "state" in error["fields"]


# --------------------------------------------------------------------------- signing in


def test_a_first_sign_in_gets_a_ticket_and_the_ticket_signs_up_once(
    app_client, local, address, log_lines
):
    account = new_account()
    offered = sign_in(app_client, "local", local.sign_in(account), address)
    assert offered.status_code == 202, offered.text
    assert offered.json["suggested_username"] == account
    ticket = offered.json["signup_ticket"]
    username = random_username("o")
    body = {"signup_ticket": ticket, "username": username}
    created = app_client.simulate_post("/api/auth/oidc/signup/", json=body, remote_addr=address)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"/api/users/{username}/"
    assert created.json["user"]["email"] == f"{account}@example.test"
    assert set(created.json) == {"user", "token", "device"}
    me = app_client.simulate_get("/api/users/me/", headers=auth(created.json["token"]))
    assert me.json["username"] == username
    again = app_client.simulate_post(
        "/api/auth/oidc/signup/",
        json={"signup_ticket": ticket, "username": random_username("o")},
        remote_addr=address,
    )
    assert "signup_ticket" in assert_error(again, 400, "invalid_request")["fields"]
    assert [e["provider"] for e in security_events(log_lines, "signup_ticket_issued")] == ["local"]
    assert len(security_events(log_lines, "signed_up")) == 1
    assert len(security_events(log_lines, "signup_ticket_refused")) == 1
    assert ticket not in log_lines.getvalue()


def test_a_second_sign_in_goes_straight_to_a_token(app_client, local, address, log_lines):
    account = new_account()
    created = sign_up_through(app_client, local, account, address)
    signed_in = sign_in(app_client, "local", local.sign_in(account), address)
    assert signed_in.status_code == 200, signed_in.text
    assert set(signed_in.json) == {"user", "token", "device"}
    assert signed_in.json["user"] == created["user"]
    assert signed_in.json["token"] != created["token"]
    me = app_client.simulate_get("/api/users/me/", headers=auth(signed_in.json["token"]))
    assert me.status_code == 200
    succeeded = security_events(log_lines, "login_succeeded")
    assert [event["provider"] for event in succeeded] == ["local"]


def test_an_account_made_through_a_provider_has_no_password_to_log_in_with(
    app_client, local, address
):
    created = sign_up_through(app_client, local, new_account(), address)
    username = created["user"]["username"]
    refused = login(app_client, username, "a server password")
    assert_error(refused, 401, "unauthenticated")
    assert refused.json == login(app_client, random_username("nobody"), "a server password").json


def test_a_taken_username_leaves_the_ticket_usable(app_client, local, address, user):
    offered = sign_in(app_client, "local", local.sign_in(new_account()), address)
    ticket = offered.json["signup_ticket"]
    taken = app_client.simulate_post(
        "/api/auth/oidc/signup/",
        json={"signup_ticket": ticket, "username": user.username.upper()},
        remote_addr=address,
    )
    assert "username" in assert_error(taken, 409, "conflict")["fields"]
    created = app_client.simulate_post(
        "/api/auth/oidc/signup/",
        json={"signup_ticket": ticket, "username": random_username("o")},
        remote_addr=address,
    )
    assert created.status_code == 201, created.text


def test_an_expired_ticket_is_refused(app_client, local, address, services):
    offered = sign_in(app_client, "local", local.sign_in(new_account()), address)
    with services.primary.begin() as connection:
        connection.execute(
            text("UPDATE signup_tickets SET expires_on = now() - interval '1 second'")
        )
    refused = app_client.simulate_post(
        "/api/auth/oidc/signup/",
        json={"signup_ticket": offered.json["signup_ticket"], "username": random_username("o")},
        remote_addr=address,
    )
    assert_error(refused, 400, "invalid_request")


def test_the_ticket_is_stored_hashed(app_client, local, address, services):
    offered = sign_in(app_client, "local", local.sign_in(new_account()), address)
    ticket = offered.json["signup_ticket"]
    with services.primary.connect() as connection:
        stored = connection.execute(text("SELECT ticket_hash FROM signup_tickets")).scalars().all()
    assert stored
    assert all(ticket.encode() not in bytes(row) for row in stored)


# --------------------------------------------------------------------------- what is refused


def test_a_replayed_code_is_refused(app_client, local, address, log_lines):
    authorization = local.sign_in(new_account())
    assert sign_in(app_client, "local", authorization, address).status_code == 202
    replayed = sign_in(app_client, "local", authorization, address)
    error = assert_error(replayed, 400, "invalid_request")
    # What the provider said stays between it and us.
    assert "invalid_grant" not in replayed.text
    assert "grant" not in error["message"]
    failed = security_events(log_lines, "login_failed")
    assert [event["provider"] for event in failed] == ["local"]
    assert "invalid_grant" in failed[0]["reason"]
    assert authorization.code not in log_lines.getvalue()


def test_a_wrong_nonce_is_refused(app_client, local, address, log_lines):
    authorization = local.sign_in(new_account(), nonce="the nonce the client sent")
    other = dataclasses.replace(authorization, nonce="another nonce")
    assert_error(sign_in(app_client, "local", other, address), 400, "invalid_request")
    assert "nonce" in security_events(log_lines, "login_failed")[0]["reason"]


def test_a_wrong_code_verifier_is_refused(app_client, local, address):
    authorization = local.sign_in(new_account())
    other = dataclasses.replace(authorization, code_verifier="w" * 64)
    assert_error(sign_in(app_client, "local", other, address), 400, "invalid_request")


def test_a_token_signed_by_a_key_the_providers_jwks_does_not_hold_is_refused(
    app_client, openid_providers, address, log_lines
):
    forged = openid_providers["forged"]
    result = sign_in(app_client, "forged", forged.sign_in(new_account()), address)
    assert_error(result, 400, "invalid_request")
    assert "signature" in security_events(log_lines, "login_failed")[0]["reason"]


def test_an_expired_id_token_is_refused(app_client, openid_providers, address, log_lines):
    late = openid_providers["late"]
    result = sign_in(app_client, "late", late.sign_in(new_account()), address)
    assert_error(result, 400, "invalid_request")
    assert "exp" in security_events(log_lines, "login_failed")[0]["reason"]


def test_an_identity_whose_email_an_account_has_is_refused_until_its_owner_links_it(
    app_client, local, address, log_lines, user
):
    # The provider vouches for an address a Gridlink account already has.
    refused = sign_in(app_client, "local", local.sign_in(user.email), address)
    assert_error(refused, 409, "conflict")
    assert len(security_events(log_lines, "identity_email_taken")) == 1
    assert identities_of(app_client, user.token) == []
    linked = link(app_client, user.token, local, user.email)
    assert linked.status_code == 201, linked.text
    signed_in = sign_in(app_client, "local", local.sign_in(user.email), address)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json["user"]["username"] == user.username


def test_failed_sign_ins_from_one_address_are_throttled(app_client, local, address, log_lines):
    authorization = local.sign_in(new_account())
    assert sign_in(app_client, "local", authorization, address).status_code == 202
    for _ in range(FAILURES_PER_ADDRESS):
        assert sign_in(app_client, "local", authorization, address).status_code == 400
    throttled = sign_in(app_client, "local", local.sign_in(new_account()), address)
    assert_error(throttled, 429, "rate_limited")
    assert int(throttled.headers["Retry-After"]) >= 1
    assert security_events(log_lines, "login_throttled")
    assert (
        sign_in(app_client, "local", local.sign_in(new_account()), _elsewhere()).status_code == 202
    )


# --------------------------------------------------------------------------- a provider down


def test_a_provider_that_is_down_answers_503_and_nothing_else_does(
    app_client, flaky, local, address, log_lines
):
    account = new_account()
    assert sign_in(app_client, "flaky", flaky.sign_in(account), address).status_code == 202
    stale = flaky.sign_in(account)
    flaky.stop()
    down = sign_in(app_client, "flaky", stale, address)
    assert_error(down, 503, "unavailable")
    assert int(down.headers["Retry-After"]) >= 1
    assert security_events(log_lines, "identity_provider_unavailable")
    # Its own endpoints alone: the others, the list (from what is kept) and the API go on.
    assert sign_in(app_client, "local", local.sign_in(new_account()), address).status_code == 202
    listed = app_client.simulate_get("/api/auth/oidc/")
    assert listed.status_code == 200
    assert {entry["name"] for entry in listed.json["data"]} >= {"local", "flaky"}
    assert app_client.simulate_get("/healthz").status_code == 200
    # Back with new signing keys, it signs in again: first the pause after the outage ends,
    # then the new kid refetches the JWKS (at most once every few seconds).
    flaky.start()
    wait_for(
        lambda: (
            sign_in(app_client, "flaky", flaky.sign_in(account), _elsewhere()).status_code == 202
        ),
        timeout=20,
        what="the restarted provider to sign in again",
    )


# --------------------------------------------------------------------------- identities


def test_linking_and_unlinking_an_identity(app_client, local, user, other_user, log_lines):
    account = new_account("lin")
    linked = link(app_client, user.token, local, account)
    assert linked.status_code == 201, linked.text
    identity = linked.json
    assert set(identity) == {"id", "provider", "subject", "email", "created"}
    assert identity["provider"] == "local"
    assert identity["subject"] == account
    assert identity["email"] == f"{account}@example.test"
    assert re.match(IDENTITY_ID, identity["id"])
    listed = app_client.simulate_get("/api/users/me/identities/", headers=user.headers)
    assert listed.json["data"] == [identity]
    assert listed.headers["X-Gridlink-Read-Source"] in {"primary", "replica"}
    assert_error(link(app_client, other_user.token, local, account), 409, "conflict")
    assert_error(link(app_client, user.token, local, account), 409, "conflict")
    # Another user cannot see or unlink it.
    assert identities_of(app_client, other_user.token) == []
    path = f"/api/users/me/identities/{identity['id']}/"
    assert_error(app_client.simulate_delete(path, headers=other_user.headers), 404, "not_found")
    assert app_client.simulate_delete(path, headers=user.headers).status_code == 204
    assert identities_of(app_client, user.token) == []
    assert_error(app_client.simulate_delete(path, headers=user.headers), 404, "not_found")
    assert_error(
        app_client.simulate_delete("/api/users/me/identities/id_nothex/", headers=user.headers),
        404,
        "not_found",
    )
    assert len(security_events(log_lines, "identity_linked")) == 1
    refused = security_events(log_lines, "identity_link_refused")
    assert [event["provider"] for event in refused] == ["local", "local"]
    assert len(security_events(log_lines, "identity_unlinked")) == 1


def test_linking_takes_an_idempotency_key(app_client, local, user):
    body = {"provider": "local", **local.sign_in(new_account("idem")).body()}
    headers = {**user.headers, "Idempotency-Key": secrets.token_hex(8)}
    first = app_client.simulate_post("/api/users/me/identities/", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = app_client.simulate_post("/api/users/me/identities/", json=body, headers=headers)
    assert again.status_code == 201
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"


def test_linking_needs_a_token_and_a_known_provider(app_client, local, user):
    body = {"provider": "local", **local.sign_in(new_account()).body()}
    assert_error(
        app_client.simulate_post("/api/users/me/identities/", json=body), 401, "unauthenticated"
    )
    unknown = {**body, "provider": "nowhere"}
    assert_error(
        app_client.simulate_post("/api/users/me/identities/", json=unknown, headers=user.headers),
        404,
        "not_found",
    )


def test_the_only_way_into_an_account_cannot_be_unlinked(app_client, local, address, log_lines):
    created = sign_up_through(app_client, local, new_account(), address)
    token = created["token"]
    [only] = identities_of(app_client, token)
    only_path = f"/api/users/me/identities/{only['id']}/"
    refused = app_client.simulate_delete(only_path, headers=auth(token))
    assert_error(refused, 409, "conflict")
    assert link(app_client, token, local, new_account("second")).status_code == 201
    assert app_client.simulate_delete(only_path, headers=auth(token)).status_code == 204
    [last] = identities_of(app_client, token)
    last_path = f"/api/users/me/identities/{last['id']}/"
    assert_error(app_client.simulate_delete(last_path, headers=auth(token)), 409, "conflict")
    assert len(security_events(log_lines, "identity_unlink_refused")) == 2


def test_an_account_with_a_password_may_unlink_its_last_identity(app_client, local, user):
    linked = link(app_client, user.token, local, new_account())
    path = f"/api/users/me/identities/{linked.json['id']}/"
    assert app_client.simulate_delete(path, headers=user.headers).status_code == 204


def test_a_deleted_account_takes_its_identities_with_it(app_client, local, address):
    owner: ApiUser = sign_up(app_client, "gone")
    account = new_account()
    assert link(app_client, owner.token, local, account).status_code == 201
    deleted = app_client.simulate_delete(
        "/api/users/me/", json={"password": owner.password}, headers=owner.headers
    )
    assert deleted.status_code == 204, deleted.text
    # The identity is nobody's now: signing in with it starts a new account.
    assert sign_in(app_client, "local", local.sign_in(account), address).status_code == 202


def test_a_reset_gives_an_account_made_through_a_provider_its_first_password(
    app_client, local, address, mail_dir
):
    account = new_account()
    created = sign_up_through(app_client, local, account, address)
    email, username = created["user"]["email"], created["user"]["username"]
    asked = app_client.simulate_post(
        "/api/auth/password/reset/", json={"email": email}, remote_addr=address
    )
    assert asked.status_code == 202
    [mail] = mails_to(mail_dir, email, expected=1)
    confirmed = app_client.simulate_post(
        "/api/auth/password/reset/confirm/",
        json={"token": token_in(mail), "new_password": "a first password of its own"},
    )
    assert confirmed.status_code == 204, confirmed.text
    assert login(app_client, username, "a first password of its own").status_code == 200
    # With a password, its only identity may go; the provider's sign-in stays until then.
    assert sign_in(app_client, "local", local.sign_in(account), address).status_code == 200


# --------------------------------------------------------------------------- deleting the account


def provider_user(created: dict[str, Any]) -> ApiUser:
    """The account a ticket's sign-up made, as the API helpers take it (it has no password)."""
    me = created["user"]
    return ApiUser(me["username"], me["email"], "", created["token"], created["device"])


def delete_me(
    client: falcon.testing.TestClient, token: str, body: dict[str, Any] | None
) -> falcon.testing.Result:
    return client.simulate_delete("/api/users/me/", json=body, headers=auth(token))


def confirmation(provider: OpenIdProvider, account: str) -> dict[str, str]:
    """A fresh sign-in at ``provider`` as ``account``: what confirms a deletion."""
    return {"provider": provider.name, **provider.sign_in(account).body()}


OWNED_ROWS = {
    "users": "SELECT count(*) FROM users WHERE id = :id",
    "identities": "SELECT count(*) FROM identities WHERE user_id = :id",
    "grids": "SELECT count(*) FROM grids WHERE user_id = :id",
    "links": "SELECT count(*) FROM links l JOIN grids g ON g.id = l.grid_id WHERE g.user_id = :id",
    "auth_tokens": "SELECT count(*) FROM auth_tokens WHERE user_id = :id",
    "login_devices": "SELECT count(*) FROM login_devices WHERE user_id = :id",
}


def rows_of(services: Services, user_id: int) -> dict[str, int]:
    """How many rows the account has in each table that holds its things."""
    with services.primary.connect() as connection:
        return {
            table: connection.execute(text(query), {"id": user_id}).scalar_one()
            for table, query in OWNED_ROWS.items()
        }


def test_an_account_made_through_a_provider_deletes_itself_with_a_fresh_sign_in(
    app_client, local, address, services, log_lines
):
    account = new_account("del")
    owner = provider_user(sign_up_through(app_client, local, account, address))
    grid = create_grid(app_client, owner)
    create_link(app_client, owner, grid["slug"])
    assert link(app_client, owner.token, local, new_account("del2")).status_code == 201
    owner_id = user_id_of(services, owner.username)
    before = rows_of(services, owner_id)
    assert before == {
        "users": 1,
        "identities": 2,
        "grids": 1,
        "links": 1,
        "auth_tokens": 1,
        "login_devices": 1,
    }
    profile = f"/api/users/{owner.username}/"
    assert app_client.simulate_get(profile).status_code == 200

    deleted = delete_me(app_client, owner.token, confirmation(local, account))
    assert deleted.status_code == 204, deleted.text
    assert set(rows_of(services, owner_id).values()) == {0}
    with services.primary.connect() as connection:
        identities = connection.execute(
            text("SELECT count(*) FROM identities WHERE subject = :account"), {"account": account}
        ).scalar_one()
    assert identities == 0
    assert_error(app_client.simulate_get(profile), 404, "not_found")
    assert_error(app_client.simulate_get(f"/api/grids/{grid['slug']}/"), 404, "not_found")
    assert_error(
        app_client.simulate_get("/api/users/me/", headers=owner.headers), 401, "unauthenticated"
    )
    [event] = security_events(log_lines, "account_deleted")
    assert event["provider"] == "local"
    # The identity is nobody's now: signing in with it starts a new account.
    assert sign_in(app_client, "local", local.sign_in(account), address).status_code == 202


def test_an_account_with_a_password_may_confirm_its_deletion_with_a_linked_identity(
    app_client, local, services
):
    owner = sign_up(app_client, "pw")
    account = new_account()
    assert link(app_client, owner.token, local, account).status_code == 201
    deleted = delete_me(app_client, owner.token, confirmation(local, account))
    assert deleted.status_code == 204, deleted.text
    assert find_user_id(services, owner.username) is None


def test_an_identity_that_is_not_the_callers_does_not_delete_the_account(
    app_client, local, address, services, user, log_lines
):
    owner = provider_user(sign_up_through(app_client, local, new_account(), address))
    someone = new_account("some")
    assert link(app_client, user.token, local, someone).status_code == 201
    # Another account's identity, and an identity no account has: the same 403.
    others = delete_me(app_client, owner.token, confirmation(local, someone))
    error = assert_error(others, 403, "permission_denied")
    nobodys = delete_me(app_client, owner.token, confirmation(local, new_account("none")))
    assert assert_error(nobodys, 403, "permission_denied") == error
    assert user.username not in others.text
    assert find_user_id(services, owner.username) is not None
    assert rows_of(services, user_id_of(services, user.username))["identities"] == 1
    assert app_client.simulate_get("/api/users/me/", headers=owner.headers).status_code == 200
    failed = security_events(log_lines, "login_failed")
    assert [event["reason"] for event in failed] == ["not its identity"] * 2
    assert security_events(log_lines, "account_deleted") == []


def test_a_replayed_or_wrong_code_does_not_delete_the_account(app_client, local, address, services):
    account = new_account()
    owner = provider_user(sign_up_through(app_client, local, account, address))
    authorization = local.sign_in(account)
    # The code was redeemed once already (a sign-in): it cannot confirm a deletion.
    assert sign_in(app_client, "local", authorization, address).status_code == 200
    replayed = {"provider": "local", **authorization.body()}
    assert_error(delete_me(app_client, owner.token, replayed), 400, "invalid_request")
    wrong_nonce = {**confirmation(local, account), "nonce": "not the nonce it was issued for"}
    assert_error(delete_me(app_client, owner.token, wrong_nonce), 400, "invalid_request")
    assert find_user_id(services, owner.username) is not None


def test_a_deletion_takes_the_password_or_a_provider_not_both_and_not_neither(
    app_client, local, user, services
):
    fresh = confirmation(local, new_account())
    both = delete_me(app_client, user.token, {"password": user.password, **fresh})
    error = assert_error(both, 400, "invalid_request")
    assert set(error["fields"]) == {"password", *fresh}
    neithers: list[dict[str, Any] | None] = [{}, None]
    for neither in neithers:
        error = assert_error(delete_me(app_client, user.token, neither), 400, "invalid_request")
        assert set(error["fields"]) == {"password", "provider"}
    partial_body = {"provider": "local", "code": fresh["code"]}
    error = assert_error(delete_me(app_client, user.token, partial_body), 400, "invalid_request")
    assert set(error["fields"]) == {"code_verifier", "redirect_uri", "nonce"}
    unknown = delete_me(app_client, user.token, {**fresh, "provider": "nowhere"})
    assert_error(unknown, 404, "not_found")
    assert find_user_id(services, user.username) is not None


def test_a_password_check_of_an_account_without_a_password_says_to_set_one(
    app_client, local, address, services, log_lines
):
    owner = provider_user(sign_up_through(app_client, local, new_account(), address))
    never = "a password it never had"
    attempts = [
        ("password", "DELETE", "/api/users/me/", {"password": never}),
        (
            "current_password",
            "POST",
            "/api/auth/password/change/",
            {"current_password": never, "new_password": "a first password of its own"},
        ),
        (
            "current_password",
            "PATCH",
            "/api/users/me/",
            {"email": "elsewhere@example.test", "current_password": never},
        ),
    ]
    for field, method, path, body in attempts:
        # More than the session's allowance: nothing is counted, nothing could be guessed.
        for _ in range(services.settings.password_checks_per_session + 1):
            answer = app_client.simulate_request(method, path, json=body, headers=owner.headers)
            error = assert_error(answer, 400, "invalid_request")
        assert list(error["fields"]) == [field]
        assert "password reset" in error["fields"][field][0]
        assert "no password" in error["message"]
        if method == "DELETE":
            assert "linked provider" in error["message"]
    assert find_user_id(services, owner.username) is not None
    assert security_events(log_lines, "login_throttled") == []


def test_failed_confirmations_with_a_provider_count_against_the_session(
    app_client, local, address, services, log_lines
):
    account = new_account()
    owner = provider_user(sign_up_through(app_client, local, account, address))
    authorization = local.sign_in(account)
    assert sign_in(app_client, "local", authorization, address).status_code == 200
    replayed = {"provider": "local", **authorization.body()}
    for _ in range(services.settings.password_checks_per_session):
        assert_error(delete_me(app_client, owner.token, replayed), 400, "invalid_request")
    throttled = delete_me(app_client, owner.token, confirmation(local, account))
    error = assert_error(throttled, 429, "rate_limited")
    assert "at a provider" in error["message"]  # not only "wrong passwords"
    assert security_events(log_lines, "login_throttled")
    assert find_user_id(services, owner.username) is not None
    # The session's allowance alone: another session of the account deletes it.
    other = sign_in(app_client, "local", local.sign_in(account), _elsewhere()).json["token"]
    assert delete_me(app_client, other, confirmation(local, account)).status_code == 204


def test_a_provider_that_is_down_deletes_nothing_and_counts_nothing(
    app_client, flaky, address, services, log_lines
):
    account = new_account()
    owner = sign_up(app_client, "down")
    assert link(app_client, owner.token, flaky, account).status_code == 201
    stale = [confirmation(flaky, account)]
    stale += [
        confirmation(flaky, account) for _ in range(services.settings.password_checks_per_session)
    ]
    flaky.stop()
    # More attempts than the session's allowance: an outage is not the owner's failure.
    for body in stale:
        down = delete_me(app_client, owner.token, body)
        assert_error(down, 503, "unavailable")
        assert int(down.headers["Retry-After"]) >= 1
    assert find_user_id(services, owner.username) is not None
    assert security_events(log_lines, "login_throttled") == []
    flaky.start()
    wait_for(
        lambda: delete_me(app_client, owner.token, confirmation(flaky, account)).status_code == 204,
        timeout=20,
        what="the restarted provider to confirm the deletion",
    )
    assert find_user_id(services, owner.username) is None


# --------------------------------------------------------------------------- devices


def sign_in_with_device(
    client: falcon.testing.TestClient,
    provider: OpenIdProvider,
    account: str,
    address: str,
    device: str,
) -> falcon.testing.Result:
    return sign_in(
        client, provider.name, {**provider.sign_in(account).body(), "device": device}, address
    )


def test_a_sign_in_that_presents_its_device_is_answered_the_same_device(
    app_client, local, address, user, services
):
    account = new_account()
    created = sign_up_through(app_client, local, account, address)
    owner_id = user_id_of(services, created["user"]["username"])
    device = created["device"]
    again = sign_in_with_device(app_client, local, account, address, device)
    assert again.status_code == 200, again.text
    assert again.json["device"] == device
    assert rows_of(services, owner_id)["login_devices"] == 1
    # Without it, or with another account's device or a made-up one: a new device each time.
    for presented in (None, user.device, "x" * 43, "not a device"):
        if presented is None:
            answered = sign_in(app_client, "local", local.sign_in(account), address)
        else:
            answered = sign_in_with_device(app_client, local, account, address, presented)
        assert answered.status_code == 200, answered.text
        assert answered.json["device"] not in {device, presented}
    assert rows_of(services, owner_id)["login_devices"] == 5
    # Another account's device was not made this one's.
    assert rows_of(services, user_id_of(services, user.username))["login_devices"] == 1


def test_a_device_is_not_held_to_its_address_throttle_but_to_its_own(
    app_client, oidc_services, local, address, log_lines
):
    account = new_account()
    device = sign_up_through(app_client, local, account, address)["device"]
    authorization = local.sign_in(new_account())
    assert sign_in(app_client, "local", authorization, address).status_code == 202
    for _ in range(FAILURES_PER_ADDRESS):
        assert sign_in(app_client, "local", authorization, address).status_code == 400
    # The address is refused; the owner's device, which failed nothing, is not.
    assert_error(sign_in(app_client, "local", local.sign_in(account), address), 429, "rate_limited")
    signed_in = sign_in_with_device(app_client, local, account, address, device)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json["device"] == device
    # The device's own failures are its own, from whatever address.
    replayed = {**authorization.body(), "device": device}
    for _ in range(oidc_services.settings.login_failures_per_client):
        assert_error(sign_in(app_client, "local", replayed, _elsewhere()), 400, "invalid_request")
    refused = sign_in_with_device(app_client, local, account, _elsewhere(), device)
    assert_error(refused, 429, "rate_limited")
    throttled = security_events(log_lines, "login_throttled")
    assert [event.get("with_device") for event in throttled] == [None, True]
