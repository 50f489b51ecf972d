"""Staging's inventory and the configuration files rendered from it, without any host."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy import make_url

from gridlink.db.urls import sqlalchemy_url
from infra.staging import access, render
from infra.staging.inventory import (
    API,
    BRIDGE_ADDRESS,
    STAGING,
    SUBNET,
    DatabaseLogin,
    operator_login,
)
from infra.staging.secrets import KeyPair, Secrets
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


TLS = KeyPair(Path("/etc/gl/server.crt"), Path("/etc/gl/server.key"))
API_LOGIN = DatabaseLogin("gridlink_api_b", Path("/etc/gl/ca.crt"), password="a-pass/word+1")


def test_api_environment_lists_every_database_host_and_trusts_only_the_load_balancer(
    tmp_path: Path,
) -> None:
    secrets = Secrets(tmp_path / "secrets")
    mail = Path("/var/mail/gridlink")
    variables = render.parse_env(
        render.api_env(STAGING, STAGING.named("api2"), mail, API_LOGIN, secrets)
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
    # As the API's login, its password in the URL (api.env is 0600), verifying every server.
    tls = {"sslmode": "verify-full", "sslrootcert": "/etc/gl/ca.crt"}
    write = make_url(sqlalchemy_url(variables["GRIDLINK_DATABASE_URL"]))
    assert (write.username, write.password, write.database) == (
        "gridlink_api_b",
        "a-pass/word+1",
        "gridlink",
    )
    assert dict(write.query) == {
        "host": ("10.77.0.11:5432", "10.77.0.12:5432", "10.77.0.13:5432"),
        "target_session_attrs": "read-write",
        **tls,
    }
    replicas = [make_url(url) for url in variables["GRIDLINK_REPLICA_URLS"].split(",")]
    assert [(url.host, url.port) for url in replicas] == [
        ("10.77.0.11", 5432),
        ("10.77.0.12", 5432),
        ("10.77.0.13", 5432),
    ]
    assert all(url.username == "gridlink_api_b" and dict(url.query) == tls for url in replicas)
    assert all(url.password == "a-pass/word+1" for url in replicas)
    assert variables["GRIDLINK_TRUSTED_PROXIES"] == "10.77.0.41,10.77.0.42"
    assert variables["GRIDLINK_MAIL_BACKEND"] == "file:/var/mail/gridlink"


def test_postgresql_listens_over_tls_and_admits_each_role_from_its_hosts_alone() -> None:
    db2 = STAGING.named("db2")
    config = render.postgresql_conf(db2, Path("/run/pg"), TLS)
    assert "listen_addresses = '10.77.0.12'" in config
    assert "ssl = on" in config
    assert "ssl_cert_file = '/etc/gl/server.crt'" in config
    assert "password_encryption = 'scram-sha-256'" in config
    rules = [line.split() for line in render.pg_hba_conf(STAGING, db2).splitlines()]
    rules = [rule for rule in rules if rule and not rule[0].startswith("#")]
    assert not any("trust" in rule for rule in rules)
    network = [rule for rule in rules if rule[0] != "local"]
    admitted = [rule for rule in network if rule[-1] != "reject"]
    assert {rule[0] for rule in admitted} == {"hostssl"}
    assert {rule[4] for rule in admitted} == {"scram-sha-256"}
    # Each address one host, never the subnet: who may log in as what, from where.
    from_where = {(rule[1], rule[2], rule[3]) for rule in admitted}
    databases = [f"{host.address}/32" for host in STAGING.databases]
    apis = [f"{host.address}/32" for host in STAGING.with_role(API)]
    assert from_where == {
        ("all", "all", f"{BRIDGE_ADDRESS}/32"),
        *(("replication", "replicator", member) for member in databases),
        *(("all", "postgres,replicator,rewind_user", member) for member in databases),
        *(("gridlink", "gridlink_api_a,gridlink_api_b", api) for api in apis),
    }
    assert str(SUBNET) not in " ".join(" ".join(rule) for rule in rules)
    assert ["hostnossl", "all", "all", "all", "reject"] in network
    # On the socket: the postgres role alone, by its Unix account (peer).
    local = [rule for rule in rules if rule[0] == "local"]
    assert local == [
        ["local", "all", "postgres", "peer", "map=operators"],
        ["local", "all", "all", "reject"],
    ]


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


def patroni_files() -> render.PatroniFiles:
    return render.PatroniFiles(
        data_dir=Path("/data/pg"),
        bin_dir=Path("/usr/lib/postgresql/15/bin"),
        custom_conf=Path("/etc/gl/postgresql.conf"),
        hba_file=Path("/etc/gl/pg_hba.conf"),
        ident_file=Path("/etc/gl/pg_ident.conf"),
        socket_dir=Path("/run/pg"),
        pgpass=Path("/data/pgpass"),
        rest=KeyPair(Path("/etc/gl/patroni.crt"), Path("/etc/gl/patroni.key")),
        etcd_client=KeyPair(Path("/etc/gl/etcd-client.crt"), Path("/etc/gl/etcd-client.key")),
        ca=Path("/etc/gl/ca.crt"),
    )


def test_patroni_and_etcd_run_on_every_database_host_in_synchronous_mode(tmp_path: Path) -> None:
    db2 = STAGING.named("db2")
    patroni = render.patroni_yml(STAGING, db2, patroni_files(), Secrets(tmp_path))
    etcd = render.etcd_conf(STAGING, db2, Path("/data/etcd"), TLS, Path("/etc/gl/ca.crt"))

    assert "hosts: '10.77.0.11:2379,10.77.0.12:2379,10.77.0.13:2379'" in patroni
    assert "synchronous_mode: true" in patroni
    # Never a primary acknowledging alone: no standby, no commit.
    assert "synchronous_mode_strict: true" in patroni
    assert "failsafe_mode: true" in patroni
    assert "use_pg_rewind: true" in patroni
    # A standby rewound from a primary that died meanwhile is re-pointed within 10 s, not 60.
    assert "pg_ctl_timeout: 10" in patroni
    assert "listen: '10.77.0.12:5432'" in patroni
    assert (
        "initial-cluster: 'db1=https://10.77.0.11:2380,db2=https://10.77.0.12:2380,"
        "db3=https://10.77.0.13:2380'" in etcd
    )
    assert "enable-grpc-gateway: true" in etcd


def test_patroni_keeps_its_api_and_its_links_under_tls_and_a_password_per_role(
    tmp_path: Path,
) -> None:
    secrets = Secrets(tmp_path)
    patroni = yaml.safe_load(
        render.patroni_yml(STAGING, STAGING.named("db1"), patroni_files(), secrets)
    )
    restapi = patroni["restapi"]
    assert (restapi["certfile"], restapi["cafile"]) == ("/etc/gl/patroni.crt", "/etc/gl/ca.crt")
    # Every client shows a certificate of the CA, reads too; Patroni shows its own to the others.
    assert restapi["verify_client"] == "required"
    ctl = patroni["ctl"]
    assert (ctl["certfile"], ctl["keyfile"]) == ("/etc/gl/patroni.crt", "/etc/gl/patroni.key")
    assert (ctl["cacert"], ctl["insecure"]) == ("/etc/gl/ca.crt", False)
    assert restapi["authentication"] == {
        "username": "patroni",
        "password": secrets.password("patroni-restapi"),
    }
    etcd = patroni["etcd3"]
    assert (etcd["protocol"], etcd["cacert"]) == ("https", "/etc/gl/ca.crt")
    assert etcd["cert"] == "/etc/gl/etcd-client.crt"
    roles = patroni["postgresql"]["authentication"]
    assert {kind: roles[kind]["username"] for kind in roles} == {
        "superuser": "postgres",
        "replication": "replicator",
        "rewind": "rewind_user",
    }
    passwords = [roles[kind]["password"] for kind in roles]
    assert len(set(passwords)) == 3
    assert passwords[0] == secrets.password("postgres-superuser")
    assert all(roles[kind]["sslmode"] == "verify-full" for kind in roles)
    assert all(roles[kind]["sslrootcert"] == "/etc/gl/ca.crt" for kind in roles)


def test_etcd_takes_only_tls_clients_and_peers_with_a_certificate() -> None:
    etcd = yaml.safe_load(
        render.etcd_conf(STAGING, STAGING.named("db3"), Path("/d"), TLS, Path("/etc/gl/ca.crt"))
    )
    for side in ("client-transport-security", "peer-transport-security"):
        assert etcd[side] == {
            "cert-file": "/etc/gl/server.crt",
            "key-file": "/etc/gl/server.key",
            "trusted-ca-file": "/etc/gl/ca.crt",
            "client-cert-auth": True,
        }
    urls = [value for key, value in etcd.items() if key.endswith("-urls")]
    assert urls
    assert all(url.startswith("https://") for url in urls)


def test_the_operators_urls_verify_the_server_and_name_a_passfile_not_a_password(
    tmp_path: Path,
) -> None:
    previous = access.root()
    access.use(tmp_path)
    try:
        url = make_url(sqlalchemy_url(STAGING.write_url))
        owner = make_url(
            STAGING.database_url(STAGING.named("db3"), operator_login("gridlink_owner"))
        )
    finally:
        access.use(previous)
    assert url.password is None
    assert url.username == "gridlink_api_a"  # the API's login in use: none rotated yet
    assert dict(url.query)["sslmode"] == "verify-full"
    assert dict(url.query)["sslrootcert"] == str(tmp_path / "secrets" / "ca.crt")
    assert dict(url.query)["passfile"] == str(tmp_path / "secrets" / "operator.pgpass")
    assert (owner.username, owner.password, owner.host) == ("gridlink_owner", None, "10.77.0.13")
