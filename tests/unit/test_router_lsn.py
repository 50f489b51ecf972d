"""The replica router's pure pieces: LSN text, the lag rule, the rotation rule."""

from __future__ import annotations

import pytest

from gridlink.lsn import format_lsn, parse_lsn
from gridlink.queries.router import replica_lag_seconds, stays_in_rotation


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("0/0", 0),
        ("0/3000148", 0x3000148),
        ("16/B374D848", (0x16 << 32) + 0xB374D848),
        ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
    ],
)
def test_lsn_text_and_position_round_trip(text: str, position: int) -> None:
    assert parse_lsn(text) == position
    assert format_lsn(position) == text


def test_lsn_text_is_read_in_any_case_and_written_as_postgresql_does() -> None:
    assert format_lsn(parse_lsn("1a/00ff")) == "1A/FF"


def test_lsns_order_as_wal_positions_do() -> None:
    assert parse_lsn("0/FFFFFFFF") < parse_lsn("1/0") < parse_lsn("1/1")


@pytest.mark.parametrize("text", ["", "3000148", "0/", "/1", "0/xyz", "1/2/3"])
def test_text_that_is_not_an_lsn_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"LSN|invalid literal"):
        parse_lsn(text)


@pytest.mark.parametrize("position", [-1, 1 << 64])
def test_position_outside_the_wal_is_refused(position: int) -> None:
    with pytest.raises(ValueError, match="WAL position"):
        format_lsn(position)


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


def test_replica_in_rotation_stays_up_to_the_bound_and_leaves_past_it() -> None:
    assert stays_in_rotation(was_in_rotation=True, lag_seconds=5.0, max_lag_seconds=5.0)
    assert not stays_in_rotation(was_in_rotation=True, lag_seconds=5.1, max_lag_seconds=5.0)


def test_replica_out_of_rotation_rejoins_only_under_half_the_bound() -> None:
    assert not stays_in_rotation(was_in_rotation=False, lag_seconds=3.0, max_lag_seconds=5.0)
    assert stays_in_rotation(was_in_rotation=False, lag_seconds=2.5, max_lag_seconds=5.0)
    assert stays_in_rotation(was_in_rotation=False, lag_seconds=0.0, max_lag_seconds=5.0)


def test_replica_of_unknown_lag_is_out_of_rotation() -> None:
    assert not stays_in_rotation(was_in_rotation=True, lag_seconds=None, max_lag_seconds=5.0)
