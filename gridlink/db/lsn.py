"""PostgreSQL WAL positions (LSNs) as integers that order like the WAL, and their timelines.

An LSN alone does not name a point in history: after a failover the new
primary's timeline branches off at some LSN, and the same LSN further on
means different data on either branch. A ``Position`` keeps the timeline with
the LSN; two positions prove something about each other only on the same
timeline.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Connection, text

# The primary's current WAL position and timeline (the one its WAL file is named after).
CURRENT_POSITION = text(
    "SELECT pg_current_wal_lsn()::text,"
    " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
)
# Spelled for a plain DB-API cursor (the change relay's).
CURRENT_POSITION_SQL = str(CURRENT_POSITION)
# A replica's timeline: the one its WAL receiver streams (pg_monitor may read it),
# or, with no receiver running, the one of its last restartpoint.
REPLICA_TIMELINE_SQL = (
    "COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),"
    " (SELECT timeline_id FROM pg_control_checkpoint()))"
)


class Position(NamedTuple):
    """A WAL position on a timeline; tuples order by timeline first, then LSN."""

    timeline: int  # 0: unknown, matches no other position
    lsn: int

    def proves(self, other: Position) -> bool:
        """Tell whether a server at ``self`` has everything up to ``other``."""
        return self.timeline == other.timeline != 0 and self.lsn >= other.lsn


def position_from_row(lsn: str, timeline: int) -> Position:
    """Build a position from ``CURRENT_POSITION``'s row."""
    return Position(int(timeline), parse_lsn(lsn))


def current_position(connection: Connection) -> Position:
    """Ask the primary ``connection`` reaches for its current position and timeline."""
    row = connection.execute(CURRENT_POSITION).one()
    return position_from_row(row[0], row[1])


def parse_position(text: str) -> Position | None:
    """Read a position written ``<timeline>:<lsn>`` (as SQL builds one); None for ''."""
    timeline, separator, lsn = text.partition(":")
    if not separator:
        return None
    return Position(int(timeline), parse_lsn(lsn))


def parse_lsn(lsn: str) -> int:
    """Turn PostgreSQL's 'X/Y' text form of a WAL position into a byte position."""
    high, separator, low = lsn.strip().partition("/")
    if not separator or not high or not low:
        raise ValueError(f"{lsn!r} is not a PostgreSQL LSN like '0/3000148'")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(position: int) -> str:
    """Turn a byte position into PostgreSQL's 'X/Y' text form of an LSN."""
    if not 0 <= position < 1 << 64:
        raise ValueError(f"{position} is not a WAL position")
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
