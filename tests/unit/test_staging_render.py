"""Staging's inventory and the configuration files rendered from it, without any host."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.staging import render
from infra.staging.inventory import STAGING, SUBNET
from infra.staging.secrets import Secrets
from infra.staging.statements import kind_of
from loadtest.run import LoadTestError
from loadtest.swarm import run_time_seconds


def test_inventory_has_the_hosts_staging_needs_each_on_the_subnet() -> None:
    assert len(STAGING.databases) == 3
    assert len(STAGING.replicas) == 2
    assert len(STAGING.with_role("api")) == 2
    assert all(host.netns.startswith("gl-") for host in STAGING.hosts)
    assert all(len(host.veth) <= 15 for host in STAGING.hosts)  # Linux's interface names
    addresses = [host.address for host in STAGING.hosts]
    assert len(set(addresses)) == len(addresses)
    assert all(address.startswith("10.77.0.") for address in addresses)


def test_inventory_json_names_every_host_and_the_load_balancer() -> None:
    document = json.loads(STAGING.as_json())
    assert document["load_balancer_url"] == "https://10.77.0.40"  # the floating address
    assert document["floating_address"] == "10.77.0.40"
    assert document["subnet"] == str(SUBNET)
    assert {h["name"]: h["namespace"] for h in document["hosts"]}["db1"] == "gl-db1"


def test_haproxy_checks_readyz_on_every_api_host_over_verified_tls() -> None:
    config = render.haproxy_cfg(
        STAGING,
        STAGING.named("lb2"),
        Path("/run/haproxy/admin.sock"),
        Path("/etc/haproxy/gridlink.pem"),
        Path("/etc/ssl/gridlink-ca.crt"),
    )
    assert "option httpchk GET /readyz" in config
    for host in STAGING.with_role("api"):
        assert f"server {host.name} {host.address}:8000 check verifyhost {host.name}" in config
    assert "ssl verify required ca-file /etc/ssl/gridlink-ca.crt" in config
    # Clients on whichever address the host has (the floating one too), TLS on 443 and
    # a redirect on 80; health on its own address, TLS too.
    assert "bind :443 ssl crt /etc/haproxy/gridlink.pem" in config
    assert "bind :80\n" in config
    assert "redirect scheme https code 301 unless { ssl_fc }" in config
    assert "Strict-Transport-Security" in config
    assert "bind 10.77.0.42:8404 ssl crt /etc/haproxy/gridlink.pem" in config
    assert "user haproxy" in config


def test_keepalived_on_each_load_balancer_holds_the_floating_address_with_the_other() -> None:
    lb1, lb2 = STAGING.load_balancers
    first, second = (render.keepalived_conf(STAGING, lb) for lb in (lb1, lb2))
    for config, own, peer in ((first, lb1, lb2), (second, lb2, lb1)):
        assert f"unicast_src_ip {own.address}" in config
        assert f"        {peer.address}\n" in config
        assert "10.77.0.40/24 dev eth0" in config
        assert "advert_int 0.1" in config
        assert "vrrp_version 3" in config
        assert f"https://{own.address}:8404/healthz" in config  # its own HAProxy, not the peer's
    assert "priority 150" in first
    assert "priority 140" in second


@pytest.mark.parametrize("lb", ["lb1", "lb2"])
def test_keepalived_accepts_the_rendered_file(lb: str, tmp_path: Path) -> None:
    keepalived = shutil.which("keepalived")
    if keepalived is None:
        pytest.skip("keepalived is not installed (staging installs it)")
    config = tmp_path / "keepalived.conf"
    config.write_text(render.keepalived_conf(STAGING, STAGING.named(lb)))
    checked = subprocess.run(
        [keepalived, "--config-test", "-f", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_api_environment_lists_every_database_host_and_trusts_only_the_load_balancer(
    tmp_path: Path,
) -> None:
    secrets = Secrets(tmp_path / "secrets")
    variables = render.parse_env(
        render.api_env(STAGING, STAGING.named("api2"), Path("/var/mail/gridlink"), secrets)
    )
    assert variables["GRIDLINK_BIND"] == "10.77.0.32:8000"
    # TLS on its listeners; Redis over TLS as the API's ACL user; the token cache's MAC key.
    assert variables["GRIDLINK_TLS_CERTIFICATE"] == str(tmp_path / "secrets/api2/api.crt")
    assert variables["GRIDLINK_TLS_KEY"] == str(tmp_path / "secrets/api2/api.key")
    assert variables["GRIDLINK_REDIS_URL"] == (
        f"rediss://gridlink-api:{secrets.password('redis-api')}@10.77.0.21:6379/0"
        f"?ssl_ca_certs={secrets.ca_certificate}"
    )
    assert variables["GRIDLINK_TOKEN_CACHE_KEYS"] == secrets.password("token-cache-key")
    # Writes: whichever host accepts them (Patroni's leader); reads: each host by its role.
    assert variables["GRIDLINK_DATABASE_URL"] == (
        "postgresql://gridlink@10.77.0.11:5432,10.77.0.12:5432,10.77.0.13:5432/gridlink"
        "?target_session_attrs=read-write"
    )
    replicas = variables["GRIDLINK_REPLICA_URLS"].split(",")
    assert [url.split("@")[1] for url in replicas] == [
        "10.77.0.11:5432/gridlink",
        "10.77.0.12:5432/gridlink",
        "10.77.0.13:5432/gridlink",
    ]
    assert variables["GRIDLINK_TRUSTED_PROXIES"] == "10.77.0.41,10.77.0.42"
    assert variables["GRIDLINK_MAIL_BACKEND"] == "file:/var/mail/gridlink"


def test_postgresql_files_listen_on_the_host_and_admit_only_the_subnet() -> None:
    db2 = STAGING.named("db2")
    assert "listen_addresses = '10.77.0.12'" in render.postgresql_conf(db2, Path("/run/pg"))
    rules = [line.split() for line in render.pg_hba_conf(db2).splitlines()]
    hosts = [rule for rule in rules if rule and rule[0] == "host"]
    assert {rule[3] for rule in hosts} == {str(SUBNET)}


def test_a_template_placeholder_without_a_value_is_an_error() -> None:
    with pytest.raises(KeyError):
        render.render("pg_hba.conf", host="db1")


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("SELECT pg_current_wal_lsn()::text", "probes"),
        ("SELECT $1", "pings"),
        ("BEGIN", "transaction control"),
        ("COMMIT", "transaction control"),
        ("SELECT users.id FROM users WHERE users.username = $1", "statements"),
    ],
)
def test_statements_are_sorted_by_what_they_are_there_for(query: str, kind: str) -> None:
    assert kind_of(query) == kind


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("1h30m", 5400), ("45", 45)]
)
def test_swarm_run_time_reads_as_locust_does(text: str, seconds: int) -> None:
    assert run_time_seconds(text) == seconds


def test_swarm_run_time_that_locust_would_refuse_is_refused() -> None:
    with pytest.raises(LoadTestError, match="SWARM_RUN_TIME"):
        run_time_seconds("soon")


def test_patroni_and_etcd_run_on_every_database_host_in_synchronous_mode() -> None:
    db2 = STAGING.named("db2")
    files = render.PatroniFiles(
        data_dir=Path("/data/pg"),
        bin_dir=Path("/usr/lib/postgresql/15/bin"),
        custom_conf=Path("/etc/gl/postgresql.conf"),
        hba_file=Path("/etc/gl/pg_hba.conf"),
        socket_dir=Path("/run/pg"),
        pgpass=Path("/data/pgpass"),
    )
    patroni = render.patroni_yml(STAGING, db2, files)
    etcd = render.etcd_conf(STAGING, db2, Path("/data/etcd"))

    assert "hosts: '10.77.0.11:2379,10.77.0.12:2379,10.77.0.13:2379'" in patroni
    assert "synchronous_mode: true" in patroni
    # Never a primary acknowledging alone: no standby, no commit.
    assert "synchronous_mode_strict: true" in patroni
    assert "failsafe_mode: true" in patroni
    assert "use_pg_rewind: true" in patroni
    assert "listen: '10.77.0.12:5432'" in patroni
    assert (
        "initial-cluster: 'db1=http://10.77.0.11:2380,db2=http://10.77.0.12:2380,"
        "db3=http://10.77.0.13:2380'" in etcd
    )
    assert "enable-grpc-gateway: true" in etcd
