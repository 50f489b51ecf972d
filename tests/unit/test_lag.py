"""Replica lag from probe facts, the one rule the router and the cluster drivers share."""

from __future__ import annotations

from gridlink.routing.lag import replica_lag_bytes, replica_lag_seconds


def lag(
    *,
    replay: int | None = 100,
    receive: int | None = 100,
    primary: int | None = 100,
    since_commit: float | None = 600.0,
    bound: float | None = None,
) -> float | None:
    return replica_lag_seconds(
        replay_lsn=replay,
        receive_lsn=receive,
        primary_lsn=primary,
        seconds_since_replayed_commit=since_commit,
        staleness_bound=bound,
    )


def test_replica_at_the_primarys_position_has_no_lag_however_old_its_last_commit() -> None:
    assert lag(replay=100, receive=100, primary=100, since_commit=600.0) == 0.0


def test_replica_past_the_primarys_position_read_a_moment_earlier_has_no_lag() -> None:
    assert lag(replay=120, receive=120, primary=100) == 0.0


def test_unreachable_primary_falls_back_to_the_replicas_receive_and_replay() -> None:
    assert lag(replay=100, receive=100, primary=None, since_commit=600.0) == 0.0
    # After a restart the walreceiver reports a segment start, behind replay.
    assert lag(replay=100, receive=64, primary=None, since_commit=600.0) == 0.0
    assert lag(replay=100, receive=150, primary=None, since_commit=3.5) == 3.5


def test_replica_behind_the_primary_lags_by_the_age_of_its_last_replayed_commit() -> None:
    assert lag(replay=100, receive=150, primary=200, since_commit=3.5) == 3.5


def test_replica_that_stopped_receiving_still_lags_while_the_primary_moves_on() -> None:
    # receive == replay would say "caught up"; the primary's position says otherwise.
    assert lag(replay=100, receive=100, primary=200, since_commit=42.0) == 42.0


def test_staleness_bound_caps_an_old_commit_age_when_only_non_commit_wal_is_pending() -> None:
    assert lag(replay=100, receive=110, primary=110, since_commit=600.0, bound=1.0) == 1.0
    assert lag(replay=100, receive=110, primary=110, since_commit=2.0, bound=9.0) == 2.0


def test_lag_is_unknown_without_replay_or_any_bound() -> None:
    assert lag(replay=None) is None
    assert lag(replay=100, primary=200, since_commit=None, bound=None) is None


def test_lag_is_never_negative_under_clock_skew() -> None:
    assert lag(replay=100, receive=150, primary=200, since_commit=-0.3) == 0.0


def test_lag_bytes_are_what_the_replica_has_still_to_replay() -> None:
    assert replica_lag_bytes(primary_lsn=200, replay_lsn=150) == 50


def test_lag_bytes_are_never_negative_when_the_primary_was_asked_first() -> None:
    assert replica_lag_bytes(primary_lsn=100, replay_lsn=120) == 0


def test_lag_bytes_are_unknown_without_both_positions() -> None:
    assert replica_lag_bytes(primary_lsn=None, replay_lsn=100) is None
    assert replica_lag_bytes(primary_lsn=100, replay_lsn=None) is None
