"""One validated settings object, built once from ``GRIDLINK_*`` variables.

Nothing here runs at import time: ``Settings.from_env()`` is called by the
entry points (``get_app()``, the CLI) and the result is passed explicitly.
With no variable set, the addresses of the local cluster (``gridlink cluster
up``) are used.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import make_url

from gridlink.accounts.seals import MIN_KEY_CHARACTERS
from gridlink.db.urls import libpq_url, server_urls, sqlalchemy_url
from gridlink.oidc.config import (
    PROVIDERS_VARIABLE,
    OidcProvider,
    ProviderSettingError,
    read_providers,
    render_providers,
)

# The addresses of the local cluster that `gridlink cluster up` starts
# (infra/cluster.py; a unit test keeps the two in step).
LOCAL_DATABASE_URL = "postgresql+psycopg2://gridlink@127.0.0.1:15432/gridlink"
LOCAL_REPLICA_URLS = ("postgresql+psycopg2://gridlink@127.0.0.1:15433/gridlink",)
LOCAL_REDIS_URL = "redis://127.0.0.1:16379/0"

T = TypeVar("T")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# In GRIDLINK_TRUSTED_PROXIES, the peer of a unix-socket connection (no address).
UNIX_SOCKET_PEER = "unix"


class SettingsError(ValueError):
    """A ``GRIDLINK_*`` variable has a value Gridlink cannot use."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class MailBackend:
    """Where outgoing mail goes: the console, one ``.eml`` file per mail, or SMTP."""

    kind: str  # "console" | "file" | "smtp"
    directory: Path | None = None
    host: str | None = None
    port: int | None = None

    def render(self) -> str:
        """Return this backend as ``GRIDLINK_MAIL_BACKEND`` writes it."""
        if self.kind == "file":
            return f"file:{self.directory}"
        if self.kind == "smtp":
            return f"smtp://{self.host}:{self.port}"
        return self.kind


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies allowed to say who the client is (``X-Forwarded-For``)."""

    networks: tuple[IPNetwork, ...] = ()
    # Whether a unix-socket peer (a proxy on this host) is one of them.
    unix_socket: bool = False

    @classmethod
    def parse(cls, raw: str) -> TrustedProxies:
        """Parse comma-separated addresses or CIDRs (IPv4 or IPv6), and ``unix``."""
        networks = []
        unix_socket = False
        for entry in (part.strip() for part in raw.split(",")):
            if not entry:
                continue
            if entry == UNIX_SOCKET_PEER:
                unix_socket = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an address or network: use e.g. 10.0.0.5, "
                    f"10.0.0.0/8, fd00::/8 or {UNIX_SOCKET_PEER}"
                ) from None
        return cls(tuple(networks), unix_socket)

    def render(self) -> str:
        """Return these proxies as ``GRIDLINK_TRUSTED_PROXIES`` writes them."""
        entries = [
            str(network.network_address)
            if network.prefixlen == network.max_prefixlen
            else str(network)
            for network in self.networks
        ]
        return ",".join([*entries, UNIX_SOCKET_PEER] if self.unix_socket else entries)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address) and any(
            address in network for network in self.networks
        )


DEVELOPMENT = "development"
PRODUCTION = "production"


# --------------------------------------------------------------------------- parsers


def _postgres_url(raw: str) -> str:
    # One host, or several as libpq lists them (h1:5432,h2:5432): see database_urls.
    return sqlalchemy_url(raw)


def _postgres_url_list(raw: str) -> tuple[str, ...]:
    return tuple(_postgres_url(url.strip()) for url in raw.split(",") if url.strip())


def _redis_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://host:port/db URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("must name a host, as in redis://127.0.0.1:6379/0")
    return raw


def _optional_path(raw: str) -> str:
    if raw and not raw.startswith("/"):
        raise ValueError("must be an absolute path, or empty")
    return raw


def _is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine: a loopback address, localhost or a unix socket."""
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cache_keys(raw: str) -> tuple[str, ...]:
    """Parse comma-separated seal keys: the first seals, all open (``gridlink.accounts.seals``)."""
    keys = tuple(key.strip() for key in raw.split(",") if key.strip())
    if any(len(key) < MIN_KEY_CHARACTERS for key in keys):
        raise ValueError(
            f"each key must be at least {MIN_KEY_CHARACTERS} random characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if len(set(keys)) != len(keys):
        raise ValueError("a key is listed twice")
    return keys


def _address_list(raw: str) -> tuple[tuple[str, int], ...]:
    """Parse comma-separated host:port addresses (Sentinels), e.g. 10.77.0.21:26379."""
    addresses = []
    for part in (piece.strip() for piece in raw.split(",")):
        if not part:
            continue
        host, colon, port = part.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port addresses separated by commas")
        addresses.append((host.strip("[]"), int(port)))
    return tuple(addresses)


def _service_name(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", raw):
        raise ValueError("must be a Sentinel master name (letters, digits, . _ -)")
    return raw


def _origin_list(raw: str) -> tuple[str, ...]:
    """Parse comma-separated exact origins; a browser sends them lowercase, without a path."""
    origins = []
    for origin in (part.strip() for part in raw.split(",")):
        if not origin:
            continue
        parts = urlsplit(origin)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ValueError(
                f"{origin!r} is not an origin: use scheme://host[:port], as in https://app.example"
            )
        try:
            parts.port  # noqa: B018 - parsing the port is the check
        except ValueError:
            raise ValueError(f"{origin!r} has a port that is not a number") from None
        origins.append(origin.lower())
    return tuple(origins)


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _environment(raw: str) -> str:
    if raw not in (DEVELOPMENT, PRODUCTION):
        raise ValueError(f"must be {DEVELOPMENT} or {PRODUCTION}")
    return raw


def _mail_backend(raw: str) -> MailBackend:
    if raw == "console":
        return MailBackend("console")
    if raw.startswith("file:"):
        directory = raw[len("file:") :]
        if not directory:
            raise ValueError("file: needs a directory, as in file:/var/mail/gridlink")
        return MailBackend("file", directory=Path(directory))
    if raw.startswith("smtp://"):
        parts = urlsplit(raw)
        try:
            port = parts.port or 25
        except ValueError:
            raise ValueError("smtp:// needs a numeric port") from None
        if not parts.hostname:
            raise ValueError("smtp:// needs a host, as in smtp://127.0.0.1:25")
        return MailBackend("smtp", host=parts.hostname, port=port)
    raise ValueError("must be console, file:<directory> or smtp://host:port")


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value < 0:
        raise ValueError("must be 0 or a positive whole number")
    return value


def _bind_address(raw: str) -> str:
    host, colon, port = raw.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be address:port, as in 127.0.0.1:8000")
    return raw


def _optional_bind_address(raw: str) -> str:
    return _bind_address(raw) if raw else ""


def _render_addresses(addresses: tuple[tuple[str, int], ...]) -> str:
    return ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in addresses
    )


def _render_urls(urls: tuple[str, ...]) -> str:
    return ",".join(libpq_url(url) for url in urls)


def _joined(values: tuple[str, ...]) -> str:
    return ",".join(values)


# --------------------------------------------------------------------------- the settings


@dataclass(frozen=True)
class Variable(Generic[T]):
    """How one setting is read from, and written back to, its ``GRIDLINK_*`` variable.

    A ``secret`` one is never repeated in an error; a URL's password never is either.
    A setting whose variable names others (each OpenID provider has its own
    issuer, client id and secret) reads them with ``read_with`` and writes
    them back with ``write_with``; ``name`` is the variable that names them.
    """

    name: str
    parse: Callable[[str], T]
    render: Callable[[T], str] = str
    secret: bool = False
    read_with: Callable[[str, Mapping[str, str]], T] | None = None
    write_with: Callable[[T], dict[str, str]] | None = None

    def shown(self, raw: str) -> str:
        """Return ``raw`` as an error may repeat it."""
        if self.secret:
            return "(a secret, not shown)"
        return repr(_URL_PASSWORD.sub(r"\1:***@", raw))

    def read(self, raw: str, environ: Mapping[str, str]) -> T:
        """Parse this variable's ``raw`` value (and, for a family, the variables it names)."""
        if self.read_with is None:
            return self.parse(raw)
        try:
            return self.read_with(raw, environ)
        except ProviderSettingError as problem:
            # Its own message: a secret's value is never repeated in it.
            raise SettingsError(problem.variable, str(problem)) from None

    def write(self, value: T) -> dict[str, str]:
        """Return the variables that carry ``value`` to a child process."""
        if self.write_with is None:
            return {self.name: self.render(value)}
        return self.write_with(value)


_URL_PASSWORD = re.compile(r"(://[^:@/]*):[^@/]*@")


def setting(
    name: str,
    default: T,
    parse: Callable[[str], T],
    render: Callable[[T], str] = str,
    *,
    secret: bool = False,
) -> T:
    """Declare a ``Settings`` field: its variable, parser and renderer beside its default."""
    variable = Variable(name, parse, render, secret)
    return field(default=default, metadata={_VARIABLE: variable})


def setting_family(
    name: str,
    default: T,
    read: Callable[[str, Mapping[str, str]], T],
    write: Callable[[T], dict[str, str]],
) -> T:
    """Declare a field read from ``name`` and the variables its value names (see ``Variable``)."""
    variable: Variable[T] = Variable(
        name, lambda raw: read(raw, {}), read_with=read, write_with=write
    )
    return field(default=default, metadata={_VARIABLE: variable})


_VARIABLE = "variable"


@dataclass(frozen=True)
class Settings:
    """Every setting, each declared once with its variable; ``from_env`` and ``to_environ``
    follow from the declarations."""

    database_url: str = setting(
        "GRIDLINK_DATABASE_URL", LOCAL_DATABASE_URL, _postgres_url, libpq_url
    )
    replica_urls: tuple[str, ...] = setting(
        "GRIDLINK_REPLICA_URLS", LOCAL_REPLICA_URLS, _postgres_url_list, _render_urls
    )
    redis_url: str = setting("GRIDLINK_REDIS_URL", LOCAL_REDIS_URL, _redis_url)
    # With sentinels, they name the master of redis_service; redis_url gives only the db number.
    redis_sentinels: tuple[tuple[str, int], ...] = setting(
        "GRIDLINK_REDIS_SENTINELS", (), _address_list, _render_addresses
    )
    redis_service: str = setting("GRIDLINK_REDIS_SERVICE", "gridlink", _service_name)
    max_replica_lag_seconds: float = setting(
        "GRIDLINK_MAX_REPLICA_LAG_SECONDS", 5.0, _positive_float, repr
    )
    # How long a fill from a replica stays cached when its lease proves it current.
    cache_fill_ttl_seconds: int = setting("GRIDLINK_CACHE_FILL_TTL_SECONDS", 3600, _positive_int)
    # Each server process's memory of recently read profiles, in bytes; 0 turns it off.
    near_cache_bytes: int = setting("GRIDLINK_NEAR_CACHE_BYTES", 32 * 1024 * 1024, _count)
    mail_backend: MailBackend = setting(
        "GRIDLINK_MAIL_BACKEND", MailBackend("console"), _mail_backend, MailBackend.render
    )
    token_ttl_days: int = setting("GRIDLINK_TOKEN_TTL_DAYS", 30, _positive_int)
    # A token unused this long ends before its lifetime (exact to the hour: see cache/tokens.py).
    token_idle_days: int = setting("GRIDLINK_TOKEN_IDLE_DAYS", 14, _positive_int)
    # An admin's token lives this long in all, decided when it is issued.
    admin_token_ttl_hours: int = setting("GRIDLINK_ADMIN_TOKEN_TTL_HOURS", 12, _positive_int)
    # Login throttling (API.md): a client is a device of the account, else an address.
    login_failures_per_client: int = setting("GRIDLINK_LOGIN_FAILURES_PER_CLIENT", 5, _positive_int)
    # Together, from every client without a device of the account.
    login_failures_per_account: int = setting(
        "GRIDLINK_LOGIN_FAILURES_PER_ACCOUNT", 100, _positive_int
    )
    login_failures_per_address: int = setting(
        "GRIDLINK_LOGIN_FAILURES_PER_ADDRESS", 50, _positive_int
    )
    # Wrong current passwords sent with one token (password or email change, deletion).
    password_checks_per_session: int = setting(
        "GRIDLINK_PASSWORD_CHECKS_PER_SESSION", 5, _positive_int
    )
    login_window_seconds: int = setting("GRIDLINK_LOGIN_WINDOW_SECONDS", 900, _positive_int)
    max_devices_per_user: int = setting("GRIDLINK_MAX_DEVICES_PER_USER", 50, _positive_int)
    max_grids_per_user: int = setting("GRIDLINK_MAX_GRIDS_PER_USER", 100, _positive_int)
    max_links_per_grid: int = setting("GRIDLINK_MAX_LINKS_PER_GRID", 100, _positive_int)
    # A profile document is re-rendered on every write and sent whole on every read.
    max_profile_bytes: int = setting("GRIDLINK_MAX_PROFILE_BYTES", 512 * 1024, _positive_int)
    password_resets_per_email: int = setting("GRIDLINK_PASSWORD_RESETS_PER_EMAIL", 3, _positive_int)
    password_resets_per_address: int = setting(
        "GRIDLINK_PASSWORD_RESETS_PER_ADDRESS", 20, _positive_int
    )
    password_reset_window_seconds: int = setting(
        "GRIDLINK_PASSWORD_RESET_WINDOW_SECONDS", 3600, _positive_int
    )
    # An hour, counting requests that pass the password check (each mails two addresses).
    email_changes_per_account: int = setting("GRIDLINK_EMAIL_CHANGES_PER_ACCOUNT", 5, _positive_int)
    signups_per_address: int = setting("GRIDLINK_SIGNUPS_PER_ADDRESS", 20, _positive_int)  # an hour
    # From everyone together.
    signups_per_minute: int = setting("GRIDLINK_SIGNUPS_PER_MINUTE", 60, _positive_int)
    # Password hashes run at once per process; 0: one per core.
    concurrent_hashes: int = setting("GRIDLINK_CONCURRENT_HASHES", 0, _count)
    # Server processes sharing the limits when Redis is down (`gridlink serve` sets it).
    server_processes: int = setting("GRIDLINK_SERVER_PROCESSES", 1, _positive_int)
    max_tokens_per_user: int = setting("GRIDLINK_MAX_TOKENS_PER_USER", 20, _positive_int)
    deleted_retention_days: int = setting("GRIDLINK_DELETED_RETENTION_DAYS", 30, _positive_int)
    # Exact origins (scheme://host[:port]) allowed to call the API from a browser.
    cors_origins: tuple[str, ...] = setting("GRIDLINK_CORS_ORIGINS", (), _origin_list, _joined)
    # "development" (`make run`) or "production": a server outside development
    # refuses to start without an explicit mail backend (see ``for_serving``).
    environment: str = setting("GRIDLINK_ENV", PRODUCTION, _environment)
    # Peers whose X-Forwarded-For names the client (addresses or networks; "unix").
    trusted_proxies: TrustedProxies = setting(
        "GRIDLINK_TRUSTED_PROXIES", TrustedProxies(), TrustedProxies.parse, TrustedProxies.render
    )
    # Where `gridlink serve` listens, and its worker processes (0: twice the cores).
    bind: str = setting("GRIDLINK_BIND", "127.0.0.1:8000", _bind_address)
    workers: int = setting("GRIDLINK_WORKERS", 0, _count)
    # A second, internal listener that serves /metrics alone, without a token, for the
    # scraper (bind it to an address only the monitoring network reaches); "" for none.
    metrics_bind: str = setting("GRIDLINK_METRICS_BIND", "", _optional_bind_address)
    # The certificate (PEM, chain included) and key `gridlink serve` answers TLS with on
    # every listener, the metrics one too; "" for plain HTTP (both or neither).
    tls_certificate: str = setting("GRIDLINK_TLS_CERTIFICATE", "", _optional_path)
    tls_key: str = setting("GRIDLINK_TLS_KEY", "", _optional_path)
    # The keys that seal token entries in Redis (gridlink.accounts.seals): the first seals,
    # all open. Unset, each server launch makes its own; hosts sharing a Redis share them.
    token_cache_keys: tuple[str, ...] = setting(
        "GRIDLINK_TOKEN_CACHE_KEYS", (), _cache_keys, _joined, secret=True
    )
    # OpenID Connect providers to sign in with; each name's issuer, client id and client
    # secret come from GRIDLINK_OIDC_<NAME>_ISSUER, _CLIENT_ID and _CLIENT_SECRET.
    oidc_providers: tuple[OidcProvider, ...] = setting_family(
        PROVIDERS_VARIABLE, (), read_providers, render_providers
    )

    @classmethod
    def variables(cls) -> dict[str, Variable[Any]]:
        """Return each field's variable, by field name, in declaration order."""
        return {each.name: each.metadata[_VARIABLE] for each in dataclasses.fields(cls)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build the settings from ``environ``; raise ``SettingsError`` on the first bad value."""
        values = {}
        for name, variable in cls.variables().items():
            raw = environ.get(variable.name)
            if raw is None:
                continue
            try:
                values[name] = variable.read(raw.strip(), environ)
            except SettingsError:
                raise
            except ValueError as problem:
                shown = variable.shown(raw)
                raise SettingsError(variable.name, f"{problem} (got {shown})") from None
        return cls(**values)

    def to_environ(self) -> dict[str, str]:
        """Return every ``GRIDLINK_*`` variable that gives a child process these settings."""
        environ: dict[str, str] = {}
        for name, variable in self.variables().items():
            environ.update(variable.write(getattr(self, name)))
        return environ

    @classmethod
    def for_serving(cls, environ: Mapping[str, str]) -> Settings:
        """Build the settings a server starts with, refusing what is unsafe outside development.

        The console mail backend, the default, writes reset tokens into the
        server's log: in production the backend must be chosen explicitly.
        """
        settings = cls.from_env(environ)
        if bool(settings.tls_certificate) != bool(settings.tls_key):
            raise SettingsError(
                "GRIDLINK_TLS_KEY" if settings.tls_certificate else "GRIDLINK_TLS_CERTIFICATE",
                "must be set with GRIDLINK_TLS_CERTIFICATE and GRIDLINK_TLS_KEY both, or neither",
            )
        if settings.environment != DEVELOPMENT and not environ.get("GRIDLINK_MAIL_BACKEND"):
            raise SettingsError(
                "GRIDLINK_MAIL_BACKEND",
                "must be set outside development (console, file:<directory> or "
                "smtp://host:port; or GRIDLINK_ENV=development): the default console "
                "backend writes reset tokens into the log",
            )
        if settings.environment != DEVELOPMENT:
            unprotected = settings.unprotected_link()
            if unprotected is not None:
                raise unprotected
        return settings

    def unprotected_link(self) -> SettingsError | None:
        """Name the first database or Redis link that leaves this host without TLS and a password.

        A server on loopback (``make run``, the tests) may speak plainly; one that
        reaches another host must verify it (``sslmode=verify-full``, ``rediss://``)
        and authenticate itself, or anyone on that network reads and writes its data.
        """
        variables = self.variables()
        for field_name, urls in (
            ("database_url", (self.database_url,)),
            ("replica_urls", self.replica_urls),
        ):
            for server in (make_url(each) for url in urls for each in server_urls(url)):
                verified = server.query.get("sslmode") == "verify-full"
                password = server.password or server.query.get("passfile")
                if not _is_loopback(server.host) and not (verified and password):
                    return SettingsError(
                        variables[field_name].name,
                        f"reaches {server.host} without TLS and a password: give it "
                        "sslmode=verify-full (with sslrootcert) and the role's password or "
                        "passfile (or GRIDLINK_ENV=development)",
                    )
        redis_url = urlsplit(self.redis_url)
        hosts: list[str | None] = [host for host, _port in self.redis_sentinels]
        hosts = hosts or [redis_url.hostname]
        remote = [host for host in hosts if host and not _is_loopback(host)]
        verified = redis_url.scheme == "rediss" and "ssl_cert_reqs=none" not in redis_url.query
        if remote and not (verified and redis_url.password):
            return SettingsError(
                variables["redis_url"].name,
                f"reaches {remote[0]} without TLS and a password: use "
                "rediss://user:password@... (with ssl_ca_certs) (or GRIDLINK_ENV=development)",
            )
        return None

    @property
    def hash_slots(self) -> int:
        """Password hashes one process may run at once."""
        return self.concurrent_hashes or os.cpu_count() or 1

    def replace(self, **changes: object) -> Settings:
        """Return a copy with ``changes`` applied (tests and the CLI use it)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
