"""One OpenID provider as a client sees it: discovery, keys, code redemption, ID token checks.

The provider's discovery document and JWKS are fetched with short timeouts
and kept (an hour); an ID token signed with a ``kid`` the kept keys lack
refetches them, at most once every few seconds. A provider that does not
answer (or answers nonsense) is given a short pause, during which its
endpoints answer 503 at once, without a call: nothing else waits on it.

Every ID token is checked by joserfc (signature by the provider's keys,
asymmetric algorithms only; ``iss``, ``aud``, ``azp``, ``exp``, ``iat``
with a small leeway, ``nonce``); nothing here parses a JWT by hand. What
the provider says when it refuses is never passed on to our client: a
refused code or token is one 400, a provider in trouble one 503.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import GuestProtocol, KeySet
from joserfc.jwt import JWTClaimsRegistry

from gridlink.oidc.config import OidcProvider, is_allowed_url

log = logging.getLogger(__name__)

# Connect and read timeouts of every call to a provider: a sign-in waits this long at most.
HTTP_TIMEOUT_SECONDS = (2.0, 3.0)
_MAX_REDIRECTS = 3
_MAX_BODY_BYTES = 256 * 1024
METADATA_TTL_SECONDS = 3600.0
# An unknown kid refetches the keys, at most this often (a forged kid cannot make us hammer).
KEY_REFETCH_SECONDS = 5.0
# After a failed call, the provider's endpoints answer 503 this long without calling it.
UNREACHABLE_PAUSE_SECONDS = 5.0
# Clock skew allowed between the provider and us, for exp and iat.
LEEWAY_SECONDS = 60
# Public-key signatures only: never "none", never a MAC keyed with the client secret.
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_ERROR_CODE = re.compile(r"\A[a-z_]{1,64}\Z")
# The token endpoint's errors that mean the client's code was bad, not our configuration.
_CLIENT_ERRORS = frozenset({"invalid_grant", "invalid_request"})


class ProviderUnreachable(Exception):
    """The provider did not answer, or answered what a working provider does not."""

    def __init__(self, problem: str, retry_after_seconds: float = UNREACHABLE_PAUSE_SECONDS):
        super().__init__(problem)
        self.retry_after_seconds = retry_after_seconds


class TokenRejected(Exception):
    """The code or the ID token failed verification; the reason is for the log, not the client."""


@dataclass(frozen=True)
class Metadata:
    """What Gridlink uses of a provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None


