"""How this machine reaches staging's services as their operator: verified TLS, its own credentials.

The driver, ``gridlink staging status``, the tests and ``make chaos`` run in
the machine's own namespace, which holds no secret of staging's; they read
what they need from the staging's secrets (``infra.staging.secrets``) when
they need it, and never put a password in a URL or on a command line:

- PostgreSQL: ``sslmode=verify-full`` against the staging CA, and libpq's
  ``passfile`` (``operator.pgpass``, 0600 root, beside the secrets) for the
  password, so a URL printed in an error names files, not secrets;
- Patroni's REST API and etcd: https, verified against the staging CA; the
  unsafe Patroni endpoints with its ``patroni-restapi`` credentials, etcd with
  the operator's own client certificate;
- Redis and Sentinel: TLS against the staging CA, as the ``monitor`` user (or
  ``operator`` to change a password: ``infra.staging.redis_acl``); HTTPS to the
  load balancers, the API hosts and the monitoring host through
  ``infra.http_client``, which ``driver.operate`` tells to trust the CA.

Staging is one per machine (its namespaces and bridge have fixed names), so
which staging this process drives is a process-wide fact: the driver sets it
(``use``) whenever it is handed a staging's folder; until then the default
one (``var/staging``) is assumed. That is what lets ``STAGING.write_url``,
``patroni.leader(STAGING)`` and ``hosts.redis_master(STAGING)`` work without
being told where the CA lives.
"""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from gridlink.project import VAR
from infra.files import reachable_root, write_private
from infra.staging.secrets import KeyPair, Secrets

STAGING_ROOT = VAR / "staging"
OPERATOR = "operator"  # the machine itself, as a client of staging's services
PATRONI_USER = "patroni"  # restapi.authentication's username (the password: patroni-restapi)

_root: Path | None = None


def default_root() -> Path:
    """Return the folder of ``gridlink staging``'s own staging (``var/staging``)."""
    return reachable_root(STAGING_ROOT)


def use(root: Path) -> None:
    """Drive the staging kept under ``root`` (its ``Paths.root``) from now on in this process."""
    global _root
    _root = root


def root() -> Path:
    """Return the folder of the staging this process drives."""
    return _root if _root is not None else default_root()


def secrets() -> Secrets:
    return Secrets(root() / "secrets")


def ca_file() -> Path:
    """Return where the staging CA's certificate is (``staging up`` makes it)."""
    return secrets().root / "ca.crt"


def passfile() -> Path:
    """Return the operator's libpq password file (written by ``write_passfile``)."""
    return secrets().root / "operator.pgpass"


def write_passfile(entries: dict[str, str]) -> None:
    """Write the operator's password file: ``entries`` maps a role to its password (any host)."""
    lines = "".join(f"*:*:*:{role}:{password}\n" for role, password in entries.items())
    write_private(passfile(), lines)


def libpq_options() -> dict[str, str]:
    """Return the libpq options of every operator connection: verify-full, the passfile."""
    return {"sslmode": "verify-full", "sslrootcert": str(ca_file()), "passfile": str(passfile())}


def api_login_file() -> Path:
    """Return where staging keeps which of the API's two logins is in use (state, not a secret)."""
    return root() / "api-database-role"


def api_login() -> str | None:
    """Return the API's database login in use; None before any rotation (the first one)."""
    try:
        return api_login_file().read_text().strip() or None
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------- https


def operator_certificate() -> KeyPair:
    """Return the operator's client certificate (etcd and Patroni ask every client for one)."""
    return secrets().certificate(OPERATOR, "client", [OPERATOR])


def https_context(client_certificate: bool = False) -> ssl.SSLContext:
    """Return a context that verifies staging's servers (presenting the operator's certificate)."""
    context = ssl.create_default_context(cafile=str(ca_file()))
    if client_certificate:
        pair = operator_certificate()
        context.load_cert_chain(str(pair.certificate), str(pair.key))
    return context


def https_request(
    address: str,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    client_certificate: bool = False,
    authenticate: bool = False,
    timeout: float = 3.0,
) -> tuple[int, bytes] | None:
    """Ask a staging service over verified https; return its status and body, None if no answer.

    ``authenticate`` sends Patroni's REST API credentials (its unsafe endpoints want them).
    """
    request = urllib.request.Request(f"https://{address}{path}", data=body, method=method)
    if authenticate:
        token = f"{PATRONI_USER}:{secrets().password('patroni-restapi')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        context = https_context(client_certificate)
        # An https URL built above, never a file: or other scheme.
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:  # noqa: S310
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as refused:
        return int(refused.code), b""
    except OSError:
        return None


def https_status(
    address: str, path: str, *, client_certificate: bool = False, timeout: float = 3.0
) -> int | None:
    """Return the status of a verified https GET of ``path`` at ``address``, None if no answer."""
    answer = https_request(address, path, client_certificate=client_certificate, timeout=timeout)
    return None if answer is None else answer[0]
