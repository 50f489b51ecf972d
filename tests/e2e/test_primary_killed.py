"""The primary killed (SIGKILL) under acknowledged writes: crash recovery loses none of them.

Everywhere else outside staging a stopped primary gets PostgreSQL's fast
shutdown, which finishes cleanly. Here its postmaster is SIGKILLed while
writer threads create grids and links through the API (each under its own
``Idempotency-Key``), as a crash would end it, and then started again: it
recovers from its WAL. Every write the API acknowledged must be in the
primary, none twice after a retry with its key; while it was down writes
answer API.md's 503, never a 500; and the same workers serve writes again.
The module runs a cluster of its own (``tests/support/clusters.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from infra import cluster
from tests.support.faults import (
    FaultRig,
    Traffic,
    assert_nothing_lost_nothing_doubled,
    assert_recovered_in_place,
    broken,
    fault_rig,
    improper_answers,
    is_unavailable,
    kill_primary,
    open_account,
    replica_caught_up,
    retry_unacknowledged,
)
from tests.support.waiting import wait_for

WRITERS = 4


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultRig]:
    with fault_rig("primary-killed", tmp_path_factory.mktemp("primary-killed-mail")) as built:
        yield built


def test_a_primary_killed_under_writes_comes_back_with_every_acknowledged_write(
    rig: FaultRig,
) -> None:
    accounts = [open_account(rig.address, "killed") for _ in range(WRITERS)]
    workers = rig.server.worker_pids()
    with Traffic(rig.address, accounts) as traffic:
        traffic.wait_for_answers(since=0)
        killing_at = time.monotonic()
        kill_primary(rig.layout)
        dead_at = time.monotonic()
        # The writers meet the dead primary before it comes back.
        wait_for(
            lambda: any(a.is_write for a in traffic.answered_since(dead_at)),
            30,
            "a write answered while the primary is dead",
        )
        restarting_at = time.monotonic()
        cluster.start_server(rig.layout, "primary")  # crash recovery from its WAL
        up_at = time.monotonic()
        # Without restarting anything: the pools reconnect on their own.
        wait_for(
            lambda: any(a.acknowledged for a in traffic.writes if a.started > up_at),
            30,
            "a write acknowledged after crash recovery",
        )

    before = [a for a in traffic.writes if a.finished < killing_at and a.acknowledged]
    assert before, "no write was acknowledged before the kill: the test proved nothing"
    while_dead = [a for a in traffic.writes if dead_at < a.started and a.finished < restarting_at]
    assert while_dead, "no write was tried while the primary was dead"
    refused = [a.describe() for a in while_dead if a.reply is None or not is_unavailable(a.reply)]
    assert not refused, refused
    assert not improper_answers(traffic.attempts, writes_may_503=True)
    assert not [a.describe() for a in broken(traffic.attempts)]

    retried = retry_unacknowledged(rig.address, traffic.writes)
    stored = assert_nothing_lost_nothing_doubled(rig.primary, accounts, traffic.attempts + retried)
    assert stored > len(before)
    wait_for(lambda: replica_caught_up(rig), 30, "replica1 streams from the recovered primary")
    assert_recovered_in_place(rig, workers, accounts[0])
