"""The soak (``make soak``): random faults, one after another, under client traffic.

For ``SOAK_SECONDS`` (default 120) a fault drawn at random is injected into a
cluster of the module's own (``GRIDLINK_TEST_PORT_BASE`` + 100) while client
threads write and read through one gunicorn server; after each fault the
test waits until the service serves normally again, then draws the next.
``SOAK_SEED`` replays a run. At the end the same checks as the fast fault
tests hold over everything that happened: no 5xx but 503 ``unavailable``
with ``Retry-After`` on writes, no request cut off except by a killed
worker, every acknowledged write in the primary and none doubled by a
retry, and every profile served at its newest version.

Excluded from ``make test`` (the ``soak`` marker is deselected by default).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from tests.support.faults import (
    Account,
    FaultRig,
    Traffic,
    assert_nothing_lost_nothing_doubled,
    assert_settles_on_newest,
    broken,
    fault_rig,
    improper_answers,
    open_account,
    primary_version,
    redis_client,
    redis_frozen,
    replay_delayed,
    replay_paused,
    replica_caught_up,
    replica_serves,
    retry_unacknowledged,
    serves_normally,
    stopped,
)
from tests.support.waiting import wait_for

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
SEED = int(os.environ.get("SOAK_SEED", str(random.SystemRandom().randrange(1 << 32))))
ACCOUNTS = 4
RECOVERY_SECONDS = 30
STALENESS_SECONDS = 5 + 2 + 1  # API.md promise 4, with a probe interval of slack

pytestmark = pytest.mark.soak

Fault = Callable[[FaultRig, random.Random], None]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultRig]:
    with fault_rig("soak", tmp_path_factory.mktemp("soak-mail")) as built:
        yield built


# --- the faults: each one leaves every server running when it returns ---------------------------


kills: list[float] = []  # when each worker was killed (time.monotonic())


def kill_a_worker(rig: FaultRig, rng: random.Random) -> None:
    workers = rig.server.worker_pids()
    victim = rng.choice(workers)
    os.kill(victim, signal.SIGKILL)
    kills.append(time.monotonic())
    wait_for(
        lambda: victim not in (now := rig.server.worker_pids()) and len(now) == len(workers),
        RECOVERY_SECONDS,
        "gunicorn replaces the killed worker",
    )


Held = Callable[[FaultRig, random.Random], AbstractContextManager[None]]


def for_a_while(fault: Held) -> Fault:
    """Make a fault that holds ``fault(rig, rng)`` for a random while."""

    def hold(rig: FaultRig, rng: random.Random) -> None:
        with fault(rig, rng):
            time.sleep(rng.uniform(0.3, 6))

    return hold


def redis_back_with_its_old_data(rig: FaultRig, rng: random.Random) -> None:
    with redis_client(rig.settings) as client:
        client.save()
    for_a_while(lambda rig, rng: stopped(rig.layout, "redis"))(rig, rng)


def redis_flushed(rig: FaultRig, rng: random.Random) -> None:
    with redis_client(rig.settings) as client:
        client.flushall()


FAULTS: dict[str, Fault] = {
    "worker killed": kill_a_worker,
    "primary restarted": for_a_while(lambda rig, rng: stopped(rig.layout, "primary")),
    "replica restarted": for_a_while(lambda rig, rng: stopped(rig.layout, "replica1")),
    "redis restarted empty": for_a_while(lambda rig, rng: stopped(rig.layout, "redis")),
    "redis restarted with its old data": redis_back_with_its_old_data,
    "redis flushed": redis_flushed,
    "redis frozen": for_a_while(lambda rig, rng: redis_frozen(rig.layout)),
    "replica delayed": for_a_while(
        lambda rig, rng: replay_delayed(rig.layout, f"{rng.randint(1, 8)}s")
    ),
    "replica replay paused": for_a_while(lambda rig, rng: replay_paused(rig.layout)),
}


# --- the soak -----------------------------------------------------------------------------------


def cut_off_by_no_kill(traffic: Traffic) -> list[str]:
    """Describe the requests that got no answer though no worker was killed while they ran."""
    return [
        a.describe()
        for a in broken(traffic.attempts)
        if not any(a.started <= killed <= a.finished + 1 for killed in kills)
    ]


@pytest.mark.timeout(SOAK_SECONDS + 600)
def test_random_faults_under_traffic_lose_nothing_and_serve_fresh_profiles(rig: FaultRig) -> None:
    rng = random.Random(SEED)
    print(f"\nsoak: {SOAK_SECONDS:.0f} s, SOAK_SEED={SEED}")
    accounts: list[Account] = [open_account(rig.address, "soak") for _ in range(ACCOUNTS)]
    prober = open_account(rig.address, "probe")  # its writes are not in the traffic's record
    # Anonymous reads of their first grids may see it only once the replica has it.
    wait_for(lambda: replica_caught_up(rig), RECOVERY_SECONDS, "replica1 has the accounts")
    injected: Counter[str] = Counter()
    timeline: list[tuple[float, float, str]] = []
    started = time.monotonic()
    with Traffic(rig.address, accounts) as traffic:
        while time.monotonic() - started < SOAK_SECONDS:
            name = rng.choice(sorted(FAULTS))
            fault_started = time.monotonic()
            FAULTS[name](rig, rng)
            timeline.append((fault_started, time.monotonic(), name))
            injected[name] += 1
            # One fault at a time: the next waits until the replica serves again
            # (with the primary down, a replica out of rotation leaves no reads).
            wait_for(
                lambda: replica_serves(rig, accounts[0], reads=8),
                RECOVERY_SECONDS,
                f"replica in rotation after {name}",
            )
            wait_for(
                lambda: serves_normally(rig.address, prober),
                RECOVERY_SECONDS,
                f"serving normally after {name}",
            )
            time.sleep(rng.uniform(0.2, 1.5))
    elapsed = time.monotonic() - started

    statuses = Counter(a.status for a in traffic.attempts)
    print(f"soak: {elapsed:.0f} s, faults {dict(injected)}")
    print(f"soak: {len(traffic.attempts)} requests, by status {dict(statuses)}")
    wrong = improper_answers(traffic.attempts, writes_may_503=True)
    assert not wrong, "\n".join(
        [*wrong, "faults:", *(f"{a:.1f}-{b:.1f} {n}" for a, b, n in timeline)]
    )
    assert not cut_off_by_no_kill(traffic)

    retried = retry_unacknowledged(rig.address, traffic.writes)
    stored = assert_nothing_lost_nothing_doubled(rig.primary, accounts, traffic.attempts + retried)
    print(f"soak: {len(retried)} failed writes retried with their keys; {stored} rows checked")

    wait_for(lambda: replica_caught_up(rig), RECOVERY_SECONDS, "replica1 catches up")
    for account in accounts:
        newest = primary_version(rig.primary, account)
        assert_settles_on_newest(rig.address, account, newest, STALENESS_SECONDS)
