"""The cache's rules that need no server: positions, the cool-off, how the stream is shown."""

from __future__ import annotations

import random

import pytest
import redis

from gridlink.cache.lifetime import TIMEOUT_COOL_OFF_SECONDS, CoolOff
from gridlink.cache.positions import decode_position, encode_position
from gridlink.cache.stream import StreamReport
from gridlink.db.lsn import Position
from gridlink.db.urls import libpq_url
from gridlink.ops.replicas_view import format_stream


def test_positions_compare_as_strings_exactly_as_they_compare_as_numbers() -> None:
    generator = random.Random(11)
    # Around 2**53, where a Lua number (a double) can no longer tell neighbours apart.
    edges = [2**53 - 1, 2**53, 2**53 + 1, 2**64 - 1, 0, 1]
    lsns = edges + [generator.randrange(2**64) for _ in range(1000)]
    positions = [Position(generator.choice([1, 2, 0xFFFFFFFF]), lsn) for lsn in lsns]
    # Newer timelines sort last, whatever their LSN: a raise never goes back a timeline.
    assert sorted(positions) == sorted(positions, key=encode_position)
    for position in positions:
        assert len(encode_position(position)) == 24
        assert decode_position(encode_position(position)) == position
    assert decode_position(None) is None
    assert decode_position(b"0000000003000148") is None  # the former 16-digit form: no proof


def test_a_position_proves_another_only_on_the_same_known_timeline() -> None:
    assert Position(2, 100).proves(Position(2, 100))
    assert not Position(2, 99).proves(Position(2, 100))
    assert not Position(3, 500).proves(Position(2, 100))  # another branch: no proof
    assert not Position(0, 500).proves(Position(0, 100))  # timeline unknown


def test_after_a_timeout_redis_is_not_asked_until_the_cool_off_ends() -> None:
    now = [100.0]
    cool_off = CoolOff(lambda: now[0])
    cool_off.check()  # nothing timed out yet
    cool_off.begin()
    with pytest.raises(redis.TimeoutError):
        cool_off.check()
    now[0] += TIMEOUT_COOL_OFF_SECONDS - 0.01
    with pytest.raises(redis.TimeoutError):
        cool_off.check()
    now[0] += 0.01
    cool_off.check()


def test_the_stream_line_says_why_fills_are_short_when_it_is_down() -> None:
    down = StreamReport("no applied position in redis: the relay is down or redis lost its data")
    assert format_stream(down) == (
        "change stream: NO APPLIED POSITION IN REDIS: THE RELAY IS DOWN OR REDIS LOST ITS DATA"
        " (fills from replicas live 1 s)"
    )
    running = StreamReport("ok", "0/3000148", 120, 0.25, 2)
    assert format_stream(running) == (
        "change stream: ok, applied 0/3000148, 120 bytes and 0.25 s behind, 2 profiles pending"
    )


def test_the_relay_connects_with_a_url_libpq_understands() -> None:
    url = "postgresql+psycopg2://gridlink:secret@127.0.0.1:15432/gridlink"
    assert libpq_url(url) == "postgresql://gridlink:secret@127.0.0.1:15432/gridlink"
