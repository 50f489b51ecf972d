"""Drive a real throwaway cluster through infra.cluster: replication, idempotence, faults, down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from gridlink.db.lsn import parse_lsn
from infra import cluster
from tests.support.clusters import cluster_layout
from tests.support.waiting import wait_for, wait_for_setting

# Own root and ports, away from the dev cluster (15432/16379) and any other test cluster.
LAYOUT = cluster_layout("cluster-selftest")
REPLICA_PORT = LAYOUT.replica_port(1)


def _quiet(_line: str) -> None:
    """Drop progress lines; pytest shows the assertions."""


def _process_gone(pid: int) -> bool:
    """Tell whether pid has exited; a zombie counts, since pid 1 here may never reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _by_name(statuses: list[cluster.ServerProcessStatus]) -> dict[str, cluster.ServerProcessStatus]:
    return {s.name: s for s in statuses}


def _replica1() -> cluster.ServerProcessStatus:
    return _by_name(cluster.status(LAYOUT))["replica1"]


def _app_connection(port: int) -> Any:
    connection = psycopg2.connect(
        host="127.0.0.1", port=port, user=LAYOUT.user, dbname=LAYOUT.database, connect_timeout=2
    )
    connection.autocommit = True
    return connection


def _insert_marker() -> str:
    """Commit a fresh row on the primary and return its marker."""
    marker = uuid.uuid4().hex
    with closing(_app_connection(LAYOUT.pg_port)) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS cluster_selftest (marker text PRIMARY KEY)")
        cursor.execute("INSERT INTO cluster_selftest (marker) VALUES (%s)", (marker,))
    return marker


