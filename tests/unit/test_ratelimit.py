"""The sliding-window arithmetic of login throttling."""

from __future__ import annotations

from gridlink.ratelimit import retry_after_seconds


def test_fewer_failures_than_the_limit_allow_an_attempt():
    assert retry_after_seconds([], 5, 900, now=1000.0) is None
    assert retry_after_seconds([990.0] * 4, 5, 900, now=1000.0) is None


def test_at_the_limit_the_wait_lasts_until_the_oldest_failure_leaves_the_window():
    failures = [100.0, 200.0, 300.0, 400.0, 500.0]
    assert retry_after_seconds(failures, 5, 900, now=600.0) == 400  # 100 + 900 - 600


def test_over_the_limit_enough_failures_must_leave_to_drop_below_it():
    # Seven failures (concurrent attempts can overshoot), limit five: the third oldest decides.
    failures = [700.0, 100.0, 300.0, 200.0, 400.0, 500.0, 600.0]
    assert retry_after_seconds(failures, 5, 900, now=650.0) == 550  # 300 + 900 - 650


def test_the_wait_is_whole_seconds_and_at_least_one():
    assert retry_after_seconds([0.0], 1, 10, now=9.2) == 1
    assert retry_after_seconds([0.0], 1, 10, now=9.9999) == 1
    assert retry_after_seconds([0.0], 1, 10, now=3.5) == 7
