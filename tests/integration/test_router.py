"""The replica router against a real primary and two real streaming replicas.

These tests delay and stop replicas, which would disturb every other test on
the shared session cluster, so the module runs a cluster of its own on the
ports GRIDLINK_TEST_PORT_BASE + 20 and up.

Timing: the router promises that a replica leaves rotation within 2 s of
lagging past the bound or going away. The machine running the tests is
noisy, so those assertions allow 2 s plus one probe interval.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
from sqlalchemy import Engine, create_engine, text

from gridlink.db.lsn import Position, parse_lsn
from gridlink.routing.router import ReplicaRouter, RouterSnapshot
from infra import cluster
from tests.support.clusters import cluster_layout
from tests.support.faults import write_row, writes_flowing
from tests.support.waiting import wait_for, wait_for_setting

LAYOUT = cluster_layout("router-cluster", replicas=2)
INTERVAL = 1.0
PROMISE = 2.0  # seconds within which a replica leaves rotation (API.md, promise 5)
MARGIN = INTERVAL  # one probe interval of slack for a noisy machine
REPLICA1, REPLICA2 = 0, 1  # positions in the replicas fixture and the snapshot


def chosen(router: ReplicaRouter, written: Position | None = None) -> str | None:
    """Return the name of the replica the router hands out, None for the primary."""
    replica = router.choose(written)
    return None if replica is None else replica.name


# The CASE postgres_exporter uses, asked of the replica itself: the test's own
# measure of when a replica really lags, independent of the router's view.
_REPLICA_OWN_LAG = text(
    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 END"
)
_REPLAY_LSN = text("SELECT pg_last_wal_replay_lsn()::text")
_SECONDS_SINCE_REPLAYED_COMMIT = text(
    "SELECT EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
)


def _quiet(_line: str) -> None:
    """Drop the cluster's progress lines; pytest shows the assertions."""


def _engine(url: str) -> Engine:
    return create_engine(
        url, isolation_level="AUTOCOMMIT", pool_pre_ping=True, connect_args={"connect_timeout": 2}
    )


@pytest.fixture(scope="module")
def router_cluster() -> Iterator[cluster.ClusterLayout]:
    try:
        cluster.up(LAYOUT, progress=_quiet)
        yield LAYOUT
    finally:
        cluster.down(LAYOUT, purge=True, progress=_quiet)


