"""WAL positions kept in Redis: the stream's applied position and the writers' marks.

Lua numbers are doubles, too narrow for a 64-bit LSN, so a position is kept
as 24 upper-case hex digits, zero-padded: the timeline (8), then the LSN
(16). Comparing two positions as strings then orders them as the WAL does,
newer timelines last, in Lua and in Python alike; the first 8 digits say
whether two positions are on the same timeline at all.
"""

from __future__ import annotations

from gridlink.db.lsn import Position

# KEYS[1]: the position; ARGV: a position (24 hex digits), seconds to live,
# '1' to raise the stored position to the given one, '0' to raise it only if
# there is none. The larger position is kept; its lifetime starts again.
RAISE_POSITION = """
local current = redis.call('GET', KEYS[1])
local position = ARGV[1]
if current and (ARGV[3] == '0' or current > position) then
  position = current
end
redis.call('SET', KEYS[1], position, 'EX', ARGV[2])
return position
"""


def encode_position(position: Position) -> bytes:
    """Write a position so that byte order is WAL order (24 hex digits)."""
    return b"%08X%016X" % position


def decode_position(raw: bytes | None) -> Position | None:
    """Read a position back; None for none, or for one kept in another form."""
    if raw is None or len(raw) != 24:
        return None
    return Position(int(raw[:8], 16), int(raw[8:], 16))


def applied_key(keyspace: str) -> str:
    """Name the stream's applied position in a Redis lifetime's keyspace."""
    return f"{keyspace}:stream:applied"


# The field of ``recent_key`` that holds the position before the last batch; no
# username has a colon.
BEFORE_FIELD = ":before"


def recent_key(keyspace: str) -> str:
    """Name the hash of the stream's last batch: the position before it, the profiles it changed."""
    return f"{keyspace}:stream:recent"
