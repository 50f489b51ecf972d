"""Host faults on staging: every process of a host killed, its link cut, its packets delayed."""

from __future__ import annotations

import contextlib
import os
import signal

from infra.processes import wait_until
from infra.staging import network
from infra.staging.inventory import Host

KILL_TIMEOUT = 10.0


def kill_host(host: Host) -> list[int]:
    """SIGKILL every process in the host's namespace, as a power cut would; return their pids.

    A host without power answers for no address either: the floating one a
    killed keepalived leaves on the interface goes too (else the host's
    kernel would still answer ARP for it beside the new holder).
    """
    killed = network.pids(host)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not network.pids(host), KILL_TIMEOUT)
    network.drop_added_addresses(host)
    return killed


def cut_link(host: Host) -> None:
    """Take the host's link down: its processes live on, but nothing reaches them."""
    network.set_link(host, up=False)


def restore_link(host: Host) -> None:
    network.set_link(host, up=True)


def add_latency(host: Host, delay: str) -> None:
    """Delay every packet the host sends by ``delay`` (e.g. '1ms'), with tc netem."""
    network.set_delay(host, delay)


def remove_latency(host: Host) -> None:
    network.set_delay(host, None)
