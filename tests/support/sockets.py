"""What the kernel says of sockets on this machine: bytes a server has not read, who listens."""

from __future__ import annotations

import os
import socket
from pathlib import Path

# /proc/net/unix's Flags column for a socket that accepts connections (__SO_ACCEPTCON).
_ACCEPTING = 0x10000


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


def unix_listeners(pid: int) -> list[str]:
    """Return the paths of the Unix sockets process ``pid`` listens on (abstract ones start @)."""
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    paths = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[3], 16) & _ACCEPTING and fields[6] in inodes:
            paths.append(fields[7] if len(fields) > 7 else "")
    return paths
