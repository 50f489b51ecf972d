"""Who the client is, for the limits per client address: the peer, or X-Forwarded-For
read through trusted proxies only."""

from __future__ import annotations

import falcon.testing
import pytest

from gridlink.settings import Settings, SettingsError, TrustedProxies
from gridlink.web.http import client_address, client_from

PROXIES = TrustedProxies.parse("10.0.0.0/8, 192.0.2.7, fd00::/8")


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_from("203.0.113.9", "198.51.100.1", TrustedProxies()) == "203.0.113.9"


def test_an_untrusted_peers_forwarded_for_is_ignored() -> None:
    assert client_from("203.0.113.9", "198.51.100.1", PROXIES) == "203.0.113.9"


def test_a_trusted_peer_names_the_client_in_forwarded_for() -> None:
    assert client_from("10.1.2.3", "198.51.100.1", PROXIES) == "198.51.100.1"


def test_forwarded_for_is_read_from_the_right_past_every_trusted_proxy() -> None:
    # The leftmost entry is whatever the client wrote: only the proxies' own entries count.
    forwarded = "6.6.6.6, 198.51.100.1, 192.0.2.7, 10.9.9.9"
    assert client_from("10.1.2.3", forwarded, PROXIES) == "198.51.100.1"


def test_a_malformed_entry_left_of_the_client_does_not_hide_the_client() -> None:
    # The client wrote the garbage; the trusted proxy's own entry still names it.
    assert client_from("10.1.2.3", "not-an-address, 198.51.100.1", PROXIES) == "198.51.100.1"
    assert client_from("10.1.2.3", "unknown, ,198.51.100.1", PROXIES) == "198.51.100.1"


def test_a_malformed_entry_behind_trusted_proxies_stops_at_the_last_of_them() -> None:
    # 10.9.9.9 is ours, and what it saw is unreadable: it is as far as the trust goes.
    forwarded = "198.51.100.1, not-an-address, 10.9.9.9"
    assert client_from("10.1.2.3", forwarded, PROXIES) == "10.9.9.9"


def test_a_malformed_entry_right_of_the_peer_makes_the_peer_the_client() -> None:
    assert client_from("10.1.2.3", "198.51.100.1, not-an-address", PROXIES) == "10.1.2.3"
    assert client_from("10.1.2.3", "198.51.100.1,,", PROXIES) == "10.1.2.3"
    assert client_from("", "198.51.100.1, garbage", TrustedProxies.parse("unix")) == "unix"


def test_each_client_behind_a_proxy_keeps_its_own_key_whatever_it_forwards() -> None:
    # An attacker's garbage must not turn them into the proxy (everyone's key).
    assert client_from("10.1.2.3", "garbage, 203.0.113.5", PROXIES) != client_from(
        "10.1.2.3", "garbage, 203.0.113.6", PROXIES
    )


def test_a_chain_of_trusted_proxies_only_names_its_first() -> None:
    assert client_from("10.1.2.3", "10.4.4.4, 192.0.2.7", PROXIES) == "10.4.4.4"


def test_ports_and_brackets_are_read() -> None:
    assert client_from("10.1.2.3", "198.51.100.1:4711", PROXIES) == "198.51.100.1"
    assert client_from("10.1.2.3", "[2001:db8:1:2::5]:443", PROXIES) == "2001:db8:1:2::/64"


def test_ipv6_clients_count_per_64() -> None:
    one = client_from("2001:db8:1:2::1", None, PROXIES)
    same_network = client_from("2001:db8:1:2:ffff:1:2:3", None, PROXIES)
    next_network = client_from("2001:db8:1:3::1", None, PROXIES)
    assert one == same_network == "2001:db8:1:2::/64"
    assert next_network != one


def test_an_ipv4_mapped_address_counts_as_the_ipv4_client() -> None:
    assert client_from("::ffff:203.0.113.9", None, PROXIES) == "203.0.113.9"


def test_a_trusted_ipv6_proxy_is_read_through() -> None:
    assert client_from("fd00::1", "2001:db8:7:7::9, fd12::3", PROXIES) == "2001:db8:7:7::/64"


def test_a_unix_socket_peer_is_one_client_not_none() -> None:
    assert client_from("", "198.51.100.1", PROXIES) == "unix"


def test_a_trusted_unix_socket_peer_names_the_client_in_forwarded_for() -> None:
    proxies = TrustedProxies.parse("unix")
    assert client_from("", "198.51.100.1", proxies) == "198.51.100.1"
    assert client_from("", None, proxies) == "unix"


def test_the_request_peer_and_header_are_what_is_read() -> None:
    req = falcon.testing.create_req(
        remote_addr="10.1.2.3", headers={"X-Forwarded-For": "198.51.100.1"}
    )
    assert client_address(req, PROXIES) == "198.51.100.1"
    del req.env["REMOTE_ADDR"]
    assert client_address(req, PROXIES) == "unix"


def test_trusted_proxies_are_read_from_the_environment() -> None:
    settings = Settings.from_env({"GRIDLINK_TRUSTED_PROXIES": " 10.0.0.0/8 ,::1, unix"})
    assert [str(n) for n in settings.trusted_proxies.networks] == ["10.0.0.0/8", "::1/128"]
    assert settings.trusted_proxies.unix_socket
    assert Settings.from_env({}).trusted_proxies == TrustedProxies()


def test_a_bad_trusted_proxy_is_named() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"GRIDLINK_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"})
    assert str(error.value).startswith("GRIDLINK_TRUSTED_PROXIES: 'proxy.internal' is not")


def test_a_peer_that_is_no_address_is_counted_as_it_is_and_never_trusted() -> None:
    everything = TrustedProxies.parse("0.0.0.0/0, ::/0, unix")
    assert client_from("proxy.sock", "198.51.100.1", everything) == "proxy.sock"