def _seconds_since_replayed_commit() -> float:
    """Ask replica1 how old the last commit it replayed is."""
    with closing(_app_connection(REPLICA_PORT)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8")
        (seconds,) = cursor.fetchone()
    return float(seconds or 0.0)


def _primary_position() -> int:
    with closing(_app_connection(LAYOUT.pg_port)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        (lsn,) = cursor.fetchone()
    return parse_lsn(lsn)


def _replica1_received() -> int:
    with closing(_app_connection(REPLICA_PORT)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_last_wal_receive_lsn()::text")
        (lsn,) = cursor.fetchone()
    return 0 if lsn is None else parse_lsn(lsn)


def _replica_has(marker: str) -> bool:
    try:
        with closing(_app_connection(REPLICA_PORT)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM cluster_selftest WHERE marker = %s", (marker,))
            return cursor.fetchone() is not None
    except psycopg2.Error:  # the table itself may not have been replayed yet
        return False


@pytest.fixture(scope="module")
def started() -> Iterator[cluster.ClusterLayout]:
    """Start the throwaway cluster once and purge it afterwards, also when a test fails."""
    cluster.down(LAYOUT, purge=True, progress=_quiet)  # leftovers of an interrupted run
    try:
        cluster.up(LAYOUT, progress=_quiet)
        yield LAYOUT
    finally:
        cluster.down(LAYOUT, purge=True, progress=_quiet)


@pytest.fixture
def layout(started: cluster.ClusterLayout) -> cluster.ClusterLayout:
    """Hand each test a fully running cluster, whatever the previous test stopped."""
    cluster.up(started, progress=_quiet)
    return started


def test_row_committed_on_primary_appears_on_replica(layout: cluster.ClusterLayout) -> None:
    marker = _insert_marker()

    assert cluster.wait_until(lambda: _replica_has(marker)), "row never reached replica1"


def test_up_again_is_idempotent_and_starts_nothing(layout: cluster.ClusterLayout) -> None:
    before = _by_name(cluster.status(layout))
    lines: list[str] = []

    after = _by_name(cluster.up(layout, progress=lines.append))

    # Every server said it already runs (nothing created, started or waited for), same pids.
    assert lines, "up said nothing"
    assert all("already running" in line for line in lines), lines
    assert {name: s.pid for name, s in after.items()} == {n: s.pid for n, s in before.items()}
    assert after["primary"].running
    assert after["primary"].role == "primary"
    assert after["redis"].running
    replica = after["replica1"]
    assert (replica.role, replica.port, replica.state) == ("replica", REPLICA_PORT, "streaming")
    assert replica.lag_bytes is not None
    assert replica.lag_bytes >= 0
    table = cluster.format_status(list(after.values()))
    assert "replica1" in table
    assert "streaming" in table


def test_idle_primary_shows_no_false_lag(layout: cluster.ClusterLayout) -> None:
    marker = _insert_marker()
    assert cluster.wait_until(lambda: _replica_has(marker))

    # "now - last replayed commit" would read seconds of lag from here on.
    wait_for(lambda: _seconds_since_replayed_commit() >= 3, 15, "the last commit ages")

    replica = _replica1()
    assert replica.lag_seconds is not None
    assert replica.lag_seconds < 0.5
    assert replica.lag_bytes == 0


def _replica1_setting(name: str) -> str:
    """Return a setting as pg_basebackup -R wrote it into replica1's postgresql.auto.conf."""
    auto_conf = LAYOUT.root / "replica1" / "postgresql.auto.conf"
    for line in auto_conf.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip().strip("'").replace("''", "'")
    raise AssertionError(f"{name} is not in {auto_conf}")


def test_replica_cut_off_from_its_stream_shows_lag_in_seconds_too(
    layout: cluster.ClusterLayout,
) -> None:
    warm_up = _insert_marker()  # a replayed commit whose age the lag is measured by
    assert cluster.wait_until(lambda: _replica_has(warm_up))
    conninfo = _replica1_setting("primary_conninfo")
    # Nothing listens on port 1: the walreceiver restarts and never reconnects.
    cluster.set_replica_setting(layout, "replica1", "primary_conninfo", "host=127.0.0.1 port=1")
    try:
        assert cluster.wait_until(lambda: _replica1().state == "disconnected", timeout=10)
        marker = _insert_marker()

        def cut_off_and_behind() -> bool:
            replica = _replica1()
            return bool(replica.lag_bytes) and (replica.lag_seconds or 0.0) >= 1.0

        # It has replayed all it received, yet the primary is ahead: that is not 0 s.
        assert cluster.wait_until(cut_off_and_behind, timeout=10)
        assert not _replica_has(marker)
    finally:
        cluster.set_replica_setting(layout, "replica1", "primary_conninfo", conninfo)
    assert cluster.wait_until(lambda: _replica_has(marker), timeout=10)


def test_stop_and_start_redis(layout: cluster.ClusterLayout) -> None:
    cluster.stop_server(layout, "redis")

    assert not cluster.port_answers(layout.redis_port)
    assert not _by_name(cluster.status(layout))["redis"].running

    cluster.start_server(layout, "redis")

    assert cluster.port_answers(layout.redis_port)
    assert _by_name(cluster.status(layout))["redis"].running


def test_stop_and_start_replica(layout: cluster.ClusterLayout) -> None:
    cluster.stop_server(layout, "replica1")

    assert not cluster.port_answers(REPLICA_PORT)
    stopped = _replica1()
    assert (stopped.running, stopped.pid, stopped.state) == (False, None, "stopped")
    marker = _insert_marker()  # written while the replica is down

    cluster.start_server(layout, "replica1")

    assert cluster.port_answers(REPLICA_PORT)
    assert cluster.wait_until(lambda: _replica1().state == "streaming")
    assert cluster.wait_until(lambda: _replica_has(marker))
    # Right after a restart the receive LSN lags the replay LSN; that must not read as
    # lag, however old the last replayed commit has grown meanwhile.
    wait_for(lambda: _seconds_since_replayed_commit() >= 1.5, 15, "the last commit ages")
    assert _replica1().lag_seconds == 0.0


def test_replica_setting_delays_replay(layout: cluster.ClusterLayout) -> None:
    warm_up = _insert_marker()  # so the replica has a replayed commit to measure from
    assert cluster.wait_until(lambda: _replica_has(warm_up))
    cluster.set_replica_setting(layout, "replica1", "recovery_min_apply_delay", "2s")
    try:
        wait_for_setting(LAYOUT.replica_urls[0], "recovery_min_apply_delay", "2s")
        marker = _insert_marker()
        written = _primary_position()
        # It has the commit, and holds it back.
        wait_for(lambda: _replica1_received() >= written, 5, "replica1 receives the commit")

        assert not _replica_has(marker)
        lagging = _replica1()
        assert lagging.lag_bytes is not None
        assert lagging.lag_bytes > 0
        assert lagging.lag_seconds is not None
        assert lagging.lag_seconds > 0
        assert cluster.wait_until(lambda: _replica_has(marker), timeout=5)
    finally:
        cluster.set_replica_setting(layout, "replica1", "recovery_min_apply_delay", "0")


def test_down_keeps_data_and_stops_servers(layout: cluster.ClusterLayout) -> None:
    pids = [s.pid for s in cluster.status(layout)]
    assert all(pid is not None for pid in pids)

    cluster.down(layout, progress=_quiet)

    assert all(_process_gone(pid) for pid in pids if pid is not None)
    assert not any(
        cluster.port_answers(port) for port in (layout.pg_port, REPLICA_PORT, layout.redis_port)
    )
    assert (layout.root / "primary" / "PG_VERSION").is_file()
    assert (layout.root / "replica1" / "PG_VERSION").is_file()
    assert not any(s.running for s in cluster.status(layout))
