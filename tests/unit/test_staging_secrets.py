"""Staging's secrets: made once per staging, verified by its own CA, readable by their owner."""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from infra.files import write_private
from infra.staging.secrets import Secrets


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_password_is_made_once_and_kept_private(tmp_path):
    store = Secrets(tmp_path / "secrets")

    first = store.password("api-database")

    assert len(first) >= 40
    assert store.password("api-database") == first
    assert store.password("replication") != first
    assert mode(tmp_path / "secrets" / "passwords" / "api-database") == 0o600
    assert mode(tmp_path / "secrets" / "passwords") == 0o700


def test_rotating_a_password_replaces_it_and_only_it(tmp_path):
    store = Secrets(tmp_path / "secrets")
    old, other = store.password("api-redis"), store.password("sentinel")

    new = store.rotate("api-redis")

    assert new != old
    assert store.password("api-redis") == new
    assert store.password("sentinel") == other


@pytest.mark.parametrize("name", ["../ca", "a/b", "", "x y"])
def test_a_secret_name_cannot_leave_its_directory(tmp_path, name):
    with pytest.raises(ValueError, match="secret's name"):
        Secrets(tmp_path).password(name)


def test_a_certificate_verifies_against_the_staging_ca_for_its_names(tmp_path):
    store = Secrets(tmp_path / "secrets")

    pair = store.certificate("db1", "postgres", ["10.77.0.11", "db1"])

    issued = x509.load_pem_x509_certificate(pair.certificate.read_bytes())
    ca = x509.load_pem_x509_certificate(store.ca_certificate.read_bytes())
    issued.verify_directly_issued_by(ca)
    names = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.77.0.11")]
    assert names.get_values_for_type(x509.DNSName) == ["db1"]
    assert mode(pair.key) == 0o600
    assert mode(tmp_path / "secrets" / "ca.key") == 0o600
    # The key and certificate load as a TLS server's would, and the CA loads as a client's.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.certificate, pair.key)
    ssl.create_default_context(cafile=store.ca_certificate)


def test_a_certificate_is_issued_once_and_a_second_staging_has_its_own_ca(tmp_path):
    store = Secrets(tmp_path / "one")
    pair = store.certificate("redis1", "redis", ["10.77.0.21"])
    before = pair.certificate.read_bytes()

    assert store.certificate("redis1", "redis", ["10.77.0.21"]).certificate.read_bytes() == before
    other = Secrets(tmp_path / "two")
    other_ca = x509.load_pem_x509_certificate(other.ca_certificate.read_bytes())
    with pytest.raises(InvalidSignature):
        x509.load_pem_x509_certificate(before).verify_directly_issued_by(other_ca)


def test_a_certificate_needs_a_name(tmp_path):
    with pytest.raises(ValueError, match="at least one name"):
        Secrets(tmp_path).certificate("lb1", "haproxy", [])


def test_write_private_never_leaves_the_file_readable_by_others(tmp_path):
    path = tmp_path / "etc" / "patroni.yml"
    path.parent.mkdir()
    path.write_text("old, world-readable")
    path.chmod(0o644)

    write_private(path, "password: s3cret")

    assert mode(path) == 0o600
    assert path.read_text() == "password: s3cret"


def test_purge_forgets_everything(tmp_path):
    store = Secrets(tmp_path / "secrets")
    old = store.password("mac-key")
    store.certificate("api1", "gunicorn", ["10.77.0.31"])

    store.purge()

    assert not (tmp_path / "secrets").exists()
    assert store.password("mac-key") != old
