"""The run trusts one staging CA after another: a purged staging's CA must not break the next."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from infra import http_client
from infra.staging.secrets import Secrets


def serial(ca_certificate: Path) -> str:
    return f"{x509.load_pem_x509_certificate(ca_certificate.read_bytes()).serial_number:X}"


def trusted_serials() -> set[str]:
    return {str(ca["serialNumber"]).lstrip("0") for ca in http_client.tls_context().get_ca_certs()}


def test_a_trusted_ca_whose_file_is_gone_leaves_https_working(tmp_path) -> None:
    first, second = Secrets(tmp_path / "first"), Secrets(tmp_path / "second")
    http_client.trust(first.ca_certificate)
    first_serial = serial(first.ca_certificate)
    first.purge()  # `staging down --purge` of one module's staging

    http_client.trust(second.ca_certificate)

    assert {first_serial, serial(second.ca_certificate)} <= trusted_serials()


def test_a_new_ca_at_the_same_path_is_trusted_too(tmp_path) -> None:
    store = Secrets(tmp_path / "staging")
    http_client.trust(store.ca_certificate)
    store.purge()
    again = Secrets(tmp_path / "staging")  # the next staging, same root
    http_client.trust(again.ca_certificate)

    assert serial(again.ca_certificate) in trusted_serials()
