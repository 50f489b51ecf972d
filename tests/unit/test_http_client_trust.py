"""The run trusts one staging CA after another: a purged staging's CA must not break the next."""

from __future__ import annotations

import ssl

from infra import http_client
from infra.staging.secrets import Secrets


def test_a_trusted_ca_whose_file_is_gone_leaves_https_working(tmp_path) -> None:
    first, second = Secrets(tmp_path / "first"), Secrets(tmp_path / "second")
    http_client.trust(first.ca_certificate)
    first.purge()  # `staging down --purge` of one module's staging

    http_client.trust(second.ca_certificate)
    context = http_client.tls_context()

    assert isinstance(context, ssl.SSLContext)
    ours = [ca for ca in context.get_ca_certs() if "Gridlink staging CA" in str(ca["subject"])]
    assert len(ours) == 2


def test_a_new_ca_at_the_same_path_is_trusted_too(tmp_path) -> None:
    store = Secrets(tmp_path / "staging")
    http_client.trust(store.ca_certificate)
    before = len(http_client.tls_context().get_ca_certs())
    store.purge()
    http_client.trust(Secrets(tmp_path / "staging").ca_certificate)  # the next staging, same root

    assert len(http_client.tls_context().get_ca_certs()) == before + 1
