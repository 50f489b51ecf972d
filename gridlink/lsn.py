"""PostgreSQL WAL positions (LSNs) as integers that order like the WAL."""

from __future__ import annotations


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
