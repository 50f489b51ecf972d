"""The test run's clusters: one table gives each its ports, from GRIDLINK_TEST_PORT_BASE.

A cluster takes PostgreSQL ports from ``PORT_BASE + offset`` (the primary,
then one per replica) and Redis ``1000`` above. Modules that stop or slow
servers have clusters of their own, so the session cluster stays healthy for
everyone else; a new one adds its line to ``CLUSTERS`` and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gridlink.accounts.seals import new_key
from gridlink.ops.migrate import migrate
from gridlink.project import VAR
from gridlink.settings import MailBackend, Settings
from infra import cluster

PORT_BASE = int(os.environ.get("GRIDLINK_TEST_PORT_BASE", "15442"))


# name -> offset from PORT_BASE. Each cluster may use offset .. offset + 19.
CLUSTERS = {
    "test-cluster": 0,  # the session's shared cluster (conftest.py)
    "router-cluster": 20,  # integration/test_router.py
    "read-side": 40,  # integration/test_read_side.py
    "cluster-selftest": 60,  # integration/test_cluster.py
    "faults": 80,  # e2e/test_faults.py
    "soak": 100,  # e2e/test_soak.py
    "monitoring-cluster": 120,  # integration/test_monitoring_faults.py
    "abuse-leaks": 140,  # integration/test_abuse_error_leaks.py
    "change-stream": 160,  # integration/test_change_stream.py
    "mail-e2e": 180,  # e2e/test_mail_e2e.py
    "accounts-faults": 200,  # integration/test_accounts_when_servers_fail.py
    "primary-killed": 220,  # e2e/test_primary_killed.py
    "near-cache": 240,  # integration/test_near_cache.py
    "redis-tls": 260,  # integration/test_redis_tls.py (its TLS Redis at +1260, its Sentinel +1261)
    "redis-tls-database": 280,  # integration/test_redis_tls.py's own PostgreSQL
}
PORTS_PER_CLUSTER = 20
TEST_SIGNUP_LIMIT = 1_000_000
TEST_TOKEN_CACHE_KEY = new_key()  # made per run, never written down


def cluster_layout(name: str, replicas: int = 1) -> cluster.ClusterLayout:
    """Lay out the cluster ``name`` on the ports ``CLUSTERS`` gives it."""
    if name not in CLUSTERS:
        raise KeyError(f"Cluster {name!r} has no ports: add it to CLUSTERS in {__file__}.")
    if replicas >= PORTS_PER_CLUSTER:
        raise ValueError(f"{name}: {replicas} replicas do not fit in {PORTS_PER_CLUSTER} ports.")
    port = PORT_BASE + CLUSTERS[name]
    return cluster.ClusterLayout(
        root=cluster.reachable_root(VAR / f"{name}-{port}"),
        pg_port=port,
        redis_port=port + 1000,
        replicas=replicas,
    )


@contextmanager
def running(layout: cluster.ClusterLayout) -> Iterator[cluster.ClusterLayout]:
    """Start and migrate ``layout``; stop and purge it afterwards, pass or fail."""
    try:
        cluster.up(layout)
        migrate(layout.database_url)
        yield layout
    finally:
        cluster.down(layout, purge=True)


def settings_for(layout: cluster.ClusterLayout, mail_dir: Path) -> Settings:
    """Return the settings of a server process on ``layout``, mailing into ``mail_dir``."""
    return Settings(
        database_url=layout.database_url,
        replica_urls=layout.replica_urls,
        redis_url=layout.redis_url,
        mail_backend=MailBackend("file", directory=mail_dir),
        # The suite signs up thousands of users from one test address; the
        # sign-up limits are tested with settings of their own.
        signups_per_address=TEST_SIGNUP_LIMIT,
        signups_per_minute=TEST_SIGNUP_LIMIT,
        # One key for the run: every process of the suite opens what the others sealed.
        token_cache_keys=(TEST_TOKEN_CACHE_KEY,),
    )