@dataclass(frozen=True)
class VerifiedIdentity:
    """Who the provider vouched for, from a verified ID token (and its userinfo)."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    preferred_username: str | None


class ProviderClient:
    """Talk to one provider on behalf of this process; safe to share between threads."""

    def __init__(
        self,
        config: OidcProvider,
        *,
        http: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._http = http or requests.Session()
        # One session serves every user's sign-in: it must carry nobody's cookies to another.
        self._http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: Metadata | None = None
        self._metadata_fetched = 0.0
        self._keys: KeySet | None = None
        self._keys_fetched = 0.0
        self._paused_until = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    def metadata(self) -> Metadata:
        """Return the provider's discovery metadata, fetching it when not kept or old."""
        with self._lock:
            now = self._clock()
            if self._metadata is None or now - self._metadata_fetched > METADATA_TTL_SECONDS:
                self._check_pause(now)
                self._metadata = self._guarded(self._fetch_metadata)
                self._metadata_fetched = now
            return self._metadata

    def known_metadata(self) -> Metadata | None:
        """Return the metadata if it can be had without waiting on a provider that is down.

        While another request is fetching it, or the provider fails, what is kept
        (maybe old, maybe nothing) is returned: an old copy still says where to start.
        """
        if not self._lock.acquire(blocking=False):
            return self._metadata
        self._lock.release()
        try:
            return self.metadata()
        except ProviderUnreachable:
            return self._metadata

    def redeem(
        self, *, code: str, code_verifier: str, redirect_uri: str, nonce: str
    ) -> VerifiedIdentity:
        """Redeem ``code`` at the token endpoint and return the identity its ID token proves.

        Raise ``TokenRejected`` for a code the provider refuses or a token
        that fails a check, ``ProviderUnreachable`` when the provider fails.
        """
        self._check_pause(self._clock())
        metadata = self.metadata()
        tokens = self._guarded(
            lambda: self._redeem_code(metadata, code, code_verifier, redirect_uri)
        )
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderUnreachable("the token endpoint answered no ID token")
        claims = self._verify_id_token(metadata, id_token, nonce)
        if claims.get("email") is None and metadata.userinfo_endpoint is not None:
            access_token = tokens.get("access_token")
            if isinstance(access_token, str):
                claims = {**claims, **self._userinfo(metadata, access_token, claims["sub"])}
        email = claims.get("email")
        return VerifiedIdentity(
            issuer=metadata.issuer,
            subject=claims["sub"],
            email=email if isinstance(email, str) and email else None,
            # Some providers write the boolean as a string.
            email_verified=claims.get("email_verified") in (True, "true"),
            preferred_username=_text(claims.get("preferred_username")),
        )

    # ------------------------------------------------------------------ the calls

    def _fetch_metadata(self) -> Metadata:
        issuer = self.config.issuer
        document = self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        if document.get("issuer") != issuer:
            # OpenID Connect Discovery 1.0 §4.3: it must be exactly the configured issuer.
            raise ProviderUnreachable("the discovery document names another issuer")
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            endpoints[name] = self._endpoint(document, name)
        userinfo = document.get("userinfo_endpoint")
        return Metadata(
            issuer=issuer,
            userinfo_endpoint=self._endpoint(document, "userinfo_endpoint") if userinfo else None,
            **endpoints,
        )

    @staticmethod
    def _endpoint(document: dict[str, Any], name: str) -> str:
        url = document.get(name)
        if not isinstance(url, str) or not is_allowed_url(url):
            raise ProviderUnreachable(f"the discovery document's {name} is not an https URL")
        return url

    def _current_keys(self, *, refresh: bool) -> KeySet:
        metadata = self.metadata()
        with self._lock:
            now = self._clock()
            stale = self._keys is None or now - self._keys_fetched > METADATA_TTL_SECONDS
            may_refetch = now - self._keys_fetched >= KEY_REFETCH_SECONDS
            if stale or (refresh and may_refetch):
                self._check_pause(now)
                document = self._guarded(lambda: self._get_json(metadata.jwks_uri))
                try:
                    self._keys = KeySet.import_key_set(document)
                except (JoseError, ValueError, TypeError, KeyError):
                    self._pause()
                    raise ProviderUnreachable("the JWKS holds no usable key") from None
                self._keys_fetched = now
            assert self._keys is not None
            return self._keys

    def _key_for(self, token: GuestProtocol) -> KeySet:
        """The provider's keys, refetched once if they lack the token's ``kid``."""
        keys = self._current_keys(refresh=False)
        kid = token.headers().get("kid")
        if kid is not None and not any(key.kid == kid for key in keys.keys):
            keys = self._current_keys(refresh=True)
        return keys

    def _verify_id_token(self, metadata: Metadata, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            token = jwt.decode(id_token, self._key_for, algorithms=ALGORITHMS)
        except ProviderUnreachable:
            raise
        except (JoseError, ValueError, TypeError, KeyError) as problem:
            raise TokenRejected(f"ID token signature: {type(problem).__name__}") from None
        claims = token.claims
        audiences = claims.get("aud")
        several = isinstance(audiences, list) and len(audiences) > 1
        registry = JWTClaimsRegistry(
            now=int(self._clock()),
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": metadata.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": self.config.client_id},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
            # OpenID Connect Core §3.1.3.7: with several audiences azp must name us.
            azp={"essential": several, "value": self.config.client_id},
        )
        try:
            registry.validate(claims)
        except JoseError as problem:
            reason = problem.description or problem.error
            raise TokenRejected(f"ID token claims: {reason}") from None
        return dict(claims)

    def _userinfo(self, metadata: Metadata, access_token: str, subject: str) -> dict[str, Any]:
        assert metadata.userinfo_endpoint is not None
        answer = self._guarded(
            lambda: self._get_json(
                metadata.userinfo_endpoint or "",
                headers={"Authorization": f"Bearer {access_token}"},
                follow=False,
            )
        )
        if answer.get("sub") != subject:
            # OpenID Connect Core §5.3.2: else the answer is of someone else.
            raise TokenRejected("userinfo names another subject")
        return {key: answer.get(key) for key in ("email", "email_verified", "preferred_username")}

    def _redeem_code(
        self, metadata: Metadata, code: str, code_verifier: str, redirect_uri: str
    ) -> dict[str, Any]:
        response = self._send(
            "POST",
            metadata.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": code_verifier,
                "redirect_uri": redirect_uri,
            },
            # client_secret_basic (RFC 6749 §2.3.1), the method every provider supports.
            auth=(self.config.client_id, self.config.client_secret),
        )
        body = response.json_object()
        if response.status == 200 and body is not None:
            return body
        error = body.get("error") if body else None
        error = error if isinstance(error, str) and _ERROR_CODE.match(error) else None
        if response.status in (400, 401) and error in _CLIENT_ERRORS:
            raise TokenRejected(f"the token endpoint refused the code ({error})")
        # invalid_client, a 5xx...: the provider or our registration there is at fault.
        raise ProviderUnreachable(f"the token endpoint answered {response.status} ({error})")

    def _get_json(
        self, url: str, *, headers: dict[str, str] | None = None, follow: bool = True
    ) -> dict[str, Any]:
        response = self._send("GET", url, headers=headers, follow=follow)
        body = response.json_object()
        if response.status != 200 or body is None:
            raise ProviderUnreachable(f"{url} answered {response.status}")
        return body

    def _send(
        self,
        method: str,
        url: str,
        *,
        follow: bool = False,
        **options: Any,
    ) -> _Answer:
        """Call the provider; follow redirects (of a GET without credentials) to allowed URLs."""
        for _ in range(_MAX_REDIRECTS + 1):
            if not is_allowed_url(url):
                raise ProviderUnreachable("sent to a URL that is neither https nor loopback")
            try:
                with self._http.request(
                    method,
                    url,
                    timeout=HTTP_TIMEOUT_SECONDS,
                    allow_redirects=False,
                    stream=True,
                    **options,
                ) as response:
                    content = _bounded_content(response)
            except requests.RequestException as problem:
                raise ProviderUnreachable(f"{type(problem).__name__} calling {url}") from None
            location = response.headers.get("Location")
            if not (follow and response.is_redirect and location):
                return _Answer(response.status_code, content)
            url = urljoin(url, location)
        raise ProviderUnreachable("too many redirects")

    # ------------------------------------------------------------------ availability

    def _check_pause(self, now: float) -> None:
        if now < self._paused_until:
            raise ProviderUnreachable("recently unreachable", self._paused_until - now)

    def _pause(self) -> None:
        self._paused_until = self._clock() + UNREACHABLE_PAUSE_SECONDS

    def _guarded(self, call: Callable[[], Any]) -> Any:
        """Run ``call``; if the provider fails, pause calls to it and log why (never a body)."""
        try:
            return call()
        except ProviderUnreachable as problem:
            self._pause()
            log.warning(
                "OpenID provider unavailable: %s", problem, extra={"provider": self.config.name}
            )
            raise


@dataclass(frozen=True)
class _Answer:
    status: int
    content: bytes

    def json_object(self) -> dict[str, Any] | None:
        try:
            body = json.loads(self.content)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None


def _bounded_content(response: requests.Response) -> bytes:
    content = bytearray()
    for chunk in response.iter_content(64 * 1024):
        content += chunk
        if len(content) > _MAX_BODY_BYTES:
            raise ProviderUnreachable(f"an answer of more than {_MAX_BODY_BYTES} bytes")
    return bytes(content)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
