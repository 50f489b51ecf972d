"""The one table of test clusters: no two clusters share a port."""

from __future__ import annotations

import itertools

import pytest

from tests.support.clusters import CLUSTERS, PORTS_PER_CLUSTER, cluster_layout


def test_no_two_clusters_share_a_port() -> None:
    offsets = sorted(CLUSTERS.values())
    assert all(b - a >= PORTS_PER_CLUSTER for a, b in itertools.pairwise(offsets))
    # Redis sits 1000 above the primary: clear of every PostgreSQL port.
    assert offsets[-1] + PORTS_PER_CLUSTER <= 1000


def test_a_cluster_missing_from_the_table_is_refused() -> None:
    with pytest.raises(KeyError, match="CLUSTERS"):
        cluster_layout("a-cluster-nobody-allocated")


def test_each_cluster_takes_its_ports_from_the_table() -> None:
    layout = cluster_layout("router-cluster", replicas=2)
    assert layout.replica_port(2) - layout.pg_port == 2
    assert layout.redis_port - layout.pg_port == 1000
