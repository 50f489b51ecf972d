"""The terminal table of ``gridlink replicas``: layout, colour and when colour is allowed."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest

from gridlink.ops.replicas_view import format_snapshot, use_colour
from gridlink.routing.policy import ServerStatus
from gridlink.routing.router import Failover, RouterSnapshot

RED, RESET = "\x1b[31m", "\x1b[0m"


def replica(number: int, **seen: Any) -> ServerStatus:
    role = "replica" if seen["reachable"] else "unreachable"
    return ServerStatus(
        name=f"replica{number}", host=f"127.0.0.1:{15432 + number}", role=role, **seen
    )


SNAPSHOT = RouterSnapshot(
    primary_host="127.0.0.1:15432",
    primary_reachable=True,
    primary_lsn="0/3000148",
    servers=(
        ServerStatus(name="db", host="127.0.0.1:15432", reachable=True, lag_bytes=0,
                     lag_seconds=0.0, lsn="0/3000148", role="primary", timeline=2),
        replica(1, reachable=True, in_rotation=True, lag_bytes=0, lag_seconds=0.0,
                lsn="0/3000148", timeline=2),
        replica(2, reachable=True, in_rotation=False, lag_bytes=1048576, lag_seconds=12.3456,
                lsn="0/2F00000", timeline=1),
        replica(3, reachable=False),
    ),
    checked_at=datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC),
    max_lag_seconds=5.0,
    primary_timeline=2,
    last_failover=Failover(
        at=datetime(2026, 11, 27, 9, 58, 0, tzinfo=UTC),
        old="replica2 (127.0.0.1:15434)",
        new="db (127.0.0.1:15432)",
        timeline=2,
    ),
)  # fmt: skip


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_table_shows_the_primary_then_every_server_by_role_and_the_last_failover():
    assert format_snapshot(SNAPSHOT, colour=False).splitlines() == [
        "primary 127.0.0.1:15432: reachable, WAL at 0/3000148, timeline 2"
        "  (lag bound 5 s, checked 2026-11-27T10:00:00.123456Z)",
        "SERVER    HOST             REACHABLE  ROTATION  LAG SECONDS  LAG BYTES  REPLAY LSN  "
        "ROLE         TIMELINE",
        "db        127.0.0.1:15432  yes        no        0.00         0          0/3000148   "
        "primary      2",
        "replica1  127.0.0.1:15433  yes        yes       0.00         0          0/3000148   "
        "replica      2",
        "replica2  127.0.0.1:15434  yes        no        12.35        1048576    0/2F00000   "
        "replica      1",
        "replica3  127.0.0.1:15435  no         no        -            -          -           "
        "unreachable  -",
        "last failover: 2026-11-27T09:58:00.000000Z, replica2 (127.0.0.1:15434) ->"
        " db (127.0.0.1:15432) (timeline 2)",
    ]


def test_colour_marks_exactly_the_replicas_out_of_rotation_in_red():
    plain = format_snapshot(SNAPSHOT, colour=False).splitlines()
    coloured = format_snapshot(SNAPSHOT, colour=True).splitlines()
    assert coloured[:4] == plain[:4]  # the header lines, the primary and replica1 in rotation
    assert coloured[4] == f"{RED}{plain[4]}{RESET}"
    assert coloured[5] == f"{RED}{plain[5]}{RESET}"


def test_an_unreachable_primary_and_no_replicas_are_said_in_words():
    lonely = RouterSnapshot(
        primary_host="db:5432",
        primary_reachable=False,
        primary_lsn=None,
        servers=(),
        checked_at=None,
        max_lag_seconds=2.5,
    )
    header, columns, note = format_snapshot(lonely, colour=True).splitlines()
    assert header == "primary db:5432: UNREACHABLE  (lag bound 2.5 s, checked never)"
    assert columns.startswith("SERVER")
    assert note == "(no replicas configured: every read goes to the primary)"


@pytest.mark.parametrize(
    ("stream", "environ", "expected"),
    [
        (Terminal(), {}, True),
        (Terminal(), {"NO_COLOR": "1"}, False),
        (Terminal(), {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value counts
        (io.StringIO(), {}, False),
    ],
)
def test_colour_only_on_a_terminal_and_never_with_no_color(stream, environ, expected):
    assert use_colour(stream, environ) is expected
