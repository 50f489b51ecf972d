"""What the kernel says of a TCP connection on this machine: bytes the server has not read yet."""

from __future__ import annotations

import socket
from pathlib import Path


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def unread_by_server(server_port: int, client: socket.socket) -> int | None:
    """Return how many bytes ``client`` sent that the server's end has not read (None: no end).

    Read from ``/proc/net/tcp``: the server's end of the connection is the
    socket on ``server_port`` whose peer is ``client``'s port, accepted or
    still waiting in the listen queue.
    """
    client_port = client.getsockname()[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if _port(fields[1]) == server_port and _port(fields[2]) == client_port:
                return int(fields[4].split(":")[1], 16)  # tx_queue:rx_queue
    return None


def read_by_server(server_port: int, client: socket.socket) -> bool:
    """Tell whether the server's end of ``client``'s connection has read all ``client`` sent."""
    return unread_by_server(server_port, client) == 0
