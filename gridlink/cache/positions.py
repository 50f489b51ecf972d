"""WAL positions kept in Redis: the stream's applied position and the writers' marks.

Lua numbers are doubles, too narrow for a 64-bit LSN, so a position is kept
as 16 upper-case hex digits, zero-padded: then comparing two positions as
strings compares them as numbers, in Lua and in Python alike.
"""

from __future__ import annotations

# KEYS[1]: the position; ARGV: a position (16 hex digits), seconds to live,
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


def encode_position(lsn: int) -> bytes:
    """Write an LSN so that byte order is numeric order (16 hex digits)."""
    return b"%016X" % lsn


def decode_position(raw: bytes | None) -> int | None:
    return None if raw is None else int(raw, 16)


def applied_key(keyspace: str) -> str:
    """Name the stream's applied position in a Redis lifetime's keyspace."""
    return f"{keyspace}:stream:applied"
