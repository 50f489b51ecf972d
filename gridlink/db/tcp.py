"""libpq connection options that notice a vanished server in seconds, not minutes.

A server whose host is cut off (link down, partition) neither answers nor
closes: without these, a connection waits for TCP's own retransmission
timeout, about fifteen minutes, and a pool's pre-ping with it.
"""

from __future__ import annotations


def dead_peer_options(user_timeout_ms: int) -> dict[str, int]:
    """Drop a connection whose peer stops acknowledging, or stays silent when idle.

    ``tcp_user_timeout`` only counts data sent and not acknowledged, so a slow
    query (the server has acknowledged it and is working) is not cut short.
    """
    return {
        "tcp_user_timeout": user_timeout_ms,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 1,
        "keepalives_count": 3,
    }
