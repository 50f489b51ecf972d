"""``make bench``'s groups: each ratio it reports as a target is of two apps read in turns."""

from __future__ import annotations

from bench.bench import (
    APPS,
    CONSTANT,
    HOT_NEAR,
    STEADY,
    STORED,
    WRITES_5,
    WRITES_50,
    Throughput,
    combined,
    groups,
    yardstick,
)


def test_each_target_ratio_is_of_two_apps_of_one_group() -> None:
    pairs = [(index, yardstick(APPS[index])) for index in (STEADY, STORED, WRITES_5, WRITES_50)]
    for app, other in [*pairs, (HOT_NEAR, CONSTANT)]:
        assert APPS[app].group == APPS[other].group, APPS[app].label


def test_a_group_reads_under_one_write_rate_from_one_state_of_the_cache() -> None:
    for members in groups().values():
        apps = [APPS[index] for index in members]
        assert len({app.writes_per_second for app in apps}) == 1
        assert sum(app.makes_the_pass for app in apps) <= 1
    assert sorted(index for members in groups().values() for index in members) == list(
        range(len(APPS))
    )


def turn(rate: float, answers: int, cpu_us: float, hmgets: float, p50: float) -> Throughput:
    return Throughput(rate, p50, p50 * 3, answers, 0, 0, cpu_us, hmgets, 1000.0, hmgets, 0.0)


def test_an_apps_turns_combine_into_one_run_weighted_by_answers() -> None:
    run = combined(
        [
            turn(1000, 2000, 300, 1.0, 4.0),
            turn(3000, 6000, 100, 0.0, 2.0),
            turn(2000, 4000, 200, 0.5, 3.0),
        ]
    )
    assert run.requests_per_second == 2000  # the turns are equally long
    assert (run.from_cache, run.from_elsewhere) == (12000, 0)
    assert run.worker_cpu_us == (300 * 2000 + 100 * 6000 + 200 * 4000) / 12000
    assert run.redis_hmgets == (2000 + 2000) / 12000
    assert run.p50_ms == 3.0
