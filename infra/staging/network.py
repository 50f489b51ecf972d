"""Staging's network on one machine: a bridge, and a namespace per host joined to it by a veth.

Each host's namespace gets its loopback and one interface, ``eth0``, with
its address on staging's subnet and no other route: no default route, no
NAT, nothing forwarded. The machine keeps the bridge's address, so an
operator reaches the hosts and the hosts reach each other, and nothing else.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from infra.errors import ClusterError, Progress
from infra.staging.inventory import BRIDGE, BRIDGE_ADDRESS, NAMESPACE_PREFIX, SUBNET, Host


class NoNetem(ClusterError):
    """The kernel cannot delay packets: it was built without netem."""


def ip(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip` with ``arguments``; raise ClusterError with its message if it fails and must not."""
    return _tool("ip", arguments, check)


def _tool(name: str, arguments: Sequence[str], check: bool) -> subprocess.CompletedProcess[str]:
    command = [name, *arguments]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
    return result


def namespaces() -> list[str]:
    """List the namespaces staging owns (by prefix), running or left over."""
    listed = ip("netns", "list", check=False).stdout.splitlines()
    names = [line.split()[0] for line in listed if line.strip()]
    return [name for name in names if name.startswith(NAMESPACE_PREFIX)]


def link_exists(name: str, netns: str | None = None) -> bool:
    prefix = ["-n", netns] if netns else []
    return ip(*prefix, "link", "show", name, check=False).returncode == 0


def create(hosts: Sequence[Host], progress: Progress) -> None:
    """Create the bridge and each host's namespace and link; keep whatever already exists."""
    if not link_exists(BRIDGE):
        ip("link", "add", BRIDGE, "type", "bridge")
        progress(f"network: bridge {BRIDGE}")
    bridge_cidr = f"{BRIDGE_ADDRESS}/{SUBNET.prefixlen}"
    if bridge_cidr not in ip("-br", "addr", "show", BRIDGE).stdout:
        ip("addr", "add", bridge_cidr, "dev", BRIDGE)
    _sysctl(None, f"net.ipv6.conf.{BRIDGE}.disable_ipv6=1")
    ip("link", "set", BRIDGE, "up")
    existing = set(namespaces())
    for host in hosts:
        if host.netns not in existing:
            ip("netns", "add", host.netns)
            progress(f"network: namespace {host.netns} ({host.address})")
        # IPv4 on the subnet only: no link-local IPv6 chatter on the bridge either.
        _sysctl(host.netns, "net.ipv6.conf.all.disable_ipv6=1")
        ip("-n", host.netns, "link", "set", "lo", "up")
        if not link_exists(host.veth):
            ip(
                "link",
                "add",
                host.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.netns,
            )
        ip("link", "set", host.veth, "master", BRIDGE, "up")
        host_cidr = f"{host.address}/{SUBNET.prefixlen}"
        if host_cidr not in ip("-n", host.netns, "-br", "addr", "show", "eth0").stdout:
            ip("-n", host.netns, "addr", "add", host_cidr, "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")


def destroy(progress: Progress) -> None:
    """Delete every staging namespace (their veths go with them) and the bridge."""
    for netns in namespaces():
        ip("netns", "del", netns)
        progress(f"network: removed namespace {netns}")
    for link in ip("-o", "link", "show", check=False).stdout.splitlines():
        name = link.split(":")[1].strip().split("@")[0] if ":" in link else ""
        if name.startswith("glv-"):
            ip("link", "del", name, check=False)
    if link_exists(BRIDGE):
        ip("link", "del", BRIDGE)
        progress(f"network: removed bridge {BRIDGE}")


def pids(host: Host) -> list[int]:
    """Return every process running in the host's namespace."""
    listed = ip("netns", "pids", host.netns, check=False).stdout.split()
    return [int(pid) for pid in listed if pid.isdigit()]


def set_link(host: Host, up: bool) -> None:
    """Bring the host's link up or down (its side of the bridge): a cut cable."""
    ip("link", "set", host.veth, "up" if up else "down")


def set_delay(host: Host, delay: str | None) -> None:
    """Delay every packet the host sends by ``delay`` (tc netem), or remove the delay."""
    tc = ["netns", "exec", host.netns, "tc", "qdisc"]
    if delay is None:
        _tool("ip", [*tc, "del", "dev", "eth0", "root"], check=False)
        return
    added = _tool("ip", [*tc, "replace", "dev", "eth0", "root", "netem", "delay", delay], False)
    if "qdisc kind is unknown" in added.stderr:
        raise NoNetem(
            "This kernel has no netem qdisc (CONFIG_NET_SCH_NETEM, module sch_netem), "
            "so no latency can be added here; run on a kernel that has it."
        )
    if added.returncode != 0:
        raise ClusterError(f"tc netem delay {delay} on {host.name} failed: {added.stderr.strip()}")


def delay_of(host: Host) -> str | None:
    """Return the netem delay on the host's link, if any."""
    shown = _tool("ip", ["netns", "exec", host.netns, "tc", "qdisc", "show", "dev", "eth0"], False)
    for line in shown.stdout.splitlines():
        words = line.split()
        if "netem" in words and "delay" in words:
            return words[words.index("delay") + 1]
    return None


def addresses(host: Host) -> list[str]:
    """Return the IPv4 addresses on the host's interface: its own, and any keepalived added."""
    shown = ip("-n", host.netns, "-o", "-4", "addr", "show", "dev", "eth0", check=False)
    return [line.split()[3].split("/")[0] for line in shown.stdout.splitlines() if "inet" in line]


def drop_added_addresses(host: Host) -> None:
    """Remove every address but the host's own from its interface (a floating one it held)."""
    for address in addresses(host):
        if address != host.address:
            ip("-n", host.netns, "addr", "del", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")


def link_up(host: Host) -> bool:
    shown = ip("-br", "link", "show", host.veth, check=False).stdout.split()
    return len(shown) > 1 and shown[1] != "DOWN"


def _sysctl(netns: str | None, setting: str) -> None:
    command = ["sysctl", "-q", "-w", setting]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    _tool(command[0], command[1:], check=False)
