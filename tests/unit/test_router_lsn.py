"""The replica router's pure pieces: LSN text and the rotation rule (lag: test_lag.py)."""

from __future__ import annotations

import pytest

from gridlink.db.lsn import format_lsn, parse_lsn
from gridlink.routing.policy import stays_in_rotation


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


def test_replica_in_rotation_stays_up_to_the_bound_and_leaves_past_it() -> None:
    assert stays_in_rotation(was_in_rotation=True, lag_seconds=5.0, max_lag_seconds=5.0)
    assert not stays_in_rotation(was_in_rotation=True, lag_seconds=5.1, max_lag_seconds=5.0)


def test_replica_out_of_rotation_rejoins_only_under_half_the_bound() -> None:
    assert not stays_in_rotation(was_in_rotation=False, lag_seconds=3.0, max_lag_seconds=5.0)
    assert stays_in_rotation(was_in_rotation=False, lag_seconds=2.5, max_lag_seconds=5.0)
    assert stays_in_rotation(was_in_rotation=False, lag_seconds=0.0, max_lag_seconds=5.0)


def test_replica_of_unknown_lag_is_out_of_rotation() -> None:
    assert not stays_in_rotation(was_in_rotation=True, lag_seconds=None, max_lag_seconds=5.0)
