"""Staging's own secrets: a certificate authority, each host's certificates, every password and key.

``gridlink staging up`` makes them the first time it runs, under
``var/staging/secrets``, renders them into the hosts' configuration and keeps
them until ``staging down --purge``: every staging has its own, and none is in
the repository, the inventory, a log or a command line. ``rotate`` replaces one.

Layout (the directories are 0711: a service opens its own files by name and
lists nothing)::

    secrets/ca.crt                  the staging CA's certificate: every client trusts it
    secrets/ca.key                  its key, 0600 root: only ``staging up`` signs
    secrets/<host>/<service>.crt    a certificate for that host's name and address
    secrets/<host>/<service>.key    its key, 0600, owned by the user the service runs as
    secrets/passwords/<name>        one password or key each, 0600 root (the directory 0700)

On real hosts the same names hold certificates from the operator's own CA and
passwords from their vault; the rendered files do not change.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.files import write_private

CERTIFICATE_DAYS = 365
_PASSWORD_BYTES = 32  # 256 bits, URL-safe: fits every config syntax without quoting
_PUBLIC_DIRECTORY = 0o711


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as files a service is configured with."""

    certificate: Path
    key: Path


class Secrets:
    """The secrets of one staging, made on first use and kept under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # ------------------------------------------------------------------ passwords and keys

    def password(self, name: str) -> str:
        """Return the password (or key) called ``name``, generating it the first time."""
        path = self._password_file(name)
        if not path.exists():
            return self.rotate(name)
        return path.read_text().strip()

    def has(self, name: str) -> bool:
        """Tell whether the password called ``name`` was made (without making it)."""
        return self._password_file(name).exists()

    def rotate(self, name: str) -> str:
        """Replace the password called ``name`` with a new random one and return it."""
        return self.restore(name, secrets.token_urlsafe(_PASSWORD_BYTES))

    def restore(self, name: str, value: str) -> str:
        """Keep ``value`` as the password called ``name`` again (a rotation that did not happen)."""
        write_private(self._password_file(name), value + "\n")
        return value

    def _password_file(self, name: str) -> Path:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"a secret's name is letters, digits, - and _: {name!r}")
        directory = self.root / "passwords"
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        return directory / name

    # ------------------------------------------------------------------ certificates

    @property
    def ca_certificate(self) -> Path:
        """The staging CA's certificate, which every client is told to trust."""
        self._ensure_ca()
        return self.root / "ca.crt"

    def certificate(
        self, host: str, service: str, names: Iterable[str], owner: str | None = None
    ) -> KeyPair:
        """Return ``service``'s key pair on ``host``, issuing it the first time.

        ``names`` are the addresses and DNS names clients reach the service by
        (``verify-full`` checks them); the certificate serves and authenticates
        as a client alike (etcd peers and Patroni's etcd client need both).
        """
        pair = self.key_pair(host, service)
        self._directory(self.root / host)
        if not (pair.certificate.exists() and pair.key.exists()):
            self._issue(pair, common_name=f"{service}.{host}", names=list(names), owner=owner)
        return pair

    def key_pair(self, host: str, service: str) -> KeyPair:
        """Return where ``service``'s certificate and key on ``host`` are, without issuing them."""
        directory = self.root / host
        return KeyPair(directory / f"{service}.crt", directory / f"{service}.key")

    def purge(self) -> None:
        """Forget every secret of this staging."""
        shutil.rmtree(self.root, ignore_errors=True)

    def _ensure_ca(self) -> None:
        certificate, key_file = self.root / "ca.crt", self.root / "ca.key"
        if certificate.exists() and key_file.exists():
            return
        self._directory(self.root)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gridlink staging CA")])
        now = _now()
        built = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(key_file, _private_pem(key))
        certificate.write_bytes(built.public_bytes(serialization.Encoding.PEM))
        certificate.chmod(0o644)

    def _issue(self, pair: KeyPair, common_name: str, names: list[str], owner: str | None) -> None:
        self._ensure_ca()
        ca_key = serialization.load_pem_private_key((self.root / "ca.key").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca = x509.load_pem_x509_certificate((self.root / "ca.crt").read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        built = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        write_private(pair.key, _private_pem(key), owner)
        pair.certificate.write_bytes(built.public_bytes(serialization.Encoding.PEM))
        pair.certificate.chmod(0o644)

    @staticmethod
    def _directory(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(_PUBLIC_DIRECTORY)
        return path


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    if not names:
        raise ValueError("a certificate needs at least one name to be verified against")
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return general


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
