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
from tests.support.api import ApiUser, assert_error, auth, login, random_username, sign_up
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
