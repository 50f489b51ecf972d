"""The OpenID providers an operator configured: names, issuers, clients, read from variables.

``GRIDLINK_OIDC_PROVIDERS`` names them (``google,gitlab``); each name has
``GRIDLINK_OIDC_<NAME>_ISSUER``, ``_CLIENT_ID`` and ``_CLIENT_SECRET``. An
issuer, and every URL the provider sends us to, is ``https``, or ``http`` on
a loopback address (a provider run beside the tests). A client secret never
appears in an error, a ``repr`` or a log line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PROVIDERS_VARIABLE = "GRIDLINK_OIDC_PROVIDERS"
# Lowercase letters and digits: the name is a path segment and part of a variable's name.
_NAME = re.compile(r"\A[a-z][a-z0-9]{0,31}\Z")
# A literal segment under /api/auth/oidc/: no provider may take it.
RESERVED_NAMES = frozenset({"signup"})
DEFAULT_SCOPES = ("openid", "email", "profile")


class ProviderSettingError(ValueError):
    """A provider's variable has a value Gridlink cannot use; ``variable`` names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(problem)
        self.variable = variable


@dataclass(frozen=True)
class OidcProvider:
    """One provider: where it is and the client Gridlink is registered as there."""

    name: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = DEFAULT_SCOPES


def provider_variable(name: str, suffix: str) -> str:
    """Name the variable ``suffix`` (``ISSUER``, ``CLIENT_ID``, ``CLIENT_SECRET``) of ``name``."""
    return f"GRIDLINK_OIDC_{name.upper()}_{suffix}"


def is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_allowed_url(url: str) -> bool:
    """Tell whether Gridlink may talk to ``url``: https, or http on a loopback address."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is part of the check
    except ValueError:
        return False
    if not parts.hostname or parts.username or parts.password:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))


def parse_names(raw: str) -> tuple[str, ...]:
    """Parse ``GRIDLINK_OIDC_PROVIDERS``: comma-separated names, each once."""
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    for name in names:
        if not _NAME.match(name):
            raise ValueError(
                f"{name!r} is not a provider name: use lowercase letters and digits "
                "(at most 32, a letter first), as in google"
            )
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is reserved: choose another provider name")
    if len(set(names)) != len(names):
        raise ValueError("names a provider twice")
    return names


def read_providers(raw: str, environ: Mapping[str, str]) -> tuple[OidcProvider, ...]:
    """Read every provider ``raw`` names from ``environ``; raise ``ProviderSettingError``."""
    return tuple(_read_provider(name, environ) for name in parse_names(raw))


def _read_provider(name: str, environ: Mapping[str, str]) -> OidcProvider:
    issuer_variable = provider_variable(name, "ISSUER")
    issuer = _required(environ, issuer_variable)
    if not is_allowed_url(issuer) or urlsplit(issuer).query or urlsplit(issuer).fragment:
        raise ProviderSettingError(
            issuer_variable,
            "must be an https URL without query or fragment (http only on a loopback "
            f"address), as in https://accounts.example (got {issuer!r})",
        )
    client_id = _required(environ, provider_variable(name, "CLIENT_ID"))
    # The secret's value is never repeated in an error: only that it is missing.
    client_secret = _required(environ, provider_variable(name, "CLIENT_SECRET"))
    return OidcProvider(name, issuer, client_id, client_secret)


def _required(environ: Mapping[str, str], variable: str) -> str:
    value = environ.get(variable, "").strip()
    if not value:
        raise ProviderSettingError(
            variable, "must be set for each provider GRIDLINK_OIDC_PROVIDERS names"
        )
    return value


def render_providers(providers: tuple[OidcProvider, ...]) -> dict[str, str]:
    """Return the variables that give a child process these providers."""
    environ = {PROVIDERS_VARIABLE: ",".join(provider.name for provider in providers)}
    for provider in providers:
        environ[provider_variable(provider.name, "ISSUER")] = provider.issuer
        environ[provider_variable(provider.name, "CLIENT_ID")] = provider.client_id
        environ[provider_variable(provider.name, "CLIENT_SECRET")] = provider.client_secret
    return environ
