"""The sliding-window arithmetic of the limits, and their per-process fallback."""

from __future__ import annotations

from gridlink.accounts.ratelimit import LocalWindows, Window, retry_after_seconds


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


# --- the per-process fallback -----------------------------------------------------------------


def test_each_process_allows_its_share_of_a_limit_and_at_least_one():
    assert LocalWindows(processes=4).share(50) == 12
    assert LocalWindows(processes=8).share(5) == 1
    assert LocalWindows(processes=1).share(5) == 5


def test_local_windows_reserve_in_every_window_or_in_none():
    windows = LocalWindows(processes=2)
    tight, loose = Window("tight", 2, 100), Window("loose", 10, 100)
    assert windows.reserve([tight, loose], "a", now=0.0) == 0
    assert windows.reserve([loose], "b", now=1.0) == 0
    # "tight" allows one in this process (2 / 2): refused, and "loose" is not counted either.
    assert windows.reserve([tight, loose], "c", now=2.0) == 98
    assert windows.reserve([loose], "d", now=3.0) == 0
    assert windows.reserve([Window("loose", 6, 100)], "e", now=4.0) == 96  # a, b, d: 3 of 3


def test_a_given_back_attempt_no_longer_counts_and_old_ones_leave_the_window():
    windows = LocalWindows(processes=1)
    login = Window("login", 1, 10)
    assert windows.reserve([login], "a", now=0.0) == 0
    windows.release(["login"], "a")
    assert windows.reserve([login], "b", now=1.0) == 0
    assert windows.reserve([login], "c", now=2.0) == 9
    assert windows.reserve([login], "c", now=11.5) == 0


def test_local_windows_forget_the_oldest_counters_past_their_capacity():
    windows = LocalWindows(processes=1, capacity=3)
    for name in "abcd":
        assert windows.reserve([Window(name, 1, 100)], "m", now=0.0) == 0
    # "a" was forgotten: allowed again; "d" is still counted.
    assert windows.reserve([Window("a", 1, 100)], "n", now=1.0) == 0
    assert windows.reserve([Window("d", 1, 100)], "n", now=1.0) == 99