@pytest.fixture(scope="module")
def primary(router_cluster: cluster.ClusterLayout) -> Iterator[Engine]:
    engine = _engine(router_cluster.database_url)
    with engine.connect() as connection:
        connection.execute(
            text("CREATE TABLE IF NOT EXISTS probe_rows (id bigserial PRIMARY KEY, note text)")
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def replicas(router_cluster: cluster.ClusterLayout) -> Iterator[list[Engine]]:
    engines = [_engine(url) for url in router_cluster.replica_urls]
    yield engines
    for engine in engines:
        engine.dispose()


@pytest.fixture
def make_router(
    router_cluster: cluster.ClusterLayout, primary: Engine, replicas: list[Engine]
) -> Iterator[Callable[[float], ReplicaRouter]]:
    """Build routers over the module's cluster, caught up first, and stop them afterwards."""
    made: list[ReplicaRouter] = []

    def make(max_lag_seconds: float) -> ReplicaRouter:
        wait_until_caught_up(primary, replicas)
        router = ReplicaRouter(
            router_cluster.database_url,
            router_cluster.replica_urls,
            max_lag_seconds=max_lag_seconds,
            interval=INTERVAL,
        )
        made.append(router)
        return router

    yield make
    for router in made:
        router.stop()


# --------------------------------------------------------------------------- helpers


def replay_lsn(replica: Engine) -> int:
    with replica.connect() as connection:
        lsn: str = connection.execute(_REPLAY_LSN).scalar_one()
    return parse_lsn(lsn)


def seconds_since_replayed_commit(replica: Engine) -> float:
    with replica.connect() as connection:
        seconds: float = connection.execute(_SECONDS_SINCE_REPLAYED_COMMIT).scalar_one()
    return seconds


def rounds_in(snapshots: list[RouterSnapshot]) -> set[datetime]:
    """Return the probe rounds ``snapshots`` show (a round once, however often it was seen)."""
    return {snapshot.checked_at for snapshot in snapshots if snapshot.checked_at is not None}


def still_open(held: socket.socket) -> bool:
    """Tell whether the peer of ``held`` still holds the connection (has not closed it)."""
    held.setblocking(False)
    try:
        while held.recv(65536):  # what the client sent (its startup or SSL request)
            pass
    except BlockingIOError:
        return True  # nothing more to read, and no end of the stream: still open
    except ConnectionResetError:
        return False
    return False  # the end of the stream: the client closed it


def own_lag_seconds(replica: Engine) -> float:
    with replica.connect() as connection:
        lag: float | None = connection.execute(_REPLICA_OWN_LAG).scalar_one()
    return 0.0 if lag is None else lag


def wait_until_caught_up(primary: Engine, replicas: list[Engine]) -> None:
    with primary.connect() as connection:
        current: str = connection.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()
    target = parse_lsn(current)
    wait_for(
        lambda: all(replay_lsn(replica) >= target for replica in replicas),
        timeout=30,
        what="replicas catch up with the primary",
    )


def serving(router: ReplicaRouter) -> tuple[str, ...]:
    return router.snapshot().in_rotation


def wait_for_rotation(router: ReplicaRouter, names: tuple[str, ...], timeout: float) -> float:
    return wait_for(lambda: serving(router) == names, timeout, f"rotation becomes {names}")


@contextmanager
def apply_delay(name: str, delay: str) -> Iterator[None]:
    """Hold back replay of commits on replica ``name`` by ``delay``, undone on the way out."""
    cluster.set_replica_setting(LAYOUT, name, "recovery_min_apply_delay", delay)
    try:
        url = LAYOUT.replica_urls[int(name.removeprefix("replica")) - 1]
        wait_for_setting(url, "recovery_min_apply_delay", delay)
        yield
    finally:
        cluster.set_replica_setting(LAYOUT, name, "recovery_min_apply_delay", "0")


# --------------------------------------------------------------------------- tests


def test_healthy_replicas_take_turns_serving_reads(make_router) -> None:
    router = make_router(5.0)

    snapshot = router.refresh()

    assert snapshot.in_rotation == ("replica1", "replica2")
    assert [chosen(router) for _ in range(6)] in (
        ["replica1", "replica2"] * 3,
        ["replica2", "replica1"] * 3,
    )


def test_snapshot_describes_every_server_for_operators(make_router) -> None:
    router = make_router(5.0)

    snapshot = router.refresh()

    assert isinstance(snapshot, RouterSnapshot)
    assert snapshot.primary_reachable
    assert snapshot.primary_host == f"127.0.0.1:{LAYOUT.pg_port}"
    assert snapshot.primary_lsn is not None
    assert snapshot.max_lag_seconds == 5.0
    assert snapshot.checked_at is not None
    assert snapshot.checked_at.utcoffset() is not None
    assert snapshot.checked_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert [(r.name, r.host) for r in snapshot.replicas] == [
        ("replica1", f"127.0.0.1:{LAYOUT.replica_port(1)}"),
        ("replica2", f"127.0.0.1:{LAYOUT.replica_port(2)}"),
    ]
    for replica in snapshot.replicas:
        assert replica.reachable
        assert replica.in_rotation
        assert replica.lag_bytes == 0
        assert replica.lag_seconds == 0.0
        assert replica.lsn is not None
        assert parse_lsn(replica.lsn) >= parse_lsn(snapshot.primary_lsn)
    with pytest.raises(AttributeError):
        snapshot.primary_reachable = False  # type: ignore[misc]


def test_stopped_router_sends_every_read_to_the_primary(make_router) -> None:
    router = make_router(5.0)
    router.start()
    wait_for_rotation(router, ("replica1", "replica2"), timeout=5)

    router.stop()

    assert router.choose() is None
    assert router.snapshot().checked_at is None  # and it did not start itself again


def test_server_that_never_answers_does_not_hold_up_the_other_probes(
    make_router, router_cluster: cluster.ClusterLayout
) -> None:
    # A socket that completes the TCP handshake (the kernel does) but never
    # speaks: libpq waits for the server's answer until its connect timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent_url = f"postgresql+psycopg2://gridlink@127.0.0.1:{silent.getsockname()[1]}/gridlink"
        router = ReplicaRouter(
            router_cluster.database_url,
            [router_cluster.replica_urls[0], silent_url],
            max_lag_seconds=5.0,
            interval=INTERVAL,
        )
        try:
            first = router.refresh()
            # The silent server holds the probe's connection, unanswered: the round
            # ended while that probe still waited, so it did not wait for it.
            silent.settimeout(5)
            held, _ = silent.accept()
            with held:
                assert still_open(held), "the round waited for the silent server's probe"
                second = router.refresh()  # the first probe of the silent one is still waiting
                assert still_open(held), "the second round waited for the first's probe"
            silent.setblocking(False)
            with pytest.raises(BlockingIOError):
                silent.accept()  # and the second round did not ask the silent server again
        finally:
            router.stop()

    for snapshot in (first, second):
        assert snapshot.in_rotation == ("replica1",)
        assert not snapshot.replicas[1].reachable


def test_idle_primary_shows_no_lag_however_old_the_last_commit(
    make_router, primary: Engine, replicas: list[Engine]
) -> None:
    write_row(primary)
    router = make_router(1.0)
    router.start()

    seen: list[RouterSnapshot] = []

    def watched(condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            seen.append(router.snapshot())
            return condition()

        return check

    # Without the LSN comparison, "now - last replayed commit" is past the bound from here on.
    wait_for(
        watched(lambda: seconds_since_replayed_commit(replicas[REPLICA1]) > 2.0),
        30,
        "the last replayed commit grows older than twice the bound",
    )
    aged = len(seen)
    wait_for(
        watched(lambda: len(rounds_in(seen[aged:])) >= 3),
        30,
        "three probe rounds after that",
    )

    assert len(rounds_in(seen)) >= 3
    for snapshot in seen:
        if snapshot.checked_at is not None:
            assert [r.lag_seconds for r in snapshot.replicas] == [0.0, 0.0]
            assert snapshot.in_rotation == ("replica1", "replica2")


def test_lagging_replica_leaves_rotation_within_two_seconds_and_rejoins_once_caught_up(
    make_router, primary: Engine, replicas: list[Engine]
) -> None:
    router = make_router(1.0)
    router.start()
    wait_for_rotation(router, ("replica1", "replica2"), timeout=5)

    with apply_delay("replica1", "3s"), writes_flowing(primary):
        lagging_since: float | None = None
        left_at: float | None = None
        give_up = time.monotonic() + 15
        while left_at is None or lagging_since is None:
            assert time.monotonic() < give_up, "replica1 never lagged and left rotation"
            now = time.monotonic()
            if lagging_since is None and own_lag_seconds(replicas[REPLICA1]) > 1.0:
                lagging_since = now
            if left_at is None and "replica1" not in serving(router):
                left_at = now
            time.sleep(0.05)
        # The router may notice a moment before this loop's own measurement does.
        assert left_at is not None
        assert lagging_since is not None
        assert left_at - lagging_since <= PROMISE + MARGIN, left_at - lagging_since
        assert serving(router) == ("replica2",)
        assert {chosen(router) for _ in range(10)} == {"replica2"}

    # Writes have stopped and replay is no longer held back: replica1 catches up.
    wait_for_rotation(router, ("replica1", "replica2"), timeout=10)
    assert router.snapshot().replicas[REPLICA1].lag_seconds == 0.0


def test_replica_that_has_not_replayed_a_users_write_is_skipped_for_that_user(
    make_router, primary: Engine, replicas: list[Engine]
) -> None:
    # A 5 s bound keeps the 3 s-delayed replica in rotation: only the LSN can keep it out.
    router = make_router(5.0)
    router.start()
    wait_for_rotation(router, ("replica1", "replica2"), timeout=5)

    with apply_delay("replica1", "3s"):
        written = write_row(primary)
        wait_for(lambda: replay_lsn(replicas[REPLICA2]) >= written, 5, "replica2 replays")
        snapshot = router.refresh()
        timeline = snapshot.primary_timeline
        assert timeline is not None
        mark = Position(timeline, written)

        chosen_for_writer = {chosen(router, mark) for _ in range(10)}
        chosen_for_others = {chosen(router) for _ in range(10)}
        still_behind = replay_lsn(replicas[REPLICA1]) < written

    assert still_behind, "replica1 replayed the write before the check; the test proved nothing"
    assert snapshot.in_rotation == ("replica1", "replica2")
    assert chosen_for_writer == {"replica2"}
    assert chosen_for_others == {"replica1", "replica2"}
    assert router.choose(Position(timeline, written + (1 << 40))) is None  # none has: primary
    # A write on another timeline (a failover since) proves nothing about any replica.
    assert router.choose(Position(timeline + 1, 0)) is None
    assert router.choose(Position(timeline - 1, 0)) is None


def test_stopped_replica_leaves_rotation_within_two_seconds_and_rejoins_after_restart(
    make_router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gridlink.routing.router")
    router = make_router(5.0)
    router.start()
    wait_for_rotation(router, ("replica1", "replica2"), timeout=5)

    try:
        stopping_at = time.monotonic()
        cluster.stop_server(LAYOUT, "replica1")
        wait_for(lambda: "replica1" not in serving(router), 10, "replica1 leaves")
        # Counted from before the shutdown started, so this overstates the delay.
        left_after = time.monotonic() - stopping_at
        assert left_after <= PROMISE + MARGIN, f"left after {left_after:.1f} s"
        assert not router.snapshot().replicas[REPLICA1].reachable
        assert serving(router) == ("replica2",)
        assert {chosen(router) for _ in range(10)} == {"replica2"}

        cluster.stop_server(LAYOUT, "replica2")
        wait_for_rotation(router, (), timeout=PROMISE + MARGIN)
        assert router.choose() is None
        assert router.choose(Position(1, 0)) is None

        cluster.start_server(LAYOUT, "replica1")
        cluster.start_server(LAYOUT, "replica2")
        wait_for_rotation(router, ("replica1", "replica2"), timeout=15)
    finally:
        cluster.start_server(LAYOUT, "replica1")
        cluster.start_server(LAYOUT, "replica2")

    messages = [record.getMessage() for record in caplog.records]
    # Once per change, not once per probe round.
    assert sum("replica1" in m and "out of read rotation" in m for m in messages) == 1
    assert sum("replica1" in m and "rejoined read rotation" in m for m in messages) == 1


def test_a_forked_child_is_refused_its_parents_router_and_the_parent_goes_on(
    make_router, caplog: pytest.LogCaptureFixture
) -> None:
    # gunicorn builds a router in each worker after the fork (preload_app is
    # off); a child that used its parent's would probe on the parent's sockets.
    caplog.set_level(logging.INFO, logger="gridlink.routing.router")
    router = make_router(5.0)
    router.start()
    wait_for_rotation(router, ("replica1", "replica2"), timeout=5)

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child; reports through the pipe
        outcomes = []
        try:
            for use in (router.choose, router.snapshot, router.refresh, router.start):
                try:
                    use()
                except RuntimeError as problem:
                    outcomes.append(f"{use.__name__}: {problem}")
                else:
                    outcomes.append(f"{use.__name__}: served")
            verdict = "\n".join(outcomes).encode()
        except BaseException as problem:
            verdict = repr(problem).encode()
        finally:
            os.write(write_end, verdict)
            os._exit(0)

    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    os.waitpid(child, 0)

    refusal = f"this replica router belongs to process {os.getpid()}: build one in each process"
    answers = dict(line.split(": ", 1) for line in report.splitlines())
    assert list(answers) == ["choose", "snapshot", "refresh", "start"], report
    assert all(answer.startswith(refusal) for answer in answers.values()), report
    # The child touched none of the parent's probe connections or threads.
    assert router.refresh().in_rotation == ("replica1", "replica2")
    assert router.choose() is not None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
