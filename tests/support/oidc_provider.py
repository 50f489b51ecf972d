"""A real OpenID provider on loopback for the tests: panva's oidc-provider, run by Node.

``OpenIdProvider.start(...)`` runs ``tests/support/oidc/provider.mjs`` (its npm
packages installed with ``npm ci`` when missing, Node and npm with apt-get
when root, as the cluster's PostgreSQL is) and ``stop()`` ends it by its pid.
``sign_in(account)`` plays the client's browser part over HTTP: it asks for
authorization with PKCE, a nonce and a state, fills the provider's dev login
and consent forms, and returns the code with what redeeming it needs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import selectors
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

from gridlink.oidc.config import OidcProvider
from infra.binaries import program

OP_DIRECTORY = Path(__file__).parent / "oidc"
REDIRECT_URI = "https://app.example/callback"
CLIENT_ID = "gridlink-test"
_START_SECONDS = 30


def install_node_packages() -> None:
    """Install the provider's npm packages from the lockfile, unless they are there already."""
    installed = OP_DIRECTORY / "node_modules" / ".package-lock.json"
    lockfile = OP_DIRECTORY / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lockfile.stat().st_mtime:
        return
    npm = program("npm", "npm", print)
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=OP_DIRECTORY, check=True
    )


@dataclass(frozen=True)
class Authorization:
    """What the client holds after the browser part: the four fields Gridlink redeems."""

    code: str
    code_verifier: str
    redirect_uri: str
    nonce: str

    def body(self) -> dict[str, str]:
        return {
            "code": self.code,
            "code_verifier": self.code_verifier,
            "redirect_uri": self.redirect_uri,
            "nonce": self.nonce,
        }


@dataclass
class OpenIdProvider:
    """One oidc-provider process with one registered client."""

    name: str
    log_path: Path
    id_token_ttl: int = 600
    clock_skew_seconds: int = 0
    foreign_jwks: bool = False
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = 0
    _process: subprocess.Popen[str] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configured(self) -> OidcProvider:
        """This provider as Gridlink's settings name it."""
        return OidcProvider(self.name, self.issuer, CLIENT_ID, self.client_secret)

    def start(self) -> OpenIdProvider:
        """Start the process (on ``port`` if set, else a free one); wait until it listens."""
        node = program("node", "nodejs", print)
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "OP_PORT": str(self.port),
            "OP_CLIENT_ID": CLIENT_ID,
            "OP_CLIENT_SECRET": self.client_secret,
            "OP_REDIRECT_URI": REDIRECT_URI,
            "OP_ID_TOKEN_TTL": str(self.id_token_ttl),
            "OP_CLOCK_SKEW_SECONDS": str(self.clock_skew_seconds),
            "OP_FOREIGN_JWKS": "1" if self.foreign_jwks else "0",
        }
        with self.log_path.open("a") as log:
            self._process = subprocess.Popen(
                [node, "provider.mjs"],
                cwd=OP_DIRECTORY,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self._process.stdout is not None
        self.port = _listening_port(self._process.stdout, self.log_path)
        return self

    def stop(self) -> None:
        """End the process (by its pid) and wait for it."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def restart(self) -> None:
        """Start again on the same port: new signing keys, no sessions, same issuer."""
        self.stop()
        self.start()

    def sign_in(self, account: str, *, nonce: str | None = None) -> Authorization:
        """Play the browser part for ``account``; return the code and what redeems it."""
        code_verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        nonce = nonce or secrets.token_urlsafe(16)
        state = secrets.token_urlsafe(16)
        query = urlencode(
            {
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT_URI,
                "response_type": "code",
                "scope": "openid email profile",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        with requests.Session() as browser:
            location = f"{self.issuer}/auth?{query}"
            for _ in range(12):
                answer = browser.get(location, allow_redirects=False, timeout=10)
                if answer.status_code == 200:
                    answer = _submit_form(browser, answer, account)
                if answer.status_code not in (302, 303):
                    raise AssertionError(
                        f"the provider answered {answer.status_code}: {answer.text}"
                    )
                location = urljoin(answer.url, answer.headers["Location"])
                if location.startswith(REDIRECT_URI):
                    return _authorization(location, state, code_verifier, nonce)
        raise AssertionError("the provider never sent the browser back to the client")


def _submit_form(
    browser: requests.Session, page: requests.Response, account: str
) -> requests.Response:
    """Fill the dev interaction's form: a login (any account) or a consent."""
    form = _Form()
    form.feed(page.text)
    if form.action is None:
        raise AssertionError(f"no form on the provider's page: {page.text[:500]}")
    fields = dict(form.hidden)
    if fields.get("prompt") == "login":
        fields.update(login=account, password="any password the dev login takes")
    return browser.post(
        urljoin(page.url, form.action), data=fields, allow_redirects=False, timeout=10
    )


def _authorization(location: str, state: str, code_verifier: str, nonce: str) -> Authorization:
    answer = {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}
    if answer.get("state") != state or "code" not in answer:
        raise AssertionError(f"the provider answered the client {answer}")
    return Authorization(answer["code"], code_verifier, REDIRECT_URI, nonce)


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = values.get("action")
        elif tag == "input" and values.get("type") == "hidden" and values.get("name"):
            self.hidden[values["name"] or ""] = values.get("value") or ""


def _listening_port(stdout: IO[str], log_path: Path) -> int:
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        if not selector.select(timeout=_START_SECONDS):
            raise RuntimeError(f"the OpenID provider did not start; see {log_path}")
    line = stdout.readline()
    if not line.startswith("listening "):
        raise RuntimeError(f"the OpenID provider did not start ({line!r}); see {log_path}")
    return int(line.split()[1])


# The providers the tests run, by name: a plain one; one whose JWKS holds another key
# under its signing key's kid; one whose clock runs 15 minutes late, so each ID token it
# issues expired long before it is redeemed; and one that the tests stop and start.
PROVIDER_KINDS: dict[str, dict[str, Any]] = {
    "local": {},
    "forged": {"foreign_jwks": True},
    "late": {"clock_skew_seconds": -900, "id_token_ttl": 60},
    "flaky": {},
}


@contextmanager
def providers_running(directory: Path) -> Iterator[dict[str, OpenIdProvider]]:
    """Start every provider of ``PROVIDER_KINDS`` (logs in ``directory``); stop them after."""
    install_node_packages()
    started: list[OpenIdProvider] = []
    try:
        for name, options in PROVIDER_KINDS.items():
            started.append(OpenIdProvider(name, directory / f"{name}.log", **options).start())
        yield {provider.name: provider for provider in started}
    finally:
        for provider in started:
            provider.stop()
