"""PostgreSQL URLs with one host or several: libpq's form in, SQLAlchemy's form inside.

``GRIDLINK_DATABASE_URL`` may list every database host, as libpq does
(``postgresql://gridlink@db1:5432,db2:5432,db3:5432/gridlink?target_session_attrs=read-write``):
libpq then tries them in turn and keeps the one that accepts writes, so the
write engine follows the primary through a failover without a restart.
SQLAlchemy spells several hosts as repeated ``host`` parameters; this module
converts between the two and splits a URL into one URL per server (the
router probes each of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import URL, make_url

_DRIVER = "postgresql+psycopg2"  # Gridlink speaks psycopg2; SQLAlchemy would pick psycopg 3
_SCHEMES = ("postgresql", "postgresql+psycopg2", "postgres")
_SESSION_ONLY = ("target_session_attrs", "host", "port")


def sqlalchemy_url(raw: str) -> str:
    """Return the SQLAlchemy URL (psycopg2) of a libpq URL with one host or several.

    Raises ValueError, worded for a settings message, when it is not one.
    """
    scheme, separator, rest = raw.partition("://")
    if scheme not in _SCHEMES or not separator:
        raise ValueError("must be a postgresql://user@host:port/database URL")
    authority, slash, tail = rest.partition("/")
    credentials, at, hosts = authority.rpartition("@")
    if not hosts:  # perhaps SQLAlchemy's own form already: hosts as ?host=h1:p1&host=h2:p2
        url = make_url(f"{_DRIVER}://{authority}{slash}{tail}")
        listed = url.query.get("host") or ()
        for address in (listed,) if isinstance(listed, str) else listed:
            if not _host_and_port(address)[0]:
                listed = ()
        if not listed:
            raise ValueError("must be a postgresql://user@host:port/database URL")
        return url.render_as_string(False)
    addresses = [_host_and_port(part) for part in hosts.split(",")]
    if not all(host for host, _port in addresses):
        raise ValueError("must be a postgresql://user@host:port/database URL")
    if len(addresses) == 1:
        return make_url(f"{_DRIVER}://{authority}{slash}{tail}").render_as_string(False)
    url = make_url(f"{_DRIVER}://{credentials}{at}/{tail}")
    listed = tuple(f"{host}:{port}" if port else host for host, port in addresses)
    return url.update_query_dict({"host": listed}).render_as_string(False)


def _host_and_port(part: str) -> tuple[str, str]:
    if part.endswith("]") or ":" not in part:  # no port (an IPv6 host is bracketed)
        return part, ""
    host, _colon, port = part.rpartition(":")
    if not port.isdigit():
        raise ValueError("has a port that is not a number")
    return host, port


def server_urls(url: str) -> tuple[str, ...]:
    """Return one single-host URL per server ``url`` names, without session options."""
    parsed = make_url(url)
    hosts = parsed.query.get("host")
    plain = parsed.difference_update_query(_SESSION_ONLY)
    if hosts is None:
        return (plain.render_as_string(False),)
    listed = (hosts,) if isinstance(hosts, str) else hosts
    return tuple(_with_address(plain, address).render_as_string(False) for address in listed)


def _with_address(url: URL, address: str) -> URL:
    host, port = _host_and_port(address)
    return url.set(host=host.strip("[]"), port=int(port) if port else None)


def libpq_url(url: str) -> str:
    """Turn a SQLAlchemy URL (one host or several) into one libpq (psycopg2.connect) accepts."""
    parsed = make_url(url)
    hosts = parsed.query.get("host")
    if hosts is None:
        return parsed.set(drivername="postgresql").render_as_string(False)
    listed = (hosts,) if isinstance(hosts, str) else hosts
    credentials = ""
    if parsed.username is not None:
        credentials = quote(parsed.username, safe="")
        if parsed.password is not None:
            credentials += ":" + quote(str(parsed.password), safe="")
        credentials += "@"
    rest = {k: v for k, v in parsed.query.items() if k != "host"}
    query = f"?{urlencode(rest, doseq=True)}" if rest else ""
    return f"postgresql://{credentials}{','.join(listed)}/{parsed.database or ''}{query}"


def prefer_hosts(params: dict[str, Any], order: Sequence[str]) -> None:
    """Reorder a multi-host connection's ``host`` and ``port`` lists in place.

    ``params`` are the keyword arguments SQLAlchemy's psycopg2 dialect hands
    to ``psycopg2.connect`` (comma-separated ``host`` and ``port``); the
    addresses (``host:port``) named in ``order`` come first, in its order,
    the others after them as they were. libpq still tries every host and
    keeps the first that accepts writes: the order only decides which are
    tried first. A single host, or an address ``order`` does not name, is
    left alone.
    """
    hosts, ports = str(params.get("host", "")).split(","), str(params.get("port", "")).split(",")
    if len(hosts) < 2 or len(ports) != len(hosts) or not order:
        return
    rank = {address: index for index, address in enumerate(order)}
    pairs = sorted(
        zip(hosts, ports, strict=True),
        key=lambda pair: rank.get(f"{_bracketed(pair[0])}:{pair[1] or 5432}", len(rank)),
    )
    params["host"] = ",".join(host for host, _port in pairs)
    params["port"] = ",".join(port for _host, port in pairs)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
