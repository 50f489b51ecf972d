"""One provider's client on its own: kept keys, their refetch, pauses, and providers that misbehave.

The real provider (oidc-provider) plays a provider that works, restarts with
new keys, or stops. What it never does, answer with another issuer, send us
to a plain-http host or answer megabytes, a small loopback HTTP server does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gridlink.oidc.config import OidcProvider
from gridlink.oidc.provider import (
    KEY_REFETCH_SECONDS,
    UNREACHABLE_PAUSE_SECONDS,
    ProviderClient,
    ProviderUnreachable,
    TokenRejected,
)
from tests.support.oidc_provider import OpenIdProvider


class Clock:
    """A clock the test moves: when keys may be refetched is a matter of seconds."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_unknown_kid_refetches_the_keys_at_most_once_every_few_seconds(
    openid_providers: dict[str, OpenIdProvider],
) -> None:
    flaky = openid_providers["flaky"]
    clock = Clock()
    client = ProviderClient(flaky.configured(), clock=clock)
    # The real clock decides exp: this one only says when keys were fetched.
    clock.now = time.time()
    assert client.redeem(**flaky.sign_in("kid").body()).subject == "kid"
    flaky.restart()  # new signing keys, a new kid
    try:
        with pytest.raises(TokenRejected, match="signature"):
            client.redeem(**flaky.sign_in("kid").body())
        clock.now += KEY_REFETCH_SECONDS
        assert client.redeem(**flaky.sign_in("kid").body()).subject == "kid"
    finally:
        if not flaky.running:
            flaky.start()


def test_a_provider_that_stops_is_paused_then_called_again(
    openid_providers: dict[str, OpenIdProvider],
) -> None:
    flaky = openid_providers["flaky"]
    clock = Clock()
    clock.now = time.time()
    client = ProviderClient(flaky.configured(), clock=clock)
    assert client.metadata().issuer == flaky.issuer
    pending = flaky.sign_in("pause")
    flaky.stop()
    try:
        with pytest.raises(ProviderUnreachable):
            client.redeem(**pending.body())
        flaky.start()
        clock.now += 1
        # Up again, but within the pause nothing calls it: the sign-in answers at once.
        with pytest.raises(ProviderUnreachable) as paused:
            client.redeem(**flaky.sign_in("pause").body())
        assert 0 < paused.value.retry_after_seconds < UNREACHABLE_PAUSE_SECONDS
        clock.now += UNREACHABLE_PAUSE_SECONDS
        assert client.redeem(**flaky.sign_in("pause").body()).subject == "pause"
    finally:
        if not flaky.running:
            flaky.start()


# --------------------------------------------------------------------------- misbehaving


Route = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def broken_provider() -> Iterator[tuple[str, dict[str, Route]]]:
    """A loopback HTTP server whose answers each test writes, by path."""
    routes: dict[str, Route] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            routes.get(self.path, _not_found)(self)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


def _not_found(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(404)
    handler.end_headers()


def _json(document: object, status: int = 200) -> Route:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        body = json.dumps(document).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def _redirect(location: str) -> Route:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def _discovery(issuer: str, **overrides: object) -> dict[str, object]:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        **overrides,
    }


DISCOVERY = "/.well-known/openid-configuration"


def _client(issuer: str) -> ProviderClient:
    return ProviderClient(OidcProvider("broken", issuer, "gridlink", "a client secret here"))


def test_a_discovery_document_of_another_issuer_is_refused(broken_provider):
    issuer, routes = broken_provider
    routes[DISCOVERY] = _json(_discovery("https://idp.example"))
    with pytest.raises(ProviderUnreachable, match="another issuer"):
        _client(issuer).metadata()


def test_an_endpoint_that_is_not_https_is_refused(broken_provider):
    issuer, routes = broken_provider
    routes[DISCOVERY] = _json(_discovery(issuer, token_endpoint="http://idp.example/token"))
    with pytest.raises(ProviderUnreachable, match="token_endpoint"):
        _client(issuer).metadata()


def test_a_redirect_to_plain_http_is_not_followed(broken_provider):
    issuer, routes = broken_provider
    routes[DISCOVERY] = _redirect("http://idp.example/.well-known/openid-configuration")
    with pytest.raises(ProviderUnreachable, match="neither https nor loopback"):
        _client(issuer).metadata()


def test_a_redirect_on_loopback_is_followed(broken_provider):
    issuer, routes = broken_provider
    routes[DISCOVERY] = _redirect("/moved")
    routes["/moved"] = _json(_discovery(issuer))
    assert _client(issuer).metadata().token_endpoint == f"{issuer}/token"


def test_an_answer_too_large_is_refused(broken_provider):
    issuer, routes = broken_provider
    routes[DISCOVERY] = _json(_discovery(issuer, padding="x" * 512 * 1024))
    with pytest.raises(ProviderUnreachable, match="bytes"):
        _client(issuer).metadata()


def test_a_token_endpoint_that_refuses_our_client_is_an_outage_not_the_clients_fault(
    broken_provider,
):
    issuer, routes = broken_provider
    routes[DISCOVERY] = _json(_discovery(issuer))
    routes["/token"] = _json({"error": "invalid_client", "error_description": "secret?"}, 401)
    with pytest.raises(ProviderUnreachable, match="invalid_client") as caught:
        _client(issuer).redeem(
            code="c", code_verifier="v" * 43, redirect_uri="https://a/", nonce="n"
        )
    assert "secret?" not in str(caught.value)


def test_a_refused_code_is_the_clients_fault(broken_provider):
    issuer, routes = broken_provider
    routes[DISCOVERY] = _json(_discovery(issuer))
    routes["/token"] = _json({"error": "invalid_grant", "error_description": "<b>no</b>"}, 400)
    with pytest.raises(TokenRejected, match="invalid_grant") as caught:
        _client(issuer).redeem(
            code="c", code_verifier="v" * 43, redirect_uri="https://a/", nonce="n"
        )
    assert "<b>" not in str(caught.value)


def test_a_token_answer_without_an_id_token_is_an_outage(broken_provider):
    issuer, routes = broken_provider
    routes[DISCOVERY] = _json(_discovery(issuer))
    routes["/token"] = _json({"access_token": "at", "token_type": "Bearer"})
    with pytest.raises(ProviderUnreachable, match="no ID token"):
        _client(issuer).redeem(
            code="c", code_verifier="v" * 43, redirect_uri="https://a/", nonce="n"
        )
