"""How this machine reaches staging's services as their operator: verified TLS, its own credentials.

The driver, ``gridlink staging status``, the tests and ``make chaos`` run in
the machine's own namespace, which holds no secret of staging's; they read
what they need from the staging's secrets (``infra.staging.secrets``) when
they need it, and never put a password in a URL or on a command line.

Staging is one per machine (its namespaces and bridge have fixed names), so
which staging this process drives is a process-wide fact: the driver sets it
(``use``) whenever it is handed a staging's folder; until then the default
one (``var/staging``) is assumed. That is what lets
``hosts.redis_master(STAGING)`` work without being told where the CA lives.
"""

from __future__ import annotations

from pathlib import Path

from gridlink.project import VAR
from infra.files import reachable_root
from infra.staging.secrets import Secrets

STAGING_ROOT = VAR / "staging"

_root: Path | None = None


def use(root: Path) -> None:
    """Drive the staging kept under ``root`` (its ``Paths.root``) from now on in this process."""
    global _root
    _root = root


def root() -> Path:
    """Return the folder of the staging this process drives."""
    return _root if _root is not None else reachable_root(STAGING_ROOT)


def secrets() -> Secrets:
    return Secrets(root() / "secrets")


def ca_file() -> Path:
    """Return where the staging CA's certificate is (``staging up`` makes it)."""
    return secrets().root / "ca.crt"
